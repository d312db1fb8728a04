/** kauth's error messages give the cause and the next step (issue 10, item 6). */
import type net from 'node:net'
import { symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { expect } from 'chai'
import { startEchoService } from '../../docs/examples/echo-service.js'
import { CredentialCache } from '../../src/client/ccache.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { Exit } from '../../src/cli/common.js'
import { SecureSession } from '../../src/service/session.js'
import { CLI_REALM, type CliKdc, PASSWORDS, pipedStdin, runKauth, startCliKdc } from '../helpers/cli-kdc.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { connect, rejection } from '../service/helpers.js'

const SERVICE = 'HTTP/www.example.test'
const STACK_LINE = /^\s+at /m

/** A stdin that says it is a terminal, typing `text` once read. */
function ttyStdin(text: string): NodeJS.ReadStream {
  const r = new PassThrough()
  Object.assign(r, { isTTY: true, setRawMode: () => r })
  setTimeout(() => r.write(text), 20)
  return r as unknown as NodeJS.ReadStream
}

describe('kauth messages', function () {
  this.timeout(20000)
  useProcessGuards()
  let k: CliKdc
  let alicePw: string
  let n = 0
  let ccache: string
  let env: NodeJS.ProcessEnv

  before(async () => {
    k = await startCliKdc()
    await k.kdc.addPrincipal(SERVICE)
    alicePw = path.join(k.dir, 'alice.pw')
    await writeFile(alicePw, `${PASSWORDS.alice}\n`, { mode: 0o600 })
  })
  after(async () => {
    await k?.close()
  })
  beforeEach(() => {
    ccache = path.join(k.dir, `cc-${++n}`)
    env = k.env(ccache)
  })
  const login = async () => {
    const r = await runKauth(['login', 'alice', '--password-file', alicePw], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
  }

  it('says a cached ticket from another realm of the same name cannot be used, and to run kauth login', async () => {
    await login()
    const twin = await startCliKdc() // same realm name, other keys
    try {
      await twin.kdc.addPrincipal(SERVICE)
      const r = await runKauth(['ticket', SERVICE], { ...env, TESSERA_REALM_FILE: twin.realmPath })
      expect(r.code).to.equal(Exit.NO_CREDENTIALS)
      expect(r.stderr).to.contain('cached ticket cannot be used')
      expect(r.stderr).to.contain('run kauth login')
      expect(r.stderr).to.contain('KRB_AP_ERR_BAD_INTEGRITY')
    } finally {
      await twin.close()
    }
  })

  it('says the same of a damaged cached ticket', async () => {
    await login()
    const cc = new CredentialCache(ccache)
    const tgt = (await cc.load())!.entries[0]!
    const enc = new Uint8Array(tgt.ticket.enc)
    enc[enc.length - 1]! ^= 1
    await cc.initialize({ ...tgt, ticket: { ...tgt.ticket, enc } })
    const r = await runKauth(['ticket', SERVICE], env)
    expect(r.code).to.equal(Exit.NO_CREDENTIALS)
    expect(r.stderr).to.contain('cached ticket cannot be used')
    expect(r.stderr).to.contain('run kauth login')
  })

  it('names the service that refused a ticket (NOT_US) and says its keytab lacks that key', async () => {
    const dir = k.dir
    const keytab = path.join(dir, `echo-${n}.keytab`)
    await k.kdc.addPrincipal(`echo/m${n}`)
    await k.kdc.addPrincipal(`other/m${n}`)
    await k.kdc.exportKeytab(`echo/m${n}`, keytab)
    const server = await startEchoService({ keytab, principal: `echo/m${n}`, log: () => {} })
    const c = new KdcClient(k.kdc.realmFile)
    try {
      const tgt = await c.login('alice', PASSWORDS.alice)
      const creds = await c.getServiceTicket(tgt, `other/m${n}`)
      const err = await rejection(SecureSession.client(await connect((server.address() as net.AddressInfo).port), { creds }))
      expect(err.message).to.contain(`other/m${n}@${CLI_REALM}`)
      expect(err.message).to.match(/keytab (has|holds) no key for/)
    } finally {
      c.close()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it('names the service, not the KDC, as the party that refused a skewed authenticator', async () => {
    const keytab = path.join(k.dir, `skew-${n}.keytab`)
    await k.kdc.addPrincipal(`echo/s${n}`)
    await k.kdc.exportKeytab(`echo/s${n}`, keytab)
    const server = await startEchoService({ keytab, principal: `echo/s${n}`, log: () => {} })
    const c = new KdcClient(k.kdc.realmFile)
    try {
      const creds = await c.getServiceTicket(await c.login('alice', PASSWORDS.alice), `echo/s${n}`)
      const ahead = () => Date.now() + 3600_000
      const err = await rejection(SecureSession.client(await connect((server.address() as net.AddressInfo).port), { creds, now: ahead }))
      expect(err.message).to.contain(`the service echo/s${n}@${CLI_REALM} refused`)
      expect(err.message).to.contain("ahead of the service's")
      expect(err.message).to.not.contain('KDC')
    } finally {
      c.close()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it('names the principal a failed login tried, also when it defaulted to $USER', async () => {
    const r = await runKauth(['login'], { ...env, USER: 'root' }, pipedStdin('wrong\n'))
    expect(r.code).to.equal(Exit.AUTH)
    expect(r.stderr).to.contain(`root@${CLI_REALM}`)
    const m = await runKauth(['login', 'alice'], env, pipedStdin('wrong\n'))
    expect(m.stderr).to.contain(`login failed for alice@${CLI_REALM}`)
  })

  it('names the realm in the password prompt', async () => {
    const r = await runKauth(['login', 'alice'], env, ttyStdin(`${PASSWORDS.alice}\r`))
    expect(r.code, r.stderr).to.equal(Exit.OK)
    expect(r.stderr).to.contain(`Password for alice@${CLI_REALM}: `)
  })

  it('without a realm file, says which path was tried and how to point at one', async () => {
    const { TESSERA_REALM_FILE: _, ...noRealm } = env
    const r = await runKauth(['login', 'alice', '--password-file', alicePw], noRealm)
    expect(r.code).to.equal(Exit.CONFIG)
    expect(r.stderr).to.contain(path.join(k.dir, '.config', 'tessera', 'realm.json'))
    for (const hint of ['TESSERA_REALM_FILE', '--realm-file', 'var/realm.json', 'npm start']) expect(r.stderr).to.contain(hint)
    expect(r.stderr).to.not.match(STACK_LINE)
    expect(r.stderr).to.not.contain('ENOENT')
    const named = await runKauth(['list', '--realm-file', path.join(k.dir, 'nope.json')], noRealm)
    expect(named.code).to.equal(Exit.NO_CREDENTIALS) // list needs no realm file
    const t = await runKauth(['time', '--realm-file', path.join(k.dir, 'nope.json')], noRealm)
    expect(t.code).to.equal(Exit.CONFIG)
    expect(t.stderr).to.contain(`${path.join(k.dir, 'nope.json')} (from --realm-file)`)
  })

  it('says a symlinked cache is refused on purpose, not ELOOP', async () => {
    await login()
    const link = path.join(k.dir, `link-${n}`)
    await symlink(ccache, link)
    const r = await runKauth(['list'], { ...env, TESSERA_CCACHE: link })
    expect(r.code).to.not.equal(Exit.OK)
    expect(r.stderr).to.contain('symbolic link')
    expect(r.stderr).to.contain('on purpose')
    expect(r.stderr).to.not.contain('ELOOP')
  })

  it("calls 'a@b@c' a bad name (exit 2), not a wrong realm", async () => {
    const r = await runKauth(['login', 'a@b@c'], env, pipedStdin('x\n'))
    expect(r.code).to.equal(Exit.USAGE)
    expect(r.stderr).to.contain('bad principal name "a@b@c"')
    expect(r.stderr).to.not.match(/realm/i)
  })
})
