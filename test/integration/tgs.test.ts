/** TGS exchange against a real in-memory KDC on 127.0.0.1: service tickets, renewal, replay, skew, expiry, key versions. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { EncKdcRepPart, EncTicketPart } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import type { Credentials } from '../../src/client/kdc-client.js'
import { randomKey } from '../../src/crypto/index.js'
import type { KeyVersion } from '../../src/db/types.js'
import { openPart } from '../../src/krb/parts.js'
import {
  ADMIN_PASSWORD,
  DAY,
  expectKrb,
  expectKrbError,
  expectType,
  HOUR,
  MIN,
  REALM,
  startTestKdc,
  TestClock,
  tgsReq,
  useTestKdc,
} from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const SERVICE = 'HTTP/www.example.test'
const id = (name: string) => ({ realm: REALM, components: name.split('/') })
const tgtName = ['krbtgt', REALM]

describe('TGS exchange (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  const clock = new TestClock()
  const t = useTestKdc({ now: clock.now })
  let serviceKey: KeyVersion
  let otherKey: KeyVersion

  before(async () => {
    serviceKey = await t.kdc.addPrincipal(SERVICE)
    otherKey = await t.kdc.addPrincipal('ldap/db.example.test')
    await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
  })
  afterEach(() => {
    clock.offset = 0
    clock.thaw()
  })

  const login = (opts: Parameters<ReturnType<typeof t.client>['login']>[2] = {}) =>
    t.client({ now: clock.now }).login('alice', 'pw-alice', opts)

  describe('service tickets', () => {
    it('issues a ticket that opens with the service key and names the client', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      const st = await c.getServiceTicket(tgt, SERVICE)
      expect(st.sname).to.deep.equal(['HTTP', 'www.example.test'])
      expect(st.ticket.sname).to.deep.equal(['HTTP', 'www.example.test'])
      expect(st.ticket.kvno).to.equal(serviceKey.kvno)
      const part = openPart(serviceKey.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, st.ticket.enc)
      expect(part.cname).to.deep.equal(['alice'])
      expect(part.crealm).to.equal(REALM)
      expect(Buffer.from(part.key).equals(Buffer.from(st.sessionKey))).to.equal(true)
      expect(Buffer.from(st.sessionKey).equals(Buffer.from(tgt.sessionKey))).to.equal(false)
      expect(part.flags & TicketFlag.PRE_AUTHENT, 'PRE_AUTHENT carried over').to.not.equal(0)
      expect(part.flags & TicketFlag.INITIAL, 'not INITIAL').to.equal(0)
      expect(part.authtime).to.equal(tgt.authtime)
      expect(part.endtime).to.be.at.most(tgt.endtime)
      // sealed for the service only: another service's key does not open it
      expect(() => openPart(otherKey.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, st.ticket.enc)).to.throw()
      const ok = t.sink.filter((e) => e.event === 'tgs' && e.outcome === 'ok')
      expect(ok.at(-1)?.service).to.equal(`${SERVICE}@${REALM}`)
    })

    it('never issues a service ticket that outlives the TGT', async () => {
      const c = t.client({ now: clock.now })
      clock.freeze()
      const tgt = await c.login('alice', 'pw-alice', { lifetimeMs: 1 * HOUR })
      const st = await c.getServiceTicket(tgt, SERVICE, { lifetimeMs: 5 * HOUR })
      expect(st.endtime).to.equal(tgt.endtime)
    })

    it('issues a forwardable service ticket only from a forwardable TGT', async () => {
      const c = t.client({ now: clock.now })
      const plain = await c.login('alice', 'pw-alice')
      expect((await c.getServiceTicket(plain, SERVICE, { forwardable: true })).flags & TicketFlag.FORWARDABLE).to.equal(0)
      const fwd = await c.login('alice', 'pw-alice', { forwardable: true })
      expect((await c.getServiceTicket(fwd, SERVICE, { forwardable: true })).flags & TicketFlag.FORWARDABLE).to.not.equal(0)
      expect((await c.getServiceTicket(fwd, SERVICE)).flags & TicketFlag.FORWARDABLE).to.equal(0)
    })

    it('refuses an unknown service with KDC_ERR_S_PRINCIPAL_UNKNOWN', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      const err = await expectKrb(c.getServiceTicket(tgt, 'nosuch/service'), ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN)
      expect(err.message).to.include('nosuch/service')
    })

    it('refuses a service ticket presented as a TGT with KDC_ERR_POLICY', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      const st = await c.getServiceTicket(tgt, SERVICE)
      await expectKrb(c.getServiceTicket(st, 'ldap/db.example.test'), ErrorCode.KDC_ERR_POLICY)
    })

    it('refuses an authenticator whose client differs from the ticket with KRB_AP_ERR_BADMATCH', async () => {
      const tgt = await login()
      const ch = await t.channel('tgs')
      const m = await ch.request(tgsReq(tgt, SERVICE.split('/'), { cname: ['admin'], ctime: clock.now() }))
      expectKrbError(m, ErrorCode.KRB_AP_ERR_BADMATCH)
    })

    it('refuses a service that does not accept tickets with KDC_ERR_POLICY', async () => {
      await t.kdc.addPrincipal('usr-only', { password: 'pw', attributes: { allowService: false } })
      const c = t.client({ now: clock.now })
      await expectKrb(c.getServiceTicket(await c.login('alice', 'pw-alice'), 'usr-only'), ErrorCode.KDC_ERR_POLICY)
    })

    it('refuses a disabled service with KDC_ERR_POLICY and an expired one with KDC_ERR_SERVICE_EXP', async () => {
      await t.kdc.addPrincipal('off/svc', { attributes: { disabled: true } })
      await t.kdc.addPrincipal('gone/svc')
      await t.kdc.db.update(id('gone/svc'), (r) => {
        r.expiresAt = Date.now() - MIN
      }, 'test')
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      await expectKrb(c.getServiceTicket(tgt, 'off/svc'), ErrorCode.KDC_ERR_POLICY)
      await expectKrb(c.getServiceTicket(tgt, 'gone/svc'), ErrorCode.KDC_ERR_SERVICE_EXP)
    })

    it('issues a renewable service ticket only from a renewable TGT, within its renew-till', async () => {
      const c = t.client({ now: clock.now })
      const t0 = clock.freeze()
      const plain = await c.login('alice', 'pw-alice')
      const st1 = await c.getServiceTicket(plain, SERVICE, { renewableLifeMs: DAY })
      expect(st1.flags & TicketFlag.RENEWABLE).to.equal(0)
      const rtgt = await c.login('alice', 'pw-alice', { renewableLifeMs: 2 * HOUR })
      const st2 = await c.getServiceTicket(rtgt, SERVICE, { renewableLifeMs: DAY })
      expect(st2.flags & TicketFlag.RENEWABLE).to.not.equal(0)
      expect(st2.renewTill).to.equal(t0 + 2 * HOUR)
      clock.freeze(t0 + 10 * MIN)
      const renewed = await c.renew(st2)
      expect(renewed.sname).to.deep.equal(SERVICE.split('/'))
      expect(openPart(serviceKey.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, renewed.ticket.enc).cname).to.deep.equal(['alice'])
    })

    it('keeps serving the TGT of a principal locked out since login (a lockout stops guessing, not sessions, as in MIT)', async () => {
      await t.kdc.addPrincipal('dave', { password: 'pw-dave' })
      const c = t.client({ now: clock.now })
      const tgt = await c.login('dave', 'pw-dave')
      await t.kdc.db.update(id('dave'), (r) => {
        r.lockedUntil = Date.now() + HOUR
      }, 'test')
      const st = await c.getServiceTicket(tgt, SERVICE)
      expect(st.sname).to.deep.equal(SERVICE.split('/'))
      await expectKrb(c.login('dave', 'pw-dave'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    })

    it('refuses a TGT of a principal disabled since login with KDC_ERR_CLIENT_REVOKED', async () => {
      await t.kdc.addPrincipal('bob', { password: 'pw-bob' })
      const c = t.client({ now: clock.now })
      const tgt = await c.login('bob', 'pw-bob')
      await t.kdc.db.update(id('bob'), (r) => {
        r.attributes.disabled = true
      }, 'test')
      await expectKrb(c.getServiceTicket(tgt, SERVICE), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    })

    it('refuses a TGT of a principal deleted since login with KDC_ERR_CLIENT_REVOKED', async () => {
      await t.kdc.addPrincipal('carol', { password: 'pw-carol' })
      const c = t.client({ now: clock.now })
      const tgt = await c.login('carol', 'pw-carol')
      await t.kdc.db.delete(id('carol'))
      await expectKrb(c.getServiceTicket(tgt, SERVICE), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    })
  })

  describe('renewal', () => {
    it('renews a renewable TGT: same renew-till, original life, a new session key', async () => {
      const c = t.client({ now: clock.now })
      const t0 = clock.freeze()
      const tgt = await c.login('alice', 'pw-alice', { lifetimeMs: 1 * HOUR, renewableLifeMs: 1 * DAY })
      expect(tgt.flags & TicketFlag.RENEWABLE).to.not.equal(0)
      expect(tgt.renewTill).to.equal(t0 + DAY)
      clock.freeze(t0 + 30 * MIN)
      const renewed = await c.renew(tgt)
      expect(renewed.sname).to.deep.equal(tgtName)
      expect(renewed.renewTill).to.equal(tgt.renewTill)
      expect(renewed.starttime).to.equal(t0 + 30 * MIN)
      expect(renewed.endtime).to.equal(t0 + 30 * MIN + HOUR)
      expect(renewed.authtime).to.equal(tgt.authtime)
      expect(renewed.flags & TicketFlag.RENEWABLE).to.not.equal(0)
      expect(renewed.flags & TicketFlag.INITIAL).to.equal(0)
      expect(Buffer.from(renewed.sessionKey).equals(Buffer.from(tgt.sessionKey))).to.equal(false)
      // the renewed TGT is a working TGT
      const st = await c.getServiceTicket(renewed, SERVICE)
      expect(st.cname).to.deep.equal(['alice'])
      expect(t.sink.some((e) => e.event === 'tgs-renew' && e.outcome === 'ok')).to.equal(true)
    })

    it('caps a renewal at renew-till', async () => {
      const c = t.client({ now: clock.now })
      const t0 = clock.freeze()
      const tgt = await c.login('alice', 'pw-alice', { lifetimeMs: 2 * HOUR, renewableLifeMs: 3 * HOUR })
      clock.freeze(t0 + 110 * MIN)
      const renewed = await c.renew(tgt)
      expect(renewed.endtime).to.equal(t0 + 3 * HOUR)
    })

    it('refuses to renew a non-renewable ticket with KDC_ERR_BADOPTION', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      expect(tgt.flags & TicketFlag.RENEWABLE).to.equal(0)
      await expectKrb(c.renew(tgt), ErrorCode.KDC_ERR_BADOPTION)
    })

    it('refuses to renew past renew-till', async () => {
      const c = t.client({ now: clock.now })
      const t0 = clock.freeze()
      const tgt = await c.login('alice', 'pw-alice', { lifetimeMs: 1 * HOUR, renewableLifeMs: 1 * HOUR })
      clock.freeze(t0 + 2 * HOUR)
      await expectKrb(c.renew(tgt), ErrorCode.KRB_AP_ERR_TKT_EXPIRED)
    })
  })

  describe('replay', () => {
    it('refuses the same TGS_REQ sent twice with KRB_AP_ERR_REPEAT and logs a replay event', async () => {
      const tgt = await login()
      const ch = await t.channel('tgs')
      const req = tgsReq(tgt, SERVICE.split('/'), { ctime: clock.now() })
      expectType(await ch.request(req), MsgType.TGS_REP)
      const before = t.sink.length
      expectKrbError(await ch.request(req), ErrorCode.KRB_AP_ERR_REPEAT)
      // on another connection too: the cache is the KDC's, not the connection's
      const other = await t.channel('tgs')
      expectKrbError(await other.request(req), ErrorCode.KRB_AP_ERR_REPEAT)
      const replays = t.sink.slice(before).filter((e) => e.event === 'replay')
      expect(replays).to.have.length(2)
      expect(replays[0]!.outcome).to.equal('fail')
      expect(replays[0]!.client).to.equal(`alice@${REALM}`)
    })

    it('accepts two requests with the same ctime but distinct authenticators', async () => {
      const tgt = await login()
      const ch = await t.channel('tgs')
      const ctime = clock.now()
      expectType(await ch.request(tgsReq(tgt, SERVICE.split('/'), { ctime })), MsgType.TGS_REP)
      expectType(await ch.request(tgsReq(tgt, SERVICE.split('/'), { ctime })), MsgType.TGS_REP)
    })

    it('answers with a TGS_REP whose sealed nonce is the authenticator nonce', async () => {
      const tgt = await login()
      const ch = await t.channel('tgs')
      const rep = expectType(await ch.request(tgsReq(tgt, SERVICE.split('/'), { ctime: clock.now(), nonce: 4242 })), MsgType.TGS_REP)
      expect(openPart(tgt.sessionKey, KeyUsage.TGS_REP_ENCPART_SESSKEY, EncKdcRepPart, rep.enc).nonce).to.equal(4242)
    })
  })

  describe('clock skew', () => {
    it('refuses a client 10 min behind with KRB_AP_ERR_SKEW and says so', async () => {
      const tgt = await login()
      const skewed = t.client({ clockOffsetMs: -10 * MIN, adjustClockOnSkew: false })
      const err = await expectKrb(skewed.getServiceTicket(tgt, SERVICE), ErrorCode.KRB_AP_ERR_SKEW)
      expect(err.message).to.match(/clock skew too great: your clock is 10 min behind the KDC/)
      expect(err.serverTime).to.be.a('number')
      expect(t.sink.some((e) => e.event === 'skew')).to.equal(true)
    })

    it('refuses the login of a client 10 min behind the same way', async () => {
      const skewed = t.client({ clockOffsetMs: -10 * MIN, adjustClockOnSkew: false })
      const err = await expectKrb(skewed.login('alice', 'pw-alice'), ErrorCode.KRB_AP_ERR_SKEW)
      expect(err.message).to.match(/your clock is 10 min behind the KDC/)
    })

    it('recovers with adjustClockOnSkew (the default) and keeps the corrected offset', async () => {
      const skewed = t.client({ clockOffsetMs: -10 * MIN })
      const tgt = await skewed.login('alice', 'pw-alice')
      expect(Math.abs(skewed.clockOffsetMs)).to.be.below(5000)
      skewed.clockOffsetMs = -10 * MIN
      const st = await skewed.getServiceTicket(tgt, SERVICE)
      expect(st.cname).to.deep.equal(['alice'])
      expect(Math.abs(skewed.clockOffsetMs)).to.be.below(5000)
    })

    it('refuses a client 10 min ahead too', async () => {
      const tgt = await login()
      const skewed = t.client({ clockOffsetMs: 10 * MIN, adjustClockOnSkew: false })
      const err = await expectKrb(skewed.getServiceTicket(tgt, SERVICE), ErrorCode.KRB_AP_ERR_SKEW)
      expect(err.message).to.match(/10 min ahead of the KDC/)
    })
  })

  describe('ticket validity', () => {
    it('refuses an expired TGT with KRB_AP_ERR_TKT_EXPIRED', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice', { lifetimeMs: 10 * MIN })
      clock.offset = 11 * MIN
      await expectKrb(c.getServiceTicket(tgt, SERVICE), ErrorCode.KRB_AP_ERR_TKT_EXPIRED)
    })

    it('refuses a TGT with a flipped bit with KRB_AP_ERR_BAD_INTEGRITY', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      for (const at of [0, 30, tgt.ticket.enc.length - 1]) {
        const enc = Uint8Array.from(tgt.ticket.enc)
        enc[at]! ^= 0x01
        const tampered: Credentials = { ...tgt, ticket: { ...tgt.ticket, enc } }
        await expectKrb(c.getServiceTicket(tampered, SERVICE), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      }
    })

    it('refuses a tampered copy of a TGT the TGS has opened before (same nonce, other bytes) with KRB_AP_ERR_BAD_INTEGRITY', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      await c.getServiceTicket(tgt, SERVICE) // the TGS has now opened (and cached) the TGT
      for (const at of [30, tgt.ticket.enc.length - 1]) {
        const enc = Uint8Array.from(tgt.ticket.enc)
        enc[at]! ^= 0x01
        const tampered: Credentials = { ...tgt, ticket: { ...tgt.ticket, enc } }
        await expectKrb(c.getServiceTicket(tampered, SERVICE), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      }
      const truncated: Credentials = { ...tgt, ticket: { ...tgt.ticket, enc: tgt.ticket.enc.subarray(0, tgt.ticket.enc.length - 1) } }
      await expectKrb(c.getServiceTicket(truncated, SERVICE), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      expect((await c.getServiceTicket(tgt, SERVICE)).sname).to.deep.equal(SERVICE.split('/'))
    })

    it('never lets a service ticket the TGS opened before pass as a TGT (relabelled header)', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice', { renewableLifeMs: DAY })
      const st = await c.getServiceTicket(tgt, SERVICE, { renewableLifeMs: DAY })
      // Renewing makes the TGS open (and remember) the service ticket.
      await c.renew(st)
      const relabelled: Credentials = { ...st, ticket: { ...st.ticket, sname: tgt.ticket.sname, kvno: tgt.ticket.kvno } }
      await expectKrb(c.getServiceTicket(relabelled, SERVICE), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      // The genuine TGT still works, twice (the second time from the TGS's ticket cache).
      expect((await c.getServiceTicket(tgt, SERVICE)).sname).to.deep.equal(SERVICE.split('/'))
      expect((await c.getServiceTicket(tgt, SERVICE)).sname).to.deep.equal(SERVICE.split('/'))
    })

    it('refuses a cached ticket once its service was re-created with a new key (same kvno)', async () => {
      await t.kdc.addPrincipal('HTTP/rekeyed.example.test')
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice', { renewableLifeMs: DAY })
      const st = await c.getServiceTicket(tgt, 'HTTP/rekeyed.example.test', { renewableLifeMs: DAY })
      await c.renew(st) // the TGS has now opened (and cached) st
      await t.kdc.db.delete({ realm: REALM, components: ['HTTP', 'rekeyed.example.test'] })
      await t.kdc.addPrincipal('HTTP/rekeyed.example.test')
      await expectKrb(c.renew(st), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    })

    it('never confuses a longer service name with a shorter one plus sealed bytes (cache ids are unambiguous)', async () => {
      await t.kdc.addPrincipal(`krbtgt/${REALM}/x`)
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice', { renewableLifeMs: DAY })
      const st = await c.getServiceTicket(tgt, `krbtgt/${REALM}/x`, { renewableLifeMs: DAY })
      await c.renew(st)
      const enc = Uint8Array.from([...Buffer.from('x/'), ...st.ticket.enc])
      const forged: Credentials = { ...st, ticket: { ...st.ticket, sname: tgt.ticket.sname, kvno: tgt.ticket.kvno, enc } }
      await expectKrb(c.getServiceTicket(forged, SERVICE), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    })

    it('refuses an authenticator sealed with another session key', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      await expectKrb(c.getServiceTicket({ ...tgt, sessionKey: randomKey() }, SERVICE), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    })

    it('refuses a TGT that names an unknown key version with KRB_AP_ERR_BADKEYVER', async () => {
      const c = t.client({ now: clock.now })
      const tgt = await c.login('alice', 'pw-alice')
      const wrong: Credentials = { ...tgt, ticket: { ...tgt.ticket, kvno: 99 } }
      await expectKrb(c.getServiceTicket(wrong, SERVICE), ErrorCode.KRB_AP_ERR_BADKEYVER)
    })
  })
})

describe('TGS exchange across krbtgt key rotation (integration)', function () {
  this.timeout(20000)
  useProcessGuards()

  /** Push a new krbtgt key version and set the old one's retiresAt. */
  async function rotateKrbtgt(kdc: Awaited<ReturnType<typeof startTestKdc>>['kdc'], retiresAt: number): Promise<void> {
    await kdc.db.update(
      id(`krbtgt/${REALM}`),
      (r) => {
        const cur = r.keys[r.keys.length - 1]!
        cur.retiresAt = retiresAt
        r.keys.push({ kvno: cur.kvno + 1, key: randomKey(), createdAt: Date.now() })
      },
      'test',
    )
  }

  it('still accepts a TGT sealed with the previous krbtgt key within its grace period', async () => {
    const t = await startTestKdc()
    try {
      await t.kdc.addPrincipal(SERVICE)
      const c = t.client()
      const old = await c.login('admin', ADMIN_PASSWORD)
      expect(old.ticket.kvno).to.equal(1)
      await rotateKrbtgt(t.kdc, Date.now() + HOUR)
      const st = await c.getServiceTicket(old, SERVICE)
      expect(st.cname).to.deep.equal(['admin'])
      const fresh = await c.login('admin', ADMIN_PASSWORD)
      expect(fresh.ticket.kvno, 'new TGTs use the new key').to.equal(2)
      await c.getServiceTicket(fresh, SERVICE)
    } finally {
      await t.close()
    }
  })

  it('refuses a TGT sealed with a krbtgt key retired beyond grace with KRB_AP_ERR_BADKEYVER', async () => {
    const t = await startTestKdc()
    try {
      await t.kdc.addPrincipal(SERVICE)
      const c = t.client()
      const old = await c.login('admin', ADMIN_PASSWORD)
      await rotateKrbtgt(t.kdc, Date.now() - 1000)
      const err = await expectKrb(c.getServiceTicket(old, SERVICE), ErrorCode.KRB_AP_ERR_BADKEYVER)
      expect(err.code).to.equal(44)
      const fresh = await c.login('admin', ADMIN_PASSWORD)
      await c.getServiceTicket(fresh, SERVICE)
    } finally {
      await t.close()
    }
  })

  it('refuses to renew a TGT sealed with a retired krbtgt key', async () => {
    const t = await startTestKdc()
    try {
      const c = t.client()
      const old = await c.login('admin', ADMIN_PASSWORD, { renewableLifeMs: DAY })
      await rotateKrbtgt(t.kdc, Date.now() - 1000)
      await expectKrb(c.renew(old), ErrorCode.KRB_AP_ERR_BADKEYVER)
    } finally {
      await t.close()
    }
  })

  it('issues service tickets with the newest service key after a service key rotation', async () => {
    const t = await startTestKdc()
    try {
      const v1 = await t.kdc.addPrincipal(SERVICE)
      const v2key = randomKey()
      await t.kdc.db.update(id(SERVICE), (r) => {
        r.keys.push({ kvno: 2, key: v2key, createdAt: Date.now() })
      }, 'test')
      const c = t.client()
      const st = await c.getServiceTicket(await c.login('admin', ADMIN_PASSWORD), SERVICE)
      expect(st.ticket.kvno).to.equal(2)
      expect(openPart(v2key, KeyUsage.KDC_REP_TICKET, EncTicketPart, st.ticket.enc).cname).to.deep.equal(['admin'])
      expect(() => openPart(v1.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, st.ticket.enc)).to.throw()
    } finally {
      await t.close()
    }
  })
})
describe('TGS exchange with an injected KDC clock (integration)', function () {
  this.timeout(20000)
  useProcessGuards()

  it('lets a client recover from skew against the KDC clock, not the host clock', async () => {
    // The KDC runs an hour ahead of the host: KRB_ERROR.stime must carry the KDC's time.
    const kdcClock = new TestClock()
    kdcClock.offset = HOUR
    const t = await startTestKdc({ now: kdcClock.now })
    try {
      const c = t.client()
      const tgt = await c.login('admin', ADMIN_PASSWORD)
      expect(Math.abs(c.clockOffsetMs - HOUR)).to.be.below(5000)
      expect(tgt.cname).to.deep.equal(['admin'])
    } finally {
      await t.close()
    }
  })
})

