/**
 * Key rotation over the real daemon (issue 12): rotate / purgekeys through AdminClient, the
 * KDC sealing by the clock, krbtgt rotation and its emergency form, the rotation schedule
 * with an injected clock.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { adminService } from '../../src/admin/listener.js'
import type { KeyEvent } from '../../src/admin/operations.js'
import type { RotationScheduler } from '../../src/admin/rotation.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { buildApReq } from '../../src/client/ap.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { Keytab, type KeytabEntry } from '../../src/krb/keytab.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { ServiceVerifier } from '../../src/service/verify-ap-req.js'
import { ADMIN_PASSWORD, expectKrb, FAST_CONFIG, HOUR, MIN, REALM, TestClock } from '../helpers/kdc-helpers.js'
import { expectAdminError } from '../helpers/refusals.js'

const USER_PW = 'lantern-Orbit-27'

interface View {
  kvno: number
  keys: { kvno: number; state: string; activatesAt: number; sealedUntil?: number; retiresAt?: number }[]
  rotation?: { rotateEvery: number; stageAhead: number; grace?: number; nextRotationAt?: number }
}

/** Replay caches of the test services, by name: a service keeps its own across keytab reloads. */
const replayCaches = new Map<string, ReplayCache>()

/** A verifier holding exactly the keys ktadd gives now (what a service does when it refreshes its keytab). */
async function refreshedVerifier(admin: AdminClient, name: string, now: () => number = Date.now): Promise<ServiceVerifier> {
  const r = (await admin.call('ktadd', { name })) as { keys: KeytabEntry[] }
  let replayCache = replayCaches.get(name)
  if (replayCache === undefined) {
    replayCache = new ReplayCache({ maxClockSkewMs: 300_000, now })
    replayCaches.set(name, replayCache)
  }
  return new ServiceVerifier({ keytab: new Keytab(r.keys), replayCache, now })
}

function states(v: View): Record<number, string> {
  return Object.fromEntries(v.keys.map((k) => [k.kvno, k.state]))
}

describe('key rotation (integration)', function () {
  this.timeout(60_000)
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient
  let clock: TestClock
  let sched: RotationScheduler | undefined
  const events: KeyEvent[] = []

  before(async () => {
    clock = new TestClock()
    kdc = await startKdc({
      realm: REALM,
      adminPassword: ADMIN_PASSWORD,
      config: FAST_CONFIG,
      now: clock.now,
      admin: adminService({ onEvent: (e) => events.push(e), onScheduler: (s) => (sched = s) }),
    })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000, now: clock.now })
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.call('addprinc', { name: 'user', password: USER_PW })
  })
  after(async () => {
    kc.close()
    await kdc.close()
    for (const r of replayCaches.values()) r.close()
  })

  async function freshAdmin(): Promise<AdminClient> {
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    return admin
  }

  it('rotates a service key under continuous client load with zero failed requests (staged, keytab refreshed before activation)', async () => {
    const svc = 'HTTP/load.example.test'
    await admin.call('addprinc', { name: svc, randkey: true })
    let verifier = await refreshedVerifier(admin, svc, clock.now)
    const clients = [0, 1, 2].map(() => new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000, now: clock.now }))
    const seen = new Set<number>()
    const failures: string[] = []
    let done = 0
    try {
      const tgts = await Promise.all(clients.map((c) => c.login('user', USER_PW)))
      const ROUNDS = 30
      let rotated: Promise<void> | undefined
      const load = clients.map(async (c, i) => {
        for (let n = 0; n < ROUNDS; n++) {
          if (i === 0 && n === 10)
            rotated = (async () => {
              await admin.call('rotate', { name: svc, stageAhead: 30 * MIN })
              // The service fetches the next key before the KDC seals with it...
              verifier = await refreshedVerifier(admin, svc, clock.now)
              // ...then its activation time comes (no write needed).
              clock.offset += 30 * MIN + 1000
            })()
          try {
            const creds = await c.getServiceTicket(tgts[i]!, svc)
            seen.add(creds.ticket.kvno)
            verifier.verify(buildApReq(creds, { now: clock.now }).req)
          } catch (err) {
            failures.push(String(err))
          }
          done++
          if (i === 0 && n === 20) await rotated
        }
      })
      await Promise.all(load)
      expect(failures).to.deep.equal([])
      expect(done).to.equal(3 * ROUNDS)
      expect([...seen].sort()).to.deep.equal([1, 2])
      const v = (await admin.call('getprinc', { name: svc })) as View
      expect(v.kvno).to.equal(2)
      expect(states(v)).to.deep.equal({ 1: 'previous', 2: 'current' })
    } finally {
      for (const c of clients) c.close()
    }
  })

  it('keeps old tickets verifying through the grace, refuses the purge while they may be valid, and refuses them after a forced purge', async () => {
    const svc = 'HTTP/purge.example.test'
    await admin.call('addprinc', { name: svc, randkey: true, maxLife: 2 * HOUR })
    const tgt = await kc.login('user', USER_PW)
    const old = await kc.getServiceTicket(tgt, svc)
    expect(old.ticket.kvno).to.equal(1)
    const rotatedAt = clock.now()
    const r = (await admin.call('rotate', { name: svc })) as { kvno: number; keys: KeytabEntry[]; previous: { kvno: number; sealedUntil: number; retiresAt: number } }
    expect(r.kvno).to.equal(2)
    // Only the key just made (CVE-2014-5351).
    expect(r.keys.map((k) => k.kvno)).to.deep.equal([2])
    // No ticket sealed with kvno 1 can outlive the service's maxLife after the rotation.
    expect(r.previous.sealedUntil).to.be.within(rotatedAt, rotatedAt + 2 * HOUR + 5000)
    expect(r.previous.retiresAt).to.equal(r.previous.sealedUntil)
    const fresh = await kc.getServiceTicket(tgt, svc)
    expect(fresh.ticket.kvno).to.equal(2)
    const both = await refreshedVerifier(admin, svc, clock.now)
    for (const c of [old, fresh]) expect(both.verify(buildApReq(c, { now: clock.now }).req).client).to.equal(`user@${REALM}`)

    const refused = await expectAdminError(admin.call('purgekeys', { name: svc, allOld: true }), ErrorCode.ADM_ERR_IN_USE)
    expect(refused.message).to.match(/key version 1 .* may be valid until/)
    expect(((await admin.call('getprinc', { name: svc })) as View).keys.map((k) => k.kvno)).to.deep.equal([1, 2])

    const purged = (await admin.call('purgekeys', { name: svc, allOld: true, force: true })) as { purged: number[]; kept: number[]; forced: number[] }
    expect(purged).to.include({ kvno: 2 })
    expect(purged.purged).to.deep.equal([1])
    expect(purged.forced).to.deep.equal([1])
    expect(purged.kept).to.deep.equal([2])
    const after = await refreshedVerifier(admin, svc, clock.now)
    expectKrbSync(() => after.verify(buildApReq(old, { now: clock.now }).req), ErrorCode.KRB_AP_ERR_BADKEYVER)
    expect(after.verify(buildApReq(fresh, { now: clock.now }).req).client).to.equal(`user@${REALM}`)
  })

  it('allows the purge without force once every ticket of the old version has expired', async () => {
    const svc = 'HTTP/expire.example.test'
    await admin.call('addprinc', { name: svc, randkey: true, maxLife: HOUR })
    await admin.call('rotate', { name: svc, grace: 10 * MIN })
    await expectAdminError(admin.call('purgekeys', { name: svc }), ErrorCode.ADM_ERR_IN_USE)
    let v = (await admin.call('getprinc', { name: svc })) as View
    expect(states(v)).to.deep.equal({ 1: 'previous', 2: 'current' })
    clock.offset += 11 * MIN
    v = (await admin.call('getprinc', { name: svc })) as View
    // Retired: the KDC no longer opens it, so no ticket needs it any more.
    expect(states(v)).to.deep.equal({ 1: 'retired', 2: 'current' })
    const purged = (await admin.call('purgekeys', { name: svc })) as { purged: number[]; forced: number[] }
    expect(purged.purged).to.deep.equal([1])
    expect(purged.forced).to.deep.equal([])
  })

  it('stages the next key: the KDC seals with the current one until the activation time, then with the next one, which the service fetched in advance', async () => {
    const svc = 'HTTP/staged.example.test'
    await admin.call('addprinc', { name: svc, randkey: true })
    const stagedAt = clock.now()
    const r = (await admin.call('rotate', { name: svc, stageAhead: HOUR })) as { kvno: number; activatesAt: number }
    expect(r.kvno).to.equal(2)
    expect(r.activatesAt).to.be.within(stagedAt + HOUR, stagedAt + HOUR + 5000)
    let v = (await admin.call('getprinc', { name: svc })) as View
    expect(v.kvno).to.equal(1)
    expect(states(v)).to.deep.equal({ 1: 'current', 2: 'next' })
    expect(v.keys[1]!.activatesAt).to.equal(r.activatesAt)
    // A second rotation waits for the staged one.
    await expectAdminError(admin.call('rotate', { name: svc }), ErrorCode.ADM_ERR_IN_USE)
    const tgt = await kc.login('user', USER_PW)
    expect((await kc.getServiceTicket(tgt, svc)).ticket.kvno, 'never sealed with a staged key').to.equal(1)
    // The service refreshes its keytab before the activation: it now holds the next key.
    const verifier = await refreshedVerifier(admin, svc, clock.now)
    clock.offset += HOUR + 1000
    const tgt2 = await kc.login('user', USER_PW)
    const sealedAfter = await kc.getServiceTicket(tgt2, svc)
    expect(sealedAfter.ticket.kvno, 'sealed with the next key once its time came, without any write').to.equal(2)
    expect(verifier.verify(buildApReq(sealedAfter, { now: clock.now }).req).client).to.equal(`user@${REALM}`)
    v = (await (await freshAdmin()).call('getprinc', { name: svc })) as View
    expect(v.kvno).to.equal(2)
    expect(states(v)).to.deep.equal({ 1: 'previous', 2: 'current' })
  })

  it('rotates krbtgt: old TGTs work through the grace; an emergency rotation refuses them at once with KRB_AP_ERR_BADKEYVER', async () => {
    await admin.call('addprinc', { name: 'HTTP/tgs.example.test', randkey: true })
    const krbtgt = `krbtgt/${REALM}`
    const before = ((await admin.call('getprinc', { name: krbtgt })) as View).kvno
    const oldTgt = await kc.login('user', USER_PW)
    expect(oldTgt.ticket.kvno).to.equal(before)
    const r = (await admin.call('rotate', { name: krbtgt })) as { kvno: number; keys: unknown[] }
    expect(r.kvno).to.equal(before + 1)
    expect(r.keys, 'krbtgt keys never leave the KDC').to.deep.equal([])
    // Through the grace, the TGS opens the old TGT with the old kvno.
    expect((await kc.getServiceTicket(oldTgt, 'HTTP/tgs.example.test')).ticket.kvno).to.equal(1)
    const newTgt = await kc.login('user', USER_PW)
    expect(newTgt.ticket.kvno).to.equal(before + 1)
    await kc.getServiceTicket(newTgt, 'HTTP/tgs.example.test')

    const e = (await admin.call('rotate', { name: krbtgt, emergency: true })) as { kvno: number }
    expect(e.kvno).to.equal(before + 2)
    for (const t of [oldTgt, newTgt]) {
      const err = await expectKrb(kc.getServiceTicket(t, 'HTTP/tgs.example.test'), ErrorCode.KRB_AP_ERR_BADKEYVER)
      expect(err.message).to.match(/retired or unknown; log in again/)
    }
    const v = (await admin.call('getprinc', { name: krbtgt })) as View
    expect(states(v)).to.deep.equal({ [before]: 'retired', [before + 1]: 'retired', [before + 2]: 'current' })
    const again = await kc.login('user', USER_PW)
    expect(again.ticket.kvno).to.equal(before + 2)
    await kc.getServiceTicket(again, 'HTTP/tgs.example.test')
    // Retired versions open nothing: purging them needs no force.
    const p = (await admin.call('purgekeys', { name: krbtgt })) as { purged: number[] }
    expect(p.purged).to.deep.equal([before, before + 1])
  })

  it('treats cpw --randkey --keepold as a rotation: old tickets bounded, purge refused until then', async () => {
    const svc = 'HTTP/keepold.example.test'
    await admin.call('addprinc', { name: svc, randkey: true })
    const r = (await admin.call('cpw', { name: svc, randkey: true, keepold: true })) as { kvno: number; keys: KeytabEntry[] }
    expect(r.keys.map((k) => k.kvno)).to.deep.equal([2])
    const v = (await admin.call('getprinc', { name: svc })) as View
    expect(states(v)).to.deep.equal({ 1: 'previous', 2: 'current' })
    expect(v.keys[0]!.sealedUntil).to.be.a('number')
    expect(v.keys[0]!.retiresAt, 'kept until purgekeys, as MIT').to.equal(undefined)
    await expectAdminError(admin.call('purgekeys', { name: svc, keepkvno: 2 }), ErrorCode.ADM_ERR_IN_USE)
    await expectAdminError(admin.call('purgekeys', { name: svc, keepkvno: 3 }), ErrorCode.ADM_ERR_BAD_REQUEST)
  })

  it('runs a rotation schedule: stages ahead, records the activation, purges the old key after grace and tickets (injected clock)', async () => {
    const svc = 'HTTP/sched.example.test'
    await admin.call('addprinc', { name: svc, randkey: true, maxLife: 3 * HOUR })
    const t0 = clock.now()
    const m = (await admin.call('modprinc', { name: svc, rotateEvery: 24 * HOUR, stageAhead: HOUR, grace: 2 * HOUR })) as View
    expect(m.rotation).to.deep.include({ rotateEvery: 24 * HOUR, stageAhead: HOUR, grace: 2 * HOUR })
    expect(sched, 'the admin service started a scheduler').to.not.equal(undefined)
    const s = sched!
    await s.settled()
    events.length = 0
    await s.runDue()
    expect(((await admin.call('getprinc', { name: svc })) as View).keys).to.have.length(1)

    clock.offset += 23 * HOUR + MIN
    await s.runDue()
    let v = (await (await freshAdmin()).call('getprinc', { name: svc })) as View
    expect(states(v)).to.deep.equal({ 1: 'current', 2: 'next' })
    const act = v.keys[1]!.activatesAt
    // Staged late by the clock jump (a minute): the services still get stageAhead to fetch it.
    expect(act).to.be.within(t0 + 24 * HOUR, t0 + 24 * HOUR + MIN + 5000)
    expect(v.keys[0]!.retiresAt).to.equal(act + 2 * HOUR)
    expect(v.keys[0]!.sealedUntil).to.equal(act + 3 * HOUR)
    expect(((await admin.call('ktadd', { name: svc })) as { keys: KeytabEntry[] }).keys.map((k) => k.kvno)).to.deep.equal([1, 2])

    clock.offset += HOUR
    await s.runDue()
    v = (await admin.call('getprinc', { name: svc })) as View
    expect(states(v)).to.deep.equal({ 1: 'previous', 2: 'current' })
    clock.offset += 2 * HOUR + MIN
    await s.runDue()
    v = (await (await freshAdmin()).call('getprinc', { name: svc })) as View
    expect(states(v), 'retired after the grace, kept while its tickets may live').to.deep.equal({ 1: 'retired', 2: 'current' })
    clock.offset += HOUR
    await s.runDue()
    v = (await (await freshAdmin()).call('getprinc', { name: svc })) as View
    expect(states(v)).to.deep.equal({ 2: 'current' })
    expect(v.rotation?.nextRotationAt).to.equal(act + 24 * HOUR)

    const mine = events.filter((e) => e.principal === `${svc}@${REALM}` && e.type !== 'extracted')
    expect(mine.map((e) => [e.type, e.kvno ?? e.kvnos])).to.deep.equal([
      ['staged', 2],
      ['activated', 2],
      ['purged', [1]],
    ])
    expect(mine.every((e) => e.actor === 'kdc:scheduler')).to.equal(true)
    const audit = (await admin.call('audit', {})) as { records: { actor: string; op: string; target?: string; outcome: string }[] }
    const steps = audit.records.filter((x) => x.actor === 'kdc:scheduler' && x.target === `${svc}@${REALM}`)
    expect(steps.map((x) => [x.op, x.outcome])).to.deep.equal([
      ['rotate', 'ok'],
      ['activate', 'ok'],
      ['purgekeys', 'ok'],
    ])
  })

  it('refuses a schedule on a password principal and rotate on a password key', async () => {
    const a = await expectAdminError(admin.call('modprinc', { name: 'user', rotateEvery: HOUR }), ErrorCode.ADM_ERR_BAD_REQUEST)
    expect(a.message).to.match(/password key: only random-key principals/)
    const b = await expectAdminError(admin.call('rotate', { name: 'user' }), ErrorCode.ADM_ERR_BAD_REQUEST)
    expect(b.message).to.match(/password key: change it with cpw/)
  })
})

function expectKrbSync(fn: () => unknown, code: number): void {
  try {
    fn()
  } catch (err) {
    expect((err as { code?: number }).code, String(err)).to.equal(code)
    return
  }
  throw new Error('expected a refusal')
}

