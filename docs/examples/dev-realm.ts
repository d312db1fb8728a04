/**
 * A throw-away realm for trying the examples: an in-memory KDC with a user and the echo
 * service, writing echo.keytab and realm.json into a directory.
 *
 *   TESSERA_PASSWORD='…' npx tsx docs/examples/dev-realm.ts [dir]
 *
 * In an application, import from 'tessera' instead of '../../src/index.js'.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { Keytab, type RunningKdc, realmFileJson, startKdc, writeKeytab } from '../../src/index.js'

/** Start the KDC; resolves once echo.keytab and realm.json are written in `dir` (created if missing). */
export async function startDevRealm(dir: string, password: string): Promise<RunningKdc> {
  await mkdir(dir, { recursive: true })
  const kdc = await startKdc({ config: { log: { console: false } } })
  await kdc.addPrincipal('alice', { password })
  // addPrincipal returns the service's first key version: exactly what its keytab needs.
  const key = await kdc.addPrincipal('echo/localhost')
  await writeKeytab(
    path.join(dir, 'echo.keytab'),
    new Keytab([{ realm: kdc.realm, name: ['echo', 'localhost'], kvno: key.kvno, key: key.key, createdAt: key.createdAt }]),
  )
  await writeFile(path.join(dir, 'realm.json'), `${JSON.stringify(realmFileJson(kdc.realmFile), null, 2)}\n`)
  return kdc
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const password = process.env.TESSERA_PASSWORD
  if (!password) {
    console.error("usage: TESSERA_PASSWORD='…' dev-realm.ts [dir]")
    process.exit(2)
  }
  const dir = process.argv[2] ?? '.'
  const kdc = await startDevRealm(dir, password)
  console.log(`realm ${kdc.realm}: user alice, service echo/localhost@${kdc.realm}`)
  console.log(`wrote ${path.join(dir, 'echo.keytab')} and ${path.join(dir, 'realm.json')}; Ctrl-C to stop`)
}
