/** The flow of docs/examples: a KDC, a service with its keytab, a client that logs in and echoes. */
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import type net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { expect } from 'chai'
import { startDevRealm } from '../../docs/examples/dev-realm.js'
import { echo } from '../../docs/examples/echo-client.js'
import { startEchoService } from '../../docs/examples/echo-service.js'
import { ErrorCode } from '../../proto/error-codes.js'
import { KrbProtocolError } from '../../src/errors.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { loadRealmFile, realmFileJson } from '../../src/krb/realm-file.js'
import { Keytab, writeKeytab } from '../../src/krb/keytab.js'
import { rejection } from './helpers.js'

const PASSWORD = 'Example password 42'

describe('docs/examples echo service and client', () => {
  let kdc: RunningKdc
  let dir: string
  let keytab: string
  let principal: string

  before(async () => {
    kdc = await startKdc({ config: { kdf: { N: 1024 }, log: { console: false } } })
    await kdc.addPrincipal('alice', { password: PASSWORD })
    // addPrincipal returns the service's first key version: that is what goes in its keytab.
    const key = await kdc.addPrincipal('echo/localhost')
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-example-'))
    keytab = path.join(dir, 'echo.keytab')
    await writeKeytab(
      keytab,
      new Keytab([{ realm: kdc.realm, name: ['echo', 'localhost'], kvno: key.kvno, key: key.key, createdAt: key.createdAt }]),
    )
    principal = `echo/localhost@${kdc.realm}`
  })
  after(async () => {
    await kdc?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('echoes through a SecureSession, and the service sees who the client is', async () => {
    const lines: string[] = []
    const server = await startEchoService({ keytab, principal, log: (l) => lines.push(l) })
    try {
      const { port } = server.address() as net.AddressInfo
      const replies = await echo({
        realm: kdc.realmFile,
        user: 'alice',
        password: PASSWORD,
        service: 'echo/localhost',
        host: '127.0.0.1',
        port,
        messages: ['hello', 'über', ''],
      })
      expect(replies).to.deep.equal(['hello', 'über', ''])
      await new Promise((r) => setTimeout(r, 50))
      expect(lines).to.deep.equal([`alice@${kdc.realm} connected`, `alice@${kdc.realm} left`])
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it('refuses a client whose ticket is for another service (KRB_AP_ERR_NOT_US)', async () => {
    await kdc.addPrincipal('other/localhost')
    const lines: string[] = []
    const server = await startEchoService({ keytab, principal, log: (l) => lines.push(l) })
    try {
      const { port } = server.address() as net.AddressInfo
      const err = await rejection(
        echo({ realm: kdc.realmFile, user: 'alice', password: PASSWORD, service: 'other/localhost', host: '127.0.0.1', port, messages: ['x'] }),
      )
      expect(err).to.be.instanceOf(KrbProtocolError)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_NOT_US)
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it('echoes against the throw-away realm of dev-realm.ts', async () => {
    const devDir = await mkdtemp(path.join(os.tmpdir(), 'tessera-dev-realm-'))
    const dev = await startDevRealm(devDir, PASSWORD)
    const server = await startEchoService({ keytab: path.join(devDir, 'echo.keytab'), principal: 'echo/localhost', log: () => {} })
    try {
      const realm = await loadRealmFile(path.join(devDir, 'realm.json'))
      const { port } = server.address() as net.AddressInfo
      const replies = await echo({ realm, user: 'alice', password: PASSWORD, service: 'echo/localhost', host: '127.0.0.1', port, messages: ['dev'] })
      expect(replies).to.deep.equal(['dev'])
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await dev.close()
      await rm(devDir, { recursive: true, force: true })
    }
  })

  it('runs as command-line scripts', async function () {
    this.timeout(20000)
    const realmJson = path.join(dir, 'realm.json')
    await writeFile(realmJson, JSON.stringify(realmFileJson(kdc.realmFile)))
    const service = spawn(process.execPath, ['--import', 'tsx', 'docs/examples/echo-service.ts', keytab, principal, '0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let out = ''
        service.stdout.on('data', (c: Buffer) => {
          out += c.toString()
          const m = /port: (\d+)/.exec(out)
          if (m) resolve(Number(m[1]))
        })
        service.once('exit', (code) => reject(new Error(`echo-service exited with ${code}: ${out}`)))
      })
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', 'docs/examples/echo-client.ts', realmJson, 'alice', 'echo/localhost', '127.0.0.1', String(port), 'ping', 'pong'],
        { env: { ...process.env, TESSERA_PASSWORD: PASSWORD } },
      )
      expect(stdout.trim().split('\n')).to.deep.equal(['ping', 'pong'])
    } finally {
      service.kill()
    }
  })
})
