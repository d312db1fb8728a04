import path from 'node:path'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { ApAuthenticator, type ApReq, EncApRepPart } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { buildApReq, verifyApRep } from '../../src/client/ap.js'
import type { Credentials } from '../../src/client/kdc-client.js'
import { randomKey } from '../../src/crypto/index.js'
import { KrbProtocolError } from '../../src/errors.js'
import { sealPart } from '../../src/krb/parts.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { Keytab, readKeytab, writeKeytab } from '../../src/krb/keytab.js'
import { ServiceVerifier, type ServiceVerifierOptions } from '../../src/service/verify-ap-req.js'
import { type Realm, SERVICE, startRealm, thrown } from './helpers.js'

const MIN = 60_000
const SKEW = 5 * MIN

function expectKrb(err: Error, code: number): void {
  expect(err, `${err.message}`).to.be.instanceOf(KrbProtocolError)
  expect((err as KrbProtocolError).code, `${(err as KrbProtocolError).codeName}: ${err.message}`).to.equal(code)
}

const flip = (b: Uint8Array, at: number): Uint8Array => {
  const c = Uint8Array.from(b)
  c[at]! ^= 0x01
  return c
}

describe('ServiceVerifier', () => {
  let realm: Realm
  let creds: Credentials
  let keytab: Keytab
  let principal: string
  // Created before any authenticator of the suite, so none predates it ('cold').
  let replayCache: ReplayCache
  const verifier = (o: Partial<ServiceVerifierOptions> = {}) => new ServiceVerifier({ keytab, principal, replayCache, ...o })

  before(async () => {
    replayCache = new ReplayCache({ maxClockSkewMs: SKEW })
    realm = await startRealm()
    principal = `${SERVICE}@${realm.kdc.realm}`
    creds = await realm.ticket()
    keytab = await readKeytab(await realm.keytabFile())
  })
  after(async () => {
    await realm?.close()
  })

  it("verifies a client's AP_REQ from the keytab alone, with the KDC stopped", async () => {
    const own = await startRealm()
    const file = await own.keytabFile()
    const ticket = await own.ticket()
    await own.kdc.close()
    const v = new ServiceVerifier({ keytab: await readKeytab(file) })
    const { req } = buildApReq(ticket)
    const ok = v.verify(req)
    expect(ok.client).to.equal(`alice@${own.kdc.realm}`)
    expect(ok.cname).to.deep.equal(['alice'])
    expect(ok.crealm).to.equal(own.kdc.realm)
    expect(ok.service).to.equal(`${SERVICE}@${own.kdc.realm}`)
    expect(ok.kvno).to.equal(1)
    expect(ok.sessionKey).to.deep.equal(ticket.sessionKey)
    expect(ok.endtime).to.equal(ticket.endtime)
    expect(ok.authtime).to.equal(ticket.authtime)
    expect(ok.flags).to.equal(ticket.flags)
    expect(ok.apRep).to.equal(undefined)
    own.client.close()
    await own.close()
  })

  it('returns the client subkey and sequence number', () => {
    const p = buildApReq(creds, { subkey: true })
    const ok = verifier().verify(p.req)
    expect(ok.subkey).to.deep.equal(p.subkey)
    expect(ok.seq).to.equal(p.seq)
    expect(ok.ctime).to.equal(p.ctime)
    expect(ok.cusec).to.equal(p.cusec)
  })

  describe('mutual authentication', () => {
    it('succeeds: the AP_REP opens and echoes the authenticator, with a service subkey', () => {
      const p = buildApReq(creds, { mutual: true, subkey: true })
      const ok = verifier().verify(p.req)
      expect(ok.apRep?.t).to.equal(MsgType.AP_REP)
      const r = verifyApRep(ok.apRep!, p)
      expect(r.subkey).to.have.length(32)
      expect(r.subkey).to.deep.equal(ok.serviceSubkey)
      expect(r.seq).to.equal(ok.serviceSeq)
    })

    it('fails with KRB_AP_ERR_MUT_FAIL (46) when the AP_REP is tampered', () => {
      const p = buildApReq(creds, { mutual: true })
      const rep = verifier().verify(p.req).apRep!
      for (const at of [0, 30, rep.enc.length - 1]) expectKrb(thrown(() => verifyApRep({ ...rep, enc: flip(rep.enc, at) }, p)), 46)
    })

    it('fails with 46 when the AP_REP is sealed with another key', () => {
      const p = buildApReq(creds, { mutual: true })
      const forged = sealPart(randomKey(), KeyUsage.AP_REP_ENCPART, EncApRepPart, { ctime: p.ctime, cusec: p.cusec })
      expectKrb(thrown(() => verifyApRep({ v: PROTOCOL_VERSION, t: MsgType.AP_REP, enc: forged }, p)), 46)
    })

    it('fails with 46 when the AP_REP answers another authenticator (replayed reply)', () => {
      const v = verifier()
      const first = buildApReq(creds, { mutual: true, now: () => Date.now() + 1000 })
      const rep = v.verify(first.req).apRep!
      const second = buildApReq(creds, { mutual: true, now: () => Date.now() + 2000 })
      expectKrb(thrown(() => verifyApRep(rep, second)), 46)
    })

    it('fails with 46 when the AP_REP is sealed for another usage', () => {
      const p = buildApReq(creds, { mutual: true })
      const wrong = sealPart(creds.sessionKey, KeyUsage.AP_REQ_AUTH, EncApRepPart, { ctime: p.ctime, cusec: p.cusec })
      expectKrb(thrown(() => verifyApRep({ v: PROTOCOL_VERSION, t: MsgType.AP_REP, enc: wrong }, p)), 46)
    })
  })

  it('refuses a replayed AP_REQ with KRB_AP_ERR_REPEAT (34)', () => {
    const v = verifier()
    const { req } = buildApReq(creds)
    v.verify(req)
    expectKrb(thrown(() => v.verify(req)), 34)
  })

  it('refuses the replay at another verifier sharing the replay cache (34)', () => {
    const replayCache = new ReplayCache({ maxClockSkewMs: SKEW })
    const { req } = buildApReq(creds)
    verifier({ replayCache }).verify(req)
    expectKrb(thrown(() => verifier({ replayCache }).verify(req)), 34)
  })

  it('refuses a ticket for another service with KRB_AP_ERR_NOT_US (35)', async () => {
    await realm.kdc.addPrincipal('other/localhost')
    const other = await realm.ticket('other/localhost')
    expectKrb(thrown(() => verifier().verify(buildApReq(other).req)), 35)
    // Without a principal restriction, a ticket for a service whose key the keytab lacks is not for us either.
    expectKrb(thrown(() => new ServiceVerifier({ keytab }).verify(buildApReq(other).req)), 35)
  })

  it('restricts to one principal of a keytab holding several', async () => {
    const k2 = await realm.kdc.addPrincipal('second/localhost')
    const both = new Keytab([realm.entry(realm.serviceKey), realm.entry(k2, 'second/localhost')])
    const second = await realm.ticket('second/localhost')
    // An in-memory keytab: the suite's replay cache, made before its authenticators (this test is not about restarts).
    expect(new ServiceVerifier({ keytab: both, replayCache }).verify(buildApReq(second).req).service).to.match(/^second\/localhost@/)
    expectKrb(thrown(() => new ServiceVerifier({ keytab: both, principal: SERVICE, replayCache }).verify(buildApReq(second).req)), 35)
    expect(new ServiceVerifier({ keytab: both, principal: SERVICE, replayCache }).verify(buildApReq(creds).req).client).to.match(/^alice@/)
  })

  it('refuses a tampered ticket with KRB_AP_ERR_BAD_INTEGRITY (31)', () => {
    const { req } = buildApReq(creds)
    for (const at of [0, 24, 40, req.ticket.enc.length - 1]) {
      const bad: ApReq = { ...req, ticket: { ...req.ticket, enc: flip(req.ticket.enc, at) } }
      expectKrb(thrown(() => verifier().verify(bad)), 31)
    }
  })

  it('refuses a tampered authenticator with 31', () => {
    const { req } = buildApReq(creds)
    expectKrb(thrown(() => verifier().verify({ ...req, auth: flip(req.auth, 50) })), 31)
  })

  it('refuses an authenticator sealed with another session key with 31', async () => {
    const other = await realm.ticket()
    const a = buildApReq(creds)
    const b = buildApReq(other)
    expectKrb(thrown(() => verifier().verify({ ...a.req, auth: b.req.auth })), 31)
  })

  it('refuses an expired ticket with KRB_AP_ERR_TKT_EXPIRED (32)', () => {
    const later = creds.endtime + SKEW + 1000
    const { req } = buildApReq(creds, { now: () => later })
    expectKrb(thrown(() => verifier({ now: () => later }).verify(req)), 32)
  })

  it('accepts a ticket just past its end within the clock skew (RFC 4120 §3.2.3)', () => {
    const later = creds.endtime + SKEW - 1000
    const { req } = buildApReq(creds, { now: () => later })
    expect(verifier({ now: () => later }).verify(req).client).to.match(/^alice@/)
  })

  it('refuses a ticket not yet valid beyond the skew with KRB_AP_ERR_TKT_NYV (33)', () => {
    const earlier = creds.starttime - SKEW - 1000
    const { req } = buildApReq(creds, { now: () => earlier })
    expectKrb(thrown(() => verifier({ now: () => earlier }).verify(req)), 33)
  })

  it('refuses a skewed authenticator with KRB_AP_ERR_SKEW (37)', () => {
    for (const off of [-6 * MIN, 6 * MIN]) {
      const { req } = buildApReq(creds, { now: () => Date.now() + off })
      const err = thrown(() => verifier().verify(req))
      expectKrb(err, 37)
      expect(err.message).to.match(off < 0 ? /behind/ : /ahead/)
    }
  })

  it('honours maxClockSkewMs', () => {
    const { req } = buildApReq(creds, { now: () => Date.now() + 2 * MIN })
    expectKrb(thrown(() => verifier({ maxClockSkewMs: MIN }).verify(req)), 37)
  })

  it('refuses an authenticator naming another client with KRB_AP_ERR_BADMATCH (36)', () => {
    const { req } = buildApReq(creds)
    const auth = sealPart(creds.sessionKey, KeyUsage.AP_REQ_AUTH, ApAuthenticator, {
      crealm: creds.crealm,
      cname: ['mallory'],
      ctime: Date.now(),
      cusec: 0,
    })
    expectKrb(thrown(() => verifier().verify({ ...req, auth })), 36)
  })

  it('refuses a key version the keytab lacks with KRB_AP_ERR_BADKEYVER (44)', () => {
    const { req } = buildApReq(creds)
    const err = thrown(() => verifier().verify({ ...req, ticket: { ...req.ticket, kvno: 7 } }))
    expectKrb(err, 44)
    expect(err.message).to.match(/version 7.*versions 1/)
  })

  it('refuses an authenticator older than the replay cache with 37, so the client retries (cold cache)', () => {
    const { req } = buildApReq(creds, { now: () => Date.now() - MIN })
    const err = thrown(() => new ServiceVerifier({ keytab, principal }).verify(req))
    expectKrb(err, 37)
    expect((err as KrbProtocolError).status).to.equal('REPLAY_COLD')
  })

  it('answers KDC_ERR_SVC_UNAVAILABLE (29) when the replay cache is full', () => {
    const v = verifier({ replayCache: new ReplayCache({ maxClockSkewMs: SKEW, maxEntries: 1 }) })
    v.verify(buildApReq(creds).req)
    expectKrb(thrown(() => v.verify(buildApReq(creds).req)), 29)
  })

  it('checks the channel binding when the service expects one', () => {
    const cb = new Uint8Array(32).fill(7)
    expect(verifier().verify(buildApReq(creds, { cksum: cb }).req, { cksum: cb }).cksum).to.deep.equal(cb)
    expectKrb(thrown(() => verifier().verify(buildApReq(creds, { cksum: cb }).req, { cksum: new Uint8Array(32) })), 41)
    expectKrb(thrown(() => verifier().verify(buildApReq(creds).req, { cksum: cb })), 41)
  })

  it('refuses a malformed AP_REQ with TSR_ERR_MALFORMED (100)', () => {
    const { req } = buildApReq(creds)
    expectKrb(thrown(() => verifier().verify({ ...req, extra: 1 } as ApReq)), ErrorCode.TSR_ERR_MALFORMED)
  })

  it('does not take a replay-cache entry for a refused request', () => {
    const replayCache = new ReplayCache({ maxClockSkewMs: SKEW })
    const { req } = buildApReq(creds)
    expectKrb(thrown(() => verifier({ replayCache }).verify(req, { cksum: new Uint8Array(1) })), 41)
    expect(replayCache.entries).to.equal(0)
  })

  it('resolves a principal without realm from a single-realm keytab', () => {
    expect(new ServiceVerifier({ keytab, principal: SERVICE }).verify(buildApReq(creds).req).client).to.match(/^alice@/)
  })

  describe('after the service key changes', () => {
    it('verifies tickets sealed with the old kvno, and new tickets use the new kvno', async () => {
      const old = await realm.ticket()
      expect(old.ticket.kvno).to.equal(1)
      const id = { realm: realm.kdc.realm, components: SERVICE.split('/') }
      const rec = await realm.kdc.db.update(
        id,
        (r) => {
          r.keys.push({ kvno: 2, key: randomKey(), createdAt: Date.now() })
        },
        'test',
      )
      const k2 = rec.keys.find((k) => k.kvno === 2)!
      const fresh = await realm.ticket()
      expect(fresh.ticket.kvno).to.equal(2)

      const file = path.join(realm.dir, 'rotated.keytab')
      await writeKeytab(file, new Keytab([realm.entry(realm.serviceKey), realm.entry(k2)]))
      const kt = await readKeytab(file)
      expect(kt.latest(`${SERVICE}@${realm.kdc.realm}`)?.kvno).to.equal(2)
      const v = new ServiceVerifier({ keytab: kt, principal })
      expect(v.verify(buildApReq(old).req).kvno).to.equal(1)
      expect(v.verify(buildApReq(fresh).req).kvno).to.equal(2)
      // A keytab not yet refreshed refuses the new ticket with a clear BADKEYVER.
      expectKrb(thrown(() => verifier().verify(buildApReq(fresh).req)), 44)
    })
  })
})

describe('buildApReq', () => {
  it('refuses a channel binding over 64 bytes with RangeError', () => {
    const creds = { ticket: {}, sessionKey: randomKey(), crealm: 'R', cname: ['a'] } as unknown as Credentials
    expect(thrown(() => buildApReq(creds, { cksum: new Uint8Array(65) }))).to.be.instanceOf(RangeError)
  })
})
