/** docs/examples/jwt-service.ts: an HTTP service behind the JWT bridge, called by a logged-in client, over a real KDC. */
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { expect } from 'chai'
import { callJwtService, startJwtService } from '../../docs/examples/jwt-service.js'
import { startKdc } from '../../src/admin/start.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { realmFileJson } from '../../src/krb/realm-file.js'

const PASSWORD = 'Example password 42'

describe('docs/examples/jwt-service.ts', function () {
  this.timeout(20000)
  let kdc: RunningKdc
  let principal: string

  before(async () => {
    kdc = await startKdc({ config: { kdf: { N: 1024 }, log: { console: false } } })
    await kdc.addPrincipal('alice', { password: PASSWORD })
    await kdc.addPrincipal('HTTP/localhost', { attributes: { allowJwt: true } })
    await kdc.addPrincipal('HTTP/elsewhere', { attributes: { allowJwt: true } })
    principal = `HTTP/localhost@${kdc.realm}`
  })
  after(async () => {
    await kdc?.close()
  })

  it('answers a logged-in client with its principal, and refuses a token for another service', async () => {
    const server = await startJwtService({ realm: kdc.realmFile, principal })
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/whoami`
      expect(await callJwtService({ realm: kdc.realmFile, user: 'alice', password: PASSWORD, service: 'HTTP/localhost', url })).to.deep.equal({
        principal: `alice@${kdc.realm}`,
      })
      const err = await callJwtService({ realm: kdc.realmFile, user: 'alice', password: PASSWORD, service: 'HTTP/elsewhere', url }).catch((e: Error) => e)
      expect((err as Error).message).to.match(/401 DPoP error="invalid_token"/)
      const bare = await fetch(url)
      expect(bare.status).to.equal(401)
    } finally {
      server.close()
    }
  })

  it('runs as command-line scripts', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-jwt-example-'))
    const realmJson = path.join(dir, 'realm.json')
    await writeFile(realmJson, JSON.stringify(realmFileJson(kdc.realmFile)))
    const service = spawn(process.execPath, ['--import', 'tsx', 'docs/examples/jwt-service.ts', 'serve', realmJson, principal, '0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let out = ''
        service.stdout.on('data', (c: Buffer) => {
          out += c.toString()
          const m = /127\.0\.0\.1:(\d+)/.exec(out)
          if (m) resolve(Number(m[1]))
        })
        service.once('exit', (code) => reject(new Error(`jwt-service exited with ${code}: ${out}`)))
      })
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', 'docs/examples/jwt-service.ts', 'call', realmJson, 'alice', 'HTTP/localhost', `http://127.0.0.1:${port}/whoami`],
        { env: { ...process.env, TESSERA_PASSWORD: PASSWORD } },
      )
      expect(JSON.parse(stdout)).to.deep.equal({ principal: `alice@${kdc.realm}` })
    } finally {
      service.kill()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
