/**
 * Services that fetch their own keys (issue 12) over the real daemon: fetchkeys from a
 * service's own keytab login, refreshKeytab / `kauth keytab refresh`, the refusals (disabled,
 * deleted, another principal, the ACL's E), and a KeytabFollower that keeps a ServiceVerifier
 * current through a staged rotation under continuous client load.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { adminService } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient, AdminError } from '../../src/client/admin-client.js'
import { buildApReq } from '../../src/client/ap.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { type Keytab, readKeytab } from '../../src/krb/keytab.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { KeytabFollower, type RefreshResult, refreshKeytab } from '../../src/service/keytab-refresh.js'
import { ServiceVerifier } from '../../src/service/verify-ap-req.js'
import { runKauth, writeRealm } from '../helpers/cli-kdc.js'
import { ADMIN_PASSWORD, expectKrb, FAST_CONFIG, MIN, REALM, TestClock } from '../helpers/kdc-helpers.js'
import { expectAdminError } from '../helpers/refusals.js'

const USER_PW = 'lantern-Orbit-27'

/** Poll `cond` (bounded: at most `tries` times, 50 ms apart). */
async function until(cond: () => boolean, what: string, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`gave up waiting for ${what}`)
}

describe('services fetch their own keys (integration)', function () {
  this.timeout(60_000)
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient
  let clock: TestClock
  let tmp: string

  before(async () => {
    clock = new TestClock()
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-fetch-'))
    kdc = await startKdc({
      realm: REALM,
      adminPassword: ADMIN_PASSWORD,
      config: FAST_CONFIG,
      now: clock.now,
      admin: adminService({
        scheduler: false,
        aclText: [`admin@${REALM} *e`, `HTTP/locked.example.test@${REALM} E`, `ops@${REALM} i HTTP/*@${REALM}`].join('\n'),
      }),
    })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000, now: clock.now })
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.call('addprinc', { name: 'user', password: USER_PW })
  })
  after(async () => {
    kc.close()
    await kdc.close()
    await rm(tmp, { recursive: true, force: true })
  })

  /** A new service principal and a keytab file holding its first key (as `kadmin ktadd` writes one). */
  async function service(name: string): Promise<string> {
    await admin.call('addprinc', { name, randkey: true })
    const file = path.join(tmp, `${name.replaceAll('/', '_')}.keytab`)
    await kdc.exportKeytab(name, file)
    return file
  }

  it('a service logs in from its keytab and fetches its current and staged next key, without any admin; the keytab file is replaced 0600', async () => {
    const svc = 'HTTP/fetch.example.test'
    const file = await service(svc)
    await admin.call('rotate', { name: svc, stageAhead: 30 * MIN })
    const r = await refreshKeytab({ kdc: kc, keytabFile: file })
    expect(r.principal).to.equal(`${svc}@${REALM}`)
    expect(r.kvno).to.equal(1)
    expect(r.kvnos).to.deep.equal([1, 2])
    expect(r.added).to.deep.equal([2])
    expect(r.versions.map((v) => [v.kvno, v.state])).to.deep.equal([
      [1, 'current'],
      [2, 'next'],
    ])
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    const kt = await readKeytab(file)
    expect(kt.kvnos(`${svc}@${REALM}`)).to.deep.equal([1, 2])
    // The key held is the one the KDC seals with once kvno 2 becomes current.
    clock.offset += 30 * MIN + 1000
    const tgt = await kc.login('user', USER_PW)
    const creds = await kc.getServiceTicket(tgt, svc)
    expect(creds.ticket.kvno).to.equal(2)
    const verifier = new ServiceVerifier({ keytab: kt, replayCache: new ReplayCache({ maxClockSkewMs: 300_000, now: clock.now }), now: clock.now })
    expect(verifier.verify(buildApReq(creds, { now: clock.now }).req).kvno).to.equal(2)
    verifier.replayCache.close()
    kt.wipe()
  })

  it('drops the versions the KDC retired and keeps the ones that may still open tickets; after an emergency rotation the old keys log in no more', async () => {
    const svc = 'HTTP/retire.example.test'
    const file = await service(svc)
    await admin.call('rotate', { name: svc, stageAhead: MIN })
    let r = await refreshKeytab({ kdc: kc, keytabFile: file })
    expect(r.kvnos).to.deep.equal([1, 2])
    clock.offset += 2 * MIN
    // kvno 1 is now previous (its tickets may still be valid): kept; kvno 2 retires a minute after kvno 3 becomes current.
    await admin.call('rotate', { name: svc, stageAhead: MIN, grace: MIN })
    r = await refreshKeytab({ kdc: kc, keytabFile: file })
    expect(r.kvnos).to.deep.equal([1, 2, 3])
    expect(r.versions.map((v) => v.state)).to.deep.equal(['previous', 'current', 'next'])
    clock.offset += 3 * MIN
    r = await refreshKeytab({ kdc: kc, keytabFile: file })
    expect(r.removed).to.deep.equal([2])
    expect(r.kvnos).to.deep.equal([1, 3])
    const kt = await readKeytab(file)
    expect(kt.kvnos(`${svc}@${REALM}`)).to.deep.equal([1, 3])
    kt.wipe()
    // A compromised key: the emergency form retires every older version, so none of them can fetch the new one.
    await admin.call('rotate', { name: svc, emergency: true })
    await expectKrb(refreshKeytab({ kdc: kc, keytabFile: file }), ErrorCode.KDC_ERR_PREAUTH_FAILED)
  })

  it('a KeytabFollower follows an immediate rotation too (through the session it holds), and verify() refreshes on a newer kvno', async () => {
    const svc = 'HTTP/now.example.test'
    const file = await service(svc)
    const keytab = await readKeytab(file)
    const replayCache = new ReplayCache({ maxClockSkewMs: 300_000, now: clock.now })
    const verifier = new ServiceVerifier({ keytab, replayCache, now: clock.now })
    const follower = new KeytabFollower({ kdc: kc, keytab, checkEveryMs: 0, waitMs: 5000, onError: () => {} })
    try {
      await follower.start()
      const tgt = await kc.login('user', USER_PW)
      await admin.call('rotate', { name: svc })
      // A ticket under kvno 2 may reach the service before the event does: verify() fetches then.
      const creds = await kc.getServiceTicket(tgt, svc)
      expect(creds.ticket.kvno).to.equal(2)
      expect((await follower.verify(verifier, buildApReq(creds, { now: clock.now }).req)).kvno).to.equal(2)
      expect(keytab.kvnos(`${svc}@${REALM}`)).to.deep.equal([1, 2])
    } finally {
      await follower.close()
      replayCache.close()
      keytab.wipe()
    }
  })

  it('kauth keytab refresh --keytab FILE updates the keytab and reports the versions', async () => {
    const svc = 'HTTP/cli.example.test'
    const file = await service(svc)
    await admin.call('rotate', { name: svc, stageAhead: 10 * MIN })
    const realmPath = await writeRealm(tmp, kdc.realmFile, 'cli-realm.json')
    // The CLI runs on the host clock; the KDC's runs ahead by clock.offset: let the client adopt it on skew.
    const env = { TESSERA_REALM_FILE: realmPath, TESSERA_CCACHE: path.join(tmp, 'cli-ccache'), HOME: tmp }
    const out = await runKauth(['keytab', 'refresh', '--keytab', file, svc, '--json'], env)
    expect(out.code, out.stderr).to.equal(0)
    const j = JSON.parse(out.stdout) as RefreshResult
    expect(j.kvnos).to.deep.equal([1, 2])
    expect(j.versions.map((v) => v.state)).to.deep.equal(['current', 'next'])
    const kt = await readKeytab(file)
    expect(kt.kvnos(`${svc}@${REALM}`)).to.deep.equal([1, 2])
    kt.wipe()
    const text = await runKauth(['keytab', 'refresh', '-k', file], env)
    expect(text.code, text.stderr).to.equal(0)
    expect(text.stdout).to.contain(`${svc}@${REALM}: current kvno 1; keytab ${file} holds 1, 2`)
  })

  it('a disabled or deleted principal cannot fetch, even with a kadmin ticket it got before', async () => {
    const svc = 'HTTP/disabled.example.test'
    const file = await service(svc)
    const kt = await readKeytab(file)
    const e = kt.latest(`${svc}@${REALM}`)!
    const early = await AdminClient.loginWithKey(kc, svc, { key: e.key, kvno: e.kvno }, 'kadmin/changepw')
    expect((await early.fetchKeys()).kvno).to.equal(1)
    await admin.call('modprinc', { name: svc, attributes: { disabled: true } })
    await expectKrb(early.fetchKeys(), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    await expectKrb(refreshKeytab({ kdc: kc, keytabFile: file }), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    await admin.call('modprinc', { name: svc, attributes: { disabled: false } })
    const again = await AdminClient.loginWithKey(kc, svc, { key: e.key, kvno: e.kvno }, 'kadmin/changepw')
    await admin.call('delprinc', { name: svc })
    await expectKrb(again.fetchKeys(), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    kt.wipe()
  })

  it("fetches only a principal's own keys: another service's and an administrator's requests are refused (use ktadd)", async () => {
    const a = 'HTTP/a.example.test'
    const b = 'HTTP/b.example.test'
    const fa = await service(a)
    await service(b)
    const kt = await readKeytab(fa)
    const e = kt.latest(`${a}@${REALM}`)!
    const asA = await AdminClient.loginWithKey(kc, a, { key: e.key, kvno: e.kvno }, 'kadmin/changepw')
    await expectAdminError(asA.call('fetchkeys', { name: b }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    await expectAdminError(admin.call('fetchkeys', { name: a }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    // A user (password key) has nothing to fetch.
    const user = await AdminClient.login(kc, 'user', USER_PW, 'kadmin/changepw')
    await expectAdminError(user.fetchKeys(), ErrorCode.ADM_ERR_BAD_REQUEST)
    kt.wipe()
  })

  it('an ACL line denying E forbids a service to fetch its own keys', async () => {
    const svc = 'HTTP/locked.example.test'
    const file = await service(svc)
    const err = await rejects(refreshKeytab({ kdc: kc, keytabFile: file }))
    expect(err).to.be.instanceOf(AdminError)
    expect((err as AdminError).code).to.equal(ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    expect((err as AdminError).message).to.match(/denies E/)
  })

  it('a KeytabFollower holds the staged key before activation; a rotation under load from several clients fails no request', async () => {
    const svc = 'HTTP/follow.example.test'
    const file = await service(svc)
    const keytab: Keytab = await readKeytab(file)
    const replayCache = new ReplayCache({ maxClockSkewMs: 300_000, now: clock.now })
    const verifier = new ServiceVerifier({ keytab, replayCache, now: clock.now })
    const id = `${svc}@${REALM}`
    // No periodic check: only the watch stream can bring the next key.
    const follower = new KeytabFollower({ kdc: kc, keytab, keytabFile: file, checkEveryMs: 0, waitMs: 5000, onError: () => {} })
    await follower.start()
    const clients = [0, 1, 2, 3].map(() => new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000, now: clock.now }))
    const failures: string[] = []
    const kvnos = new Set<number>()
    let heldBeforeActivation = false
    let phase: 'before' | 'staged' | 'active' = 'before'
    try {
      const tgts = await Promise.all(clients.map((c) => c.login('user', USER_PW)))
      let requests = 0
      const load = clients.map(async (c, i) => {
        // Bounded: at most 400 requests per client; stops once kvno 2 has been used for a while.
        for (let n = 0; n < 400 && !(phase === 'active' && kvnos.has(2) && n > 60); n++) {
          try {
            const creds = await c.getServiceTicket(tgts[i]!, svc)
            kvnos.add(creds.ticket.kvno)
            await follower.verify(verifier, buildApReq(creds, { now: clock.now }).req)
          } catch (err) {
            failures.push(String(err))
          }
          requests++
        }
      })
      const rotation = (async () => {
        await until(() => requests >= 40, 'the first requests')
        const r = (await admin.call('rotate', { name: svc, stageAhead: 30 * MIN })) as { activatesAt: number }
        phase = 'staged'
        await until(() => keytab.kvnos(id).includes(2), 'the follower to hold kvno 2')
        heldBeforeActivation = clock.now() < r.activatesAt
        clock.offset += 30 * MIN + 1000
        phase = 'active'
      })()
      await Promise.all([...load, rotation])
    } finally {
      for (const c of clients) c.close()
      await follower.close()
      replayCache.close()
    }
    expect(failures, failures.slice(0, 3).join('\n')).to.deep.equal([])
    expect(heldBeforeActivation).to.equal(true)
    expect([...kvnos].sort()).to.deep.equal([1, 2])
    // The file follows too.
    const onDisk = await readKeytab(file)
    expect(onDisk.kvnos(id)).to.deep.equal([1, 2])
    onDisk.wipe()
    keytab.wipe()
  })
})

async function rejects(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}
