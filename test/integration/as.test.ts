/** AS exchange against a real in-memory KDC on 127.0.0.1: login, ticket times and flags, pre-auth, lockout. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption, PaType, TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { EncKdcRepPart, EncTicketPart, type Message, PaEncTs } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { randomKey } from '../../src/crypto/index.js'
import { openPart, sealPart } from '../../src/krb/parts.js'
import {
  ADMIN_PASSWORD,
  asReq,
  DAY,
  expectKrb,
  expectKrbError,
  expectType,
  FLOOR_MS,
  HOUR,
  KrbProtocolError,
  MIN,
  preauth,
  REALM,
  TestClock,
  timed,
  useTestKdc,
} from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const clock = new TestClock()
const REALM_MAX_LIFE = 4 * HOUR
const REALM_MAX_RENEW = 2 * DAY

describe('AS exchange (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  const t = useTestKdc({
    now: clock.now,
    config: { maxTicketLifeMs: REALM_MAX_LIFE, maxRenewableLifeMs: REALM_MAX_RENEW },
  })
  const id = (name: string) => ({ realm: REALM, components: name.split('/') })
  const tgtName = ['krbtgt', REALM]

  afterEach(() => {
    clock.thaw()
    clock.offset = 0
  })

  describe('login', () => {
    it('issues a TGT for krbtgt/REALM with INITIAL and PRE_AUTHENT', async () => {
      const creds = await t.client({ now: clock.now }).login('admin', ADMIN_PASSWORD)
      expect(creds.sname).to.deep.equal(tgtName)
      expect(creds.cname).to.deep.equal(['admin'])
      expect(creds.crealm).to.equal(REALM)
      expect(creds.ticket.sname).to.deep.equal(tgtName)
      expect(creds.flags & TicketFlag.INITIAL, 'INITIAL').to.not.equal(0)
      expect(creds.flags & TicketFlag.PRE_AUTHENT, 'PRE_AUTHENT').to.not.equal(0)
      expect(creds.flags & TicketFlag.RENEWABLE, 'RENEWABLE').to.equal(0)
      expect(creds.flags & TicketFlag.FORWARDABLE, 'FORWARDABLE').to.equal(0)
      expect(creds.sessionKey).to.have.length(32)
      expect(creds.renewTill).to.equal(undefined)
      const ok = t.sink.filter((e) => e.event === 'as' && e.outcome === 'ok' && e.client === `admin@${REALM}`)
      expect(ok).to.have.length.greaterThan(0)
      expect(ok.at(-1)!.reason).to.equal('pre-authenticated')
    })

    it('logs in with a long-term key (one round trip, pre-authenticated)', async () => {
      const kv = await t.kdc.addPrincipal('keyuser', {})
      const creds = await t.client().loginWithKey('keyuser', { key: kv.key })
      expect(creds.cname).to.deep.equal(['keyuser'])
      expect(creds.flags & TicketFlag.PRE_AUTHENT).to.not.equal(0)
    })

    it('puts the same session key in the TGT as in the reply', async () => {
      const creds = await t.client().login('admin', ADMIN_PASSWORD)
      const krbtgt = await t.kdc.db.get(id(`krbtgt/${REALM}`))
      const key = krbtgt!.keys.find((k) => k.kvno === creds.ticket.kvno)!.key
      const part = openPart(key, KeyUsage.KDC_REP_TICKET, EncTicketPart, creds.ticket.enc)
      expect(Buffer.from(part.key).equals(Buffer.from(creds.sessionKey))).to.equal(true)
      expect(part.cname).to.deep.equal(['admin'])
      expect(part.flags).to.equal(creds.flags)
      expect(part.endtime).to.equal(creds.endtime)
    })
  })

  describe('ticket lifetime = min(request, principal max, realm max)', () => {
    before(async () => {
      await t.kdc.addPrincipal('short', { password: 'pw-short', maxLife: 2 * HOUR, maxRenewableLife: 1 * DAY })
      await t.kdc.addPrincipal('long', { password: 'pw-long', maxLife: 10 * HOUR, maxRenewableLife: 7 * DAY })
      await t.kdc.addPrincipal('norenew', { password: 'pw-norenew', attributes: { allowRenewable: false } })
      await t.kdc.addPrincipal('nofwd', { password: 'pw-nofwd', attributes: { allowForwardable: false } })
    })

    const life = async (name: string, opts: { lifetimeMs?: number } = {}) => {
      const now = clock.freeze()
      const c = await t.client({ now: clock.now }).login(name, `pw-${name}`, opts)
      expect(c.starttime).to.equal(now)
      expect(c.authtime).to.equal(now)
      return c.endtime - c.starttime
    }

    it('grants the requested life when it is the smallest', async () => {
      expect(await life('short', { lifetimeMs: 1 * HOUR })).to.equal(1 * HOUR)
    })

    it('caps the life at the principal maximum', async () => {
      expect(await life('short', { lifetimeMs: 3 * HOUR })).to.equal(2 * HOUR)
    })

    it('caps the life at the realm maximum', async () => {
      expect(await life('long', { lifetimeMs: 8 * HOUR })).to.equal(REALM_MAX_LIFE)
    })

    it('gives the default life capped by the principal when none is asked', async () => {
      // default 10 h; krbtgt and 'long' allow 10 h; the realm allows 4 h
      expect(await life('long')).to.equal(REALM_MAX_LIFE)
      expect(await life('short')).to.equal(2 * HOUR)
    })

    it('issues a renewable TGT only when asked', async () => {
      const now = clock.freeze()
      const plain = await t.client({ now: clock.now }).login('long', 'pw-long')
      expect(plain.flags & TicketFlag.RENEWABLE).to.equal(0)
      expect(plain.renewTill).to.equal(undefined)
      const r = await t.client({ now: clock.now }).login('long', 'pw-long', { renewableLifeMs: 1 * DAY })
      expect(r.flags & TicketFlag.RENEWABLE).to.not.equal(0)
      expect(r.renewTill).to.equal(now + 1 * DAY)
    })

    it('caps renew-till at the principal and realm maxima', async () => {
      const now = clock.freeze()
      const s = await t.client({ now: clock.now }).login('short', 'pw-short', { renewableLifeMs: 5 * DAY })
      expect(s.renewTill).to.equal(now + 1 * DAY)
      const l = await t.client({ now: clock.now }).login('long', 'pw-long', { renewableLifeMs: 5 * DAY })
      expect(l.renewTill).to.equal(now + REALM_MAX_RENEW)
    })

    it('does not issue a renewable ticket to a principal that does not allow it', async () => {
      const c = await t.client({ now: clock.now }).login('norenew', 'pw-norenew', { renewableLifeMs: 1 * DAY })
      expect(c.flags & TicketFlag.RENEWABLE).to.equal(0)
      expect(c.renewTill).to.equal(undefined)
    })

    it('issues a forwardable TGT only when asked and allowed', async () => {
      const no = await t.client().login('long', 'pw-long')
      expect(no.flags & TicketFlag.FORWARDABLE).to.equal(0)
      const yes = await t.client().login('long', 'pw-long', { forwardable: true })
      expect(yes.flags & TicketFlag.FORWARDABLE).to.not.equal(0)
      const denied = await t.client().login('nofwd', 'pw-nofwd', { forwardable: true })
      expect(denied.flags & TicketFlag.FORWARDABLE).to.equal(0)
    })
  })

  describe('failures', () => {
    it('refuses a wrong password with KDC_ERR_PREAUTH_FAILED', async () => {
      const err = await expectKrb(t.client().login('admin', 'wrong'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      expect(err.codeName).to.equal('KDC_ERR_PREAUTH_FAILED')
    })

    it('answers an unknown principal exactly like a wrong password, no faster than the floor', async () => {
      await t.kdc.addPrincipal('victim', { password: 'victim-pw' })
      const before = t.sink.length
      const wrong = await timed(t.client().login('victim', 'guess'))
      const unknown = await timed(t.client().login('nosuchuser', 'guess'))
      const [e1, e2] = [wrong.result, unknown.result].map((r) => {
        expect(r.status).to.equal('rejected')
        return (r as PromiseRejectedResult).reason as KrbProtocolError
      })
      expect(e1).to.be.instanceOf(KrbProtocolError)
      expect(e2).to.be.instanceOf(KrbProtocolError)
      expect(e2!.code).to.equal(ErrorCode.KDC_ERR_PREAUTH_FAILED)
      expect(e2!.code).to.equal(e1!.code)
      expect(e2!.status).to.equal(e1!.status)
      // Each message names the principal tried; otherwise they are the same.
      expect(e2!.message.replace('nosuchuser@', 'victim@')).to.equal(e1!.message)
      expect(wrong.ms, 'wrong password answered before the floor').to.be.at.least(FLOOR_MS - 1)
      expect(unknown.ms, 'unknown principal answered before the floor').to.be.at.least(FLOOR_MS - 1)
      // The security log, unlike the peer, knows the difference.
      const fails = t.sink.slice(before).filter((e) => e.event === 'as' && e.outcome === 'fail')
      expect(fails.find((e) => e.client === `victim@${REALM}`)?.reason).to.match(/wrong key|bad password/)
      expect(fails.find((e) => e.client === `nosuchuser@${REALM}`)?.reason).to.match(/unknown/)
    })

    it('sends the same wire error for both at the raw protocol level, each after the floor', async () => {
      await t.kdc.addPrincipal('rawvictim', { key: randomKey() })
      const ch = await t.channel('as')
      const guess = randomKey()
      const replies: { ms: number; m: Message }[] = []
      for (const cname of [['rawvictim'], ['rawnobody']]) {
        const start = performance.now()
        const m = await ch.request(asReq(cname, { padata: preauth(guess) }))
        replies.push({ ms: performance.now() - start, m })
      }
      const [a, b] = replies.map((r) => expectKrbError(r.m, ErrorCode.KDC_ERR_PREAUTH_FAILED))
      expect(b!.text).to.equal(a!.text)
      expect(b!.edata).to.deep.equal(a!.edata)
      for (const r of replies) expect(r.ms).to.be.at.least(FLOOR_MS - 1)
    })

    it('refuses a disabled principal with KDC_ERR_CLIENT_REVOKED', async () => {
      await t.kdc.addPrincipal('disabled', { password: 'pw-disabled', attributes: { disabled: true } })
      await expectKrb(t.client().login('disabled', 'pw-disabled'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    })

    it('refuses an expired principal with KDC_ERR_NAME_EXP', async () => {
      await t.kdc.addPrincipal('expired', { password: 'pw-expired' })
      await t.kdc.db.update(id('expired'), (r) => {
        r.expiresAt = Date.now() - MIN
      }, 'test')
      await expectKrb(t.client().login('expired', 'pw-expired'), ErrorCode.KDC_ERR_NAME_EXP)
    })

    it('refuses an expired password with KDC_ERR_KEY_EXPIRED, except for kadmin/changepw', async () => {
      await t.kdc.addPrincipal('stale', { password: 'pw-stale' })
      await t.kdc.db.update(id('stale'), (r) => {
        r.passwordExpiresAt = Date.now() - MIN
      }, 'test')
      await expectKrb(t.client().login('stale', 'pw-stale'), ErrorCode.KDC_ERR_KEY_EXPIRED)
      const cp = await t.client().login('stale', 'pw-stale', { service: 'kadmin/changepw' })
      expect(cp.sname).to.deep.equal(['kadmin', 'changepw'])
      expect(cp.flags & TicketFlag.INITIAL).to.not.equal(0)
    })

    it('refuses an initial ticket for a principal that is not a service with KDC_ERR_POLICY', async () => {
      await t.kdc.addPrincipal('notasvc', { password: 'pw-notasvc', attributes: { allowService: false } })
      await expectKrb(t.client().login('admin', ADMIN_PASSWORD, { service: 'notasvc' }), ErrorCode.KDC_ERR_POLICY)
    })

    it('refuses an initial ticket for an expired service with KDC_ERR_SERVICE_EXP', async () => {
      await t.kdc.addPrincipal('oldsvc/host')
      await t.kdc.db.update(id('oldsvc/host'), (r) => {
        r.expiresAt = Date.now() - MIN
      }, 'test')
      await expectKrb(t.client().login('admin', ADMIN_PASSWORD, { service: 'oldsvc/host' }), ErrorCode.KDC_ERR_SERVICE_EXP)
    })

    it('refuses an initial ticket for an unknown service with KDC_ERR_S_PRINCIPAL_UNKNOWN', async () => {
      await expectKrb(t.client().login('admin', ADMIN_PASSWORD, { service: 'no/such' }), ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN)
    })

    it('issues a ticket without PRE_AUTHENT to a principal that does not require pre-auth', async () => {
      await t.kdc.addPrincipal('nopreauth', { password: 'pw-nopreauth', attributes: { requiresPreauth: false } })
      const ch = await t.channel('as')
      const rep = expectType(await ch.request(asReq(['nopreauth'])), MsgType.AS_REP)
      expect(rep.salt).to.equal(`${REALM}nopreauth`)
      const creds = await t.client().login('nopreauth', 'pw-nopreauth')
      expect(creds.flags & TicketFlag.PRE_AUTHENT).to.equal(0)
      expect(creds.flags & TicketFlag.INITIAL).to.not.equal(0)
      // pre-auth that is sent must still be right
      await expectKrb(t.client().loginWithKey('nopreauth', { key: randomKey() }), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    })

    it('refuses a disabled principal whatever the password (checked before pre-auth, as MIT does)', async () => {
      await expectKrb(t.client().login('disabled', 'nope'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    })
  })

  describe('lockout', () => {
    before(async () => {
      await t.kdc.db.putPolicy({
        name: 'strict',
        maxFailures: 3,
        failureCountIntervalMs: 60000,
        lockoutDurationMs: 60000,
        minLength: 1,
        minClasses: 1,
        maxPasswordLifeMs: 0,
      })
      await t.kdc.db.putPolicy({
        name: 'countonly',
        maxFailures: 0,
        failureCountIntervalMs: 60000,
        lockoutDurationMs: 60000,
        minLength: 1,
        minClasses: 1,
        maxPasswordLifeMs: 0,
      })
    })

    it('locks after maxFailures wrong passwords, refuses the right one with KDC_ERR_CLIENT_REVOKED, and unlock() restores it', async () => {
      await t.kdc.addPrincipal('locky', { password: 'pw-locky', policy: 'strict' })
      const before = t.sink.length
      for (let i = 0; i < 3; i++) await expectKrb(t.client().login('locky', `bad-${i}`), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      const rec = await t.kdc.db.get(id('locky'))
      expect(rec!.failureCount).to.equal(3)
      expect(rec!.lockedUntil).to.be.a('number')
      await expectKrb(t.client().login('locky', 'pw-locky'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      const events = t.sink.slice(before)
      expect(events.filter((e) => e.event === 'lockout' && e.client === `locky@${REALM}`)).to.have.length(1)
      expect(events.some((e) => e.event === 'as' && e.reason === 'locked out')).to.equal(true)
      await t.kdc.db.unlock(id('locky'), 'test')
      const creds = await t.client().login('locky', 'pw-locky')
      expect(creds.cname).to.deep.equal(['locky'])
    })

    it('answers every guess at a locked account the same way, counts none, and confirms nothing', async () => {
      await t.kdc.addPrincipal('guessme', { password: 'pw-guessme', policy: 'strict' })
      for (let i = 0; i < 3; i++) await expectKrb(t.client().login('guessme', `bad-${i}`), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      const locked = await t.kdc.db.get(id('guessme'))
      expect(locked!.lockedUntil).to.be.a('number')
      // Wrong guesses and the right password get the same answer while locked.
      const wrong = await expectKrb(t.client().login('guessme', 'guess-a'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      const right = await expectKrb(t.client().login('guessme', 'pw-guessme'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      expect(right.message).to.equal(wrong.message)
      await expectKrb(t.client().login('guessme', 'guess-b'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      const after = await t.kdc.db.get(id('guessme'))
      expect(after!.failureCount).to.equal(3)
      expect(after!.lockedUntil).to.equal(locked!.lockedUntil)
    })

    it('resets the failure count on a successful login', async () => {
      await t.kdc.addPrincipal('resetme', { password: 'pw-resetme', policy: 'strict' })
      await expectKrb(t.client().login('resetme', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      await expectKrb(t.client().login('resetme', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      await t.client().login('resetme', 'pw-resetme')
      expect((await t.kdc.db.get(id('resetme')))!.failureCount).to.equal(0)
      await expectKrb(t.client().login('resetme', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      await expectKrb(t.client().login('resetme', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      await t.client().login('resetme', 'pw-resetme')
    })

    it('lets a principal log in again once the lockout has expired', async () => {
      await t.kdc.addPrincipal('timed', { password: 'pw-timed', policy: 'strict' })
      for (let i = 0; i < 3; i++) await expectKrb(t.client({ now: clock.now }).login('timed', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      await expectKrb(t.client({ now: clock.now }).login('timed', 'pw-timed'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      clock.offset = 61_000
      await t.client({ now: clock.now }).login('timed', 'pw-timed')
      const rec = await t.kdc.db.get(id('timed'))
      expect(rec!.failureCount).to.equal(0)
      expect(rec!.lockedUntil).to.equal(undefined)
    })

    it('does not lock when the failures are spread over more than the counting window', async () => {
      await t.kdc.addPrincipal('spread', { password: 'pw-spread', policy: 'strict' })
      for (let i = 0; i < 2; i++) await expectKrb(t.client({ now: clock.now }).login('spread', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      clock.offset = 61_000
      for (let i = 0; i < 2; i++) await expectKrb(t.client({ now: clock.now }).login('spread', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      const rec = await t.kdc.db.get(id('spread'))
      expect(rec!.failureCount).to.equal(2)
      expect(rec!.lockedUntil).to.equal(undefined)
      await t.client({ now: clock.now }).login('spread', 'pw-spread')
    })

    it('does not count guesses at an unknown principal anywhere', async () => {
      const before = await t.kdc.db.count()
      await expectKrb(t.client().login('ghost-user', 'bad'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      expect(await t.kdc.db.count()).to.equal(before)
    })

    it('counts 10 parallel wrong guesses exactly', async () => {
      await t.kdc.addPrincipal('parallel', { password: 'pw-parallel', policy: 'countonly' })
      // One client each, so the guesses travel on 10 connections and really run in parallel.
      const clients = Array.from({ length: 10 }, () => t.client())
      const results = await Promise.allSettled(clients.map((c, i) => c.login('parallel', `bad-${i}`)))
      for (const r of results) {
        expect(r.status).to.equal('rejected')
        expect(((r as PromiseRejectedResult).reason as KrbProtocolError).code).to.equal(ErrorCode.KDC_ERR_PREAUTH_FAILED)
      }
      const rec = await t.kdc.db.get(id('parallel'))
      expect(rec!.failureCount).to.equal(10)
      expect(rec!.lockedUntil).to.equal(undefined)
    })

    it('locks exactly once under 10 parallel wrong guesses', async () => {
      await t.kdc.addPrincipal('parlock', { password: 'pw-parlock', policy: 'strict' })
      const before = t.sink.length
      const clients = Array.from({ length: 10 }, () => t.client())
      await Promise.allSettled(clients.map((c, i) => c.login('parlock', `bad-${i}`)))
      const rec = await t.kdc.db.get(id('parlock'))
      expect(rec!.failureCount).to.equal(3)
      expect(rec!.lockedUntil).to.be.a('number')
      expect(t.sink.slice(before).filter((e) => e.event === 'lockout')).to.have.length(1)
      await expectKrb(t.client().login('parlock', 'pw-parlock'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    })
  })

  describe('pre-authentication at the protocol level (deny by default)', () => {
    let rawKey: Uint8Array
    before(async () => {
      rawKey = randomKey()
      await t.kdc.addPrincipal('raw', { key: rawKey })
      await t.kdc.addPrincipal('rawpw', { password: 'pw-rawpw' })
    })

    it('answers an AS_REQ without padata with PREAUTH_REQUIRED and the key hints', async () => {
      const ch = await t.channel('as')
      const e = expectKrbError(await ch.request(asReq(['rawpw'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
      expect(e.edata).to.be.an('object')
      expect(Object.keys(e.edata!).sort()).to.deep.equal(['kdf', 'salt'])
      expect(e.edata!.salt).to.equal(`${REALM}rawpw`)
      expect(e.edata!.kdf).to.deep.equal({ ...t.kdc.config.kdf })
      expect(e.edata!.kvno).to.equal(undefined)
    })

    it('answers an unknown principal with a PREAUTH_REQUIRED of the same shape', async () => {
      const ch = await t.channel('as')
      const known = expectKrbError(await ch.request(asReq(['rawpw'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
      const unknown = expectKrbError(await ch.request(asReq(['ghost'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
      expect(unknown.text).to.equal(known.text)
      expect(Object.keys(unknown.edata!).sort()).to.deep.equal(Object.keys(known.edata!).sort())
      expect(unknown.edata!.kdf).to.deep.equal(known.edata!.kdf)
      expect(unknown.edata!.kvno).to.equal(known.edata!.kvno)
      expect(unknown.edata!.salt).to.equal(`${REALM}ghost`)
    })

    it('refuses an unknown padata type with PREAUTH_FAILED', async () => {
      const ch = await t.channel('as')
      const m = await ch.request(asReq(['raw'], { padata: [{ type: 99, value: new Uint8Array(48) }] }))
      expectKrbError(m, ErrorCode.KDC_ERR_PREAUTH_FAILED)
    })

    it('refuses a valid timestamp next to an unknown padata type', async () => {
      const ch = await t.channel('as')
      const padata = [...preauth(rawKey), { type: 99, value: new Uint8Array(8) }]
      expectKrbError(await ch.request(asReq(['raw'], { padata })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    })

    it('refuses a duplicated PA_ENC_TIMESTAMP with PREAUTH_FAILED', async () => {
      const ch = await t.channel('as')
      const padata = [...preauth(rawKey), ...preauth(rawKey)]
      expectKrbError(await ch.request(asReq(['raw'], { padata })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    })

    it('refuses an empty PA_ENC_TIMESTAMP value with PREAUTH_FAILED', async () => {
      const ch = await t.channel('as')
      const m = await ch.request(asReq(['raw'], { padata: [{ type: PaType.PA_ENC_TIMESTAMP, value: new Uint8Array(0) }] }))
      expectKrbError(m, ErrorCode.KDC_ERR_PREAUTH_FAILED)
    })

    it('refuses a timestamp sealed for another key usage', async () => {
      const ch = await t.channel('as')
      const value = sealPart(rawKey, KeyUsage.TGS_REQ_AUTH, PaEncTs, { ts: Date.now(), us: 0 })
      const m = await ch.request(asReq(['raw'], { padata: [{ type: PaType.PA_ENC_TIMESTAMP, value }] }))
      expectKrbError(m, ErrorCode.KDC_ERR_PREAUTH_FAILED)
    })

    it('refuses a valid encrypted timestamp outside the skew with KRB_AP_ERR_SKEW and the server time', async () => {
      const ch = await t.channel('as')
      const skew = t.kdc.config.maxClockSkewMs
      for (const off of [-(skew + MIN), skew + MIN]) {
        const e = expectKrbError(await ch.request(asReq(['raw'], { padata: preauth(rawKey, Date.now() + off) })), ErrorCode.KRB_AP_ERR_SKEW)
        expect(Math.abs(e.stime - Date.now())).to.be.below(5000)
      }
    })

    it('accepts a timestamp just inside the skew', async () => {
      const ch = await t.channel('as')
      const skew = t.kdc.config.maxClockSkewMs
      expectType(await ch.request(asReq(['raw'], { padata: preauth(rawKey, Date.now() - skew + 10_000) })), MsgType.AS_REP)
    })

    it('answers with an AS_REP whose sealed nonce is the request nonce', async () => {
      const ch = await t.channel('as')
      const req = asReq(['raw'], { padata: preauth(rawKey), nonce: 0xdeadbeef })
      const rep = expectType(await ch.request(req), MsgType.AS_REP)
      const part = openPart(rawKey, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, rep.enc)
      expect(part.nonce).to.equal(0xdeadbeef)
      expect(part.sname).to.deep.equal(tgtName)
      expect(rep.cname).to.deep.equal(['raw'])
      expect(rep.kvno).to.equal(1)
    })

    it('never issues a ticket without pre-auth to a principal that requires it', async () => {
      const ch = await t.channel('as')
      for (const options of [0, KdcOption.FORWARDABLE | KdcOption.RENEWABLE])
        expectKrbError(await ch.request(asReq(['raw'], { options })), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    })

    it('turns RENEWABLE-OK into a renewable ticket up to the wanted end when the life is capped', async () => {
      const ch = await t.channel('as')
      const now = clock.freeze()
      const till = now + 2 * DAY
      const rep = expectType(
        await ch.request(asReq(['raw'], { padata: preauth(rawKey, now), till, options: KdcOption.RENEWABLE_OK })),
        MsgType.AS_REP,
      )
      const part = openPart(rawKey, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, rep.enc)
      expect(part.endtime).to.equal(now + REALM_MAX_LIFE)
      expect(part.flags & TicketFlag.RENEWABLE).to.not.equal(0)
      expect(part.renewTill).to.equal(till)
    })

    it('refuses a request for another realm', async () => {
      const ch = await t.channel('as')
      const m = await ch.request(asReq(['raw'], { realm: 'OTHER.TEST', padata: preauth(rawKey) }))
      expectKrbError(m, ErrorCode.KDC_ERR_WRONG_REALM)
    })
  })
})

describe('AS security log (integration)', () => {
  useProcessGuards()
  const t = useTestKdc()

  it('records who, from where, the outcome and the reason, and never a password or key', async () => {
    await t.kdc.addPrincipal('logged', { password: 'pw-Secret-logged' })
    await t.client().login('logged', 'pw-Secret-logged')
    await expectKrb(t.client().login('logged', 'pw-Secret-wrong'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    await expectKrb(t.client().login('unknown-one', 'pw-Secret-other'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    const events = t.sink.filter((e) => e.event === 'as')
    expect(events).to.have.length(3)
    for (const e of events) {
      expect(e.peer).to.match(/^127\.0\.0\.1:\d+$/)
      expect(e.time).to.be.a('string')
      expect(e.reason).to.be.a('string')
      for (const v of Object.values(e)) expect(v).to.not.be.instanceOf(Uint8Array)
    }
    expect(events.map((e) => e.outcome)).to.deep.equal(['ok', 'fail', 'fail'])
    const text = JSON.stringify(t.sink)
    expect(text).to.not.match(/pw-Secret/)
    expect(text).to.not.include(ADMIN_PASSWORD)
  })
})
