/**
 * The server half of the admin benchmark: a KDC with the admin service (src/admin/start.ts)
 * on an on-disk realm in a fresh temporary directory (initRealmDir, as `kdc init` makes it),
 * in its own process (forked by admin.ts through ChildServer), so that its CPU time is
 * measured alone and every write goes through LevelDB and the audit log on disk as in
 * production.
 *
 * IPC (load.ts serveIpc): sends { ready, dir, adminPassword } once listening (dir/realm.json
 * then holds the ports), answers { cmd: 'stats' }, exits on { cmd: 'exit' } and removes the
 * directory.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { startKdc } from '../../src/admin/start.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { serveIpc } from './load.js'

/** The ready message. */
export interface AdminServerReady {
  ready: true
  dir: string
  adminPassword: string
}

async function main(): Promise<void> {
  const tmp = await mkdtemp(path.join(process.env.BENCH_ADMIN_DIR ?? tmpdir(), 'tessera-bench-admin-'))
  const dir = path.join(tmp, 'realm')
  const adminPassword = randomBytes(18).toString('base64url')
  const input = { kdf: { N: 1024 }, log: { console: false }, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }
  await initRealmDir({ dir, realm: 'BENCH.TEST', adminPassword, config: resolveKdcConfig(input) })
  const kdc = await startKdc({ dir, config: input, log: false })
  serveIpc({}, async () => {
    await kdc.close()
    await rm(tmp, { recursive: true, force: true })
  })
  const ready: AdminServerReady = { ready: true, dir, adminPassword }
  process.send?.(ready)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.send?.({ error: err instanceof Error ? `${err.message}\n${err.stack}` : String(err) })
    process.exit(1)
  })
}
