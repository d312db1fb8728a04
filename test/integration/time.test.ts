/**
 * Time service against a real in-memory KDC on 127.0.0.1: syncTime from skewed clients,
 * skew errors and self-recovery, forged/replayed/impossible answers from a fake time
 * server, many clients at once, malformed requests, a host clock stepped back, kauth time.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message, TimeRep } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { Exit } from '../../src/cli/common.js'
import { KdcClient, type KdcClientOptions } from '../../src/client/kdc-client.js'
import { buildApReq, verifyApRep } from '../../src/client/ap.js'
import { syncTime } from '../../src/client/time-sync.js'
import type { KeyVersion } from '../../src/db/types.js'
import { Keytab } from '../../src/krb/keytab.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { ServiceVerifier } from '../../src/service/verify-ap-req.js'
import { ed25519KeyPair, randomBytes, sign } from '../../src/crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { startKdc } from '../../src/kdc/kdc.js'
import { ServedClock } from '../../src/kdc/time-req.js'
import type { RealmFile } from '../../src/krb/realm-file.js'
import { timeSignatureInput } from '../../src/krb/time-sig.js'
import { type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { type RequestHandler, SecureServer } from '../../src/wire/server.js'
import { type CliKdc, PASSWORDS, runKauth, startCliKdc, writeRealm } from '../helpers/cli-kdc.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const MIN = 60_000
const HOUR = 60 * MIN
const SERVICE = 'HTTP/www.example.test'
// Date.now() has 1 ms resolution on both sides (client t1 and the served clock's anchor).
const EPS_MS = 2

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection, but the promise resolved')
}

async function expectTessera(p: Promise<unknown>, code: string): Promise<TesseraError> {
  const err = await rejection(p)
  expect(err, String(err)).to.be.instanceOf(TesseraError)
  expect((err as TesseraError).code, (err as Error).message).to.equal(code)
  return err as TesseraError
}

describe('time service (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  let k: CliKdc
  const clients: KdcClient[] = []
  const channels: ClientChannel[] = []
  const servers: SecureServer[] = []

  const client = (opts: KdcClientOptions = {}, realm: RealmFile = k.kdc.realmFile) => {
    const c = new KdcClient(realm, { connectTimeoutMs: 2000, timeoutMs: 10000, ...opts })
    clients.push(c)
    return c
  }
  const timeChannel = async (port = k.kdc.addresses.time.port) => {
    const ch = await connectChannel({ host: '127.0.0.1', port, serverKey: k.kdc.realmFile.transportKey })
    channels.push(ch)
    return ch
  }
  const timeReq = (nonce: Uint8Array = randomBytes(32)) => ({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce }) as const
  /** A time server with the realm's transport key (clients connect happily) answering with `handler`. */
  const fakeTimeServer = async (handler: RequestHandler) => {
    const s = new SecureServer({ staticKey: k.kdc.context.realm.transportKey, name: 'fake-time' }, handler)
    servers.push(s)
    const { port } = await s.listen()
    const kdc0 = k.kdc.realmFile.kdcs[0]!
    return { ...k.kdc.realmFile, kdcs: [{ ...kdc0, time: port }] }
  }
  const realSigningSeed = () => k.kdc.context.realm.signingKey.secretKey
  const signedRep = (nonce: Uint8Array, recv: number, xmit: number, radius: number, seed: Uint8Array): TimeRep => ({
    v: PROTOCOL_VERSION,
    t: MsgType.TIME_REP,
    nonce,
    recv,
    xmit,
    radius,
    sig: sign(timeSignatureInput(nonce, recv, xmit, radius), seed),
  })

  let svcKey: KeyVersion
  before(async () => {
    k = await startCliKdc()
    svcKey = await k.kdc.addPrincipal(SERVICE, {})
  })
  afterEach(() => {
    for (const c of clients.splice(0)) c.close()
    for (const ch of channels.splice(0)) ch.close()
  })
  after(async () => {
    await Promise.all(servers.map((s) => s.close()))
    await k?.close()
  })

  describe('syncTime from a skewed client', () => {
    for (const [label, skew] of [
      ['+2 h', 2 * HOUR],
      ['-37 min', -37 * MIN],
    ] as const) {
      it(`measures a ${label} clock within the theoretical bound and then authenticates`, async () => {
        // The service starts first: its replay cache refuses authenticators older than itself.
        const keytab = new Keytab([{ realm: k.kdc.realm, name: SERVICE.split('/'), kvno: svcKey.kvno, key: svcKey.key, createdAt: 0 }])
        // In-memory keytab, no replay file: a plain replay cache (this test is not about restarts).
        const verifier = new ServiceVerifier({ keytab, replayCache: new ReplayCache({ maxClockSkewMs: 300_000 }) })
        await new Promise((r) => setTimeout(r, 20))
        const c = client({ now: () => Date.now() + skew, adjustClockOnSkew: false })
        const s = await syncTime(c, { samples: 4 })
        expect(s.verified).to.equal(true)
        expect(s.samples).to.equal(4)
        expect(s.delayMs).to.be.at.least(0)
        const radiusMs = s.boundMs - s.delayMs / 2
        expect(radiusMs).to.be.within(0.999, 1.001) // the KDC's base radius, 1 ms
        // |measured - true offset| <= delay/2 + radius (NTP bound), true offset = -skew
        expect(Math.abs(s.offsetMs + skew)).to.be.at.most(s.delayMs / 2 + radiusMs + EPS_MS)
        expect(c.clockOffsetMs).to.equal(s.offsetMs)
        expect(Math.abs(c.now() - Date.now())).to.be.at.most(s.boundMs + EPS_MS + 5)
        expect(Math.abs(s.serverTimeMs - Date.now())).to.be.below(1000)

        const tgt = await c.login('alice', PASSWORDS.alice)
        expect(tgt.cname).to.deep.equal(['alice'])
        const st = await c.getServiceTicket(tgt, SERVICE)
        expect(st.sname).to.deep.equal(SERVICE.split('/'))

        // The AP exchange with the service (whose clock is right) uses the corrected clock too.
        const raw = buildApReq(st, { now: () => Date.now() + skew })
        expect(() => verifier.verify(raw.req)).to.throw(KrbProtocolError).with.property('code', ErrorCode.KRB_AP_ERR_SKEW)
        const pending = buildApReq(st, { mutual: true, now: () => c.now() })
        const v = verifier.verify(pending.req)
        expect(v.client).to.equal(`alice@${k.kdc.realm}`)
        expect(() => verifyApRep(v.apRep!, pending)).to.not.throw()
      })
    }

    it('leaves the offset alone with apply: false', async () => {
      const c = client({ now: () => Date.now() + HOUR })
      const s = await syncTime(c, { samples: 1, apply: false })
      expect(Math.abs(s.offsetMs + HOUR)).to.be.at.most(s.boundMs + EPS_MS)
      expect(c.clockOffsetMs).to.equal(0)
    })
  })

  describe('clock skew without sync', () => {
    it('fails a +2 h client with code 37 saying how far ahead it is (adjustClockOnSkew: false)', async () => {
      const c = client({ now: () => Date.now() + 2 * HOUR, adjustClockOnSkew: false })
      const err = await rejection(c.login('alice', PASSWORDS.alice))
      expect(err).to.be.instanceOf(KrbProtocolError)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_SKEW)
      expect((err as KrbProtocolError).code).to.equal(37)
      expect((err as Error).message).to.contain('your clock is 2 h 0 min ahead of the KDC')
      expect(c.clockOffsetMs).to.equal(0)
    })

    it('fails a -37 min client saying it is behind', async () => {
      const c = client({ now: () => Date.now() - 37 * MIN, adjustClockOnSkew: false })
      const err = await rejection(c.login('alice', PASSWORDS.alice))
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_SKEW)
      expect((err as Error).message).to.contain('your clock is 37 min behind the KDC')
    })

    it('self-recovers on the first login with the default adjustClockOnSkew', async () => {
      const c = client({ now: () => Date.now() + 2 * HOUR })
      const tgt = await c.login('alice', PASSWORDS.alice)
      expect(tgt.cname).to.deep.equal(['alice'])
      expect(Math.abs(c.clockOffsetMs + 2 * HOUR)).to.be.below(1000)
      const st = await c.getServiceTicket(tgt, SERVICE)
      expect(st.sname).to.deep.equal(SERVICE.split('/'))
    })

    it('self-recovers in the TGS exchange when the clock jumps after login', async () => {
      let skew = 0
      const c = client({ now: () => Date.now() + skew })
      const tgt = await c.login('bob', PASSWORDS.bob)
      skew = -3 * HOUR
      const st = await c.getServiceTicket(tgt, SERVICE)
      expect(st.sname).to.deep.equal(SERVICE.split('/'))
      expect(Math.abs(c.clockOffsetMs - 3 * HOUR)).to.be.below(1000)
    })
  })

  describe('forged answers', () => {
    it('rejects an answer signed with another key (TESSERA_TIME)', async () => {
      const other = ed25519KeyPair()
      const clock = new ServedClock()
      const realm = await fakeTimeServer((msg) => {
        if (msg.t !== MsgType.TIME_REQ) throw new Error('unexpected')
        const a = clock.now()
        const b = clock.now()
        return signedRep(msg.nonce, a.us, b.us, 1000, other.secretKey)
      })
      const c = client({}, realm)
      const err = await expectTessera(syncTime(c, { samples: 2 }), TesseraErrorCode.TESSERA_TIME)
      expect(err.message).to.contain('signature')
      expect(c.clockOffsetMs).to.equal(0)
    })

    it('rejects a replayed genuine answer: wrong nonce (TESSERA_TIME)', async () => {
      const ch = await timeChannel()
      const genuine = await ch.request(timeReq())
      expect(genuine.t).to.equal(MsgType.TIME_REP)
      const realm = await fakeTimeServer(() => genuine)
      const c = client({}, realm)
      const err = await expectTessera(syncTime(c, { samples: 1 }), TesseraErrorCode.TESSERA_TIME)
      expect(err.message).to.contain('nonce')
      expect(c.clockOffsetMs).to.equal(0)
    })

    it('rejects a validly signed answer transmitted before it was received (TESSERA_TIME)', async () => {
      const realm = await fakeTimeServer((msg) => {
        if (msg.t !== MsgType.TIME_REQ) throw new Error('unexpected')
        const now = Date.now() * 1000
        return signedRep(msg.nonce, now, now - 5000, 1000, realSigningSeed())
      })
      const err = await expectTessera(syncTime(client({}, realm), { samples: 1 }), TesseraErrorCode.TESSERA_TIME)
      expect(err.message).to.contain('transmitted before received')
    })

    it('rejects an answer of the wrong type (TESSERA_TIME)', async () => {
      const realm = await fakeTimeServer(() => ({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: randomBytes(32) }) as Message)
      await expectTessera(syncTime(client({}, realm), { samples: 1 }), TesseraErrorCode.TESSERA_TIME)
    })

    it('accepts an honest fake server signing with the realm key (the fixture itself is sound)', async () => {
      const clock = new ServedClock()
      const realm = await fakeTimeServer((msg) => {
        if (msg.t !== MsgType.TIME_REQ) throw new Error('unexpected')
        const a = clock.now()
        const b = clock.now()
        return signedRep(msg.nonce, a.us, b.us, 1000, realSigningSeed())
      })
      const s = await syncTime(client({}, realm), { samples: 2 })
      expect(s.verified).to.equal(true)
    })

    it('makes kauth time fail on a forged answer', async () => {
      const realm = await fakeTimeServer((msg) => {
        if (msg.t !== MsgType.TIME_REQ) throw new Error('unexpected')
        const now = Date.now() * 1000
        return signedRep(msg.nonce, now, now + 1, 1000, ed25519KeyPair().secretKey)
      })
      const file = await writeRealm(k.dir, realm, 'forged-time.json')
      const r = await runKauth(['time', '--json'], { ...k.env(), TESSERA_REALM_FILE: file })
      expect(r.code).to.equal(Exit.FAILURE)
      expect(r.stdout).to.equal('')
      expect(r.stderr).to.contain('signature')
    })
  })

  describe('load and hostile requests', () => {
    it('serves 50 concurrent syncTime calls, all verified and consistent', async function () {
      this.timeout(30000)
      const results = await Promise.all(Array.from({ length: 50 }, () => syncTime(client(), { samples: 2 })))
      for (const s of results) {
        expect(s.verified).to.equal(true)
        expect(Math.abs(s.offsetMs)).to.be.at.most(s.boundMs + EPS_MS)
      }
    })

    it('answers a TIME_REQ with a short nonce with an error, and other clients are unaffected', async () => {
      const ch = await timeChannel()
      const bad = { ...timeReq(), nonce: randomBytes(16) } as Message
      const [reply, s] = await Promise.all([ch.request(bad).catch((e: unknown) => e), syncTime(client(), { samples: 3 })])
      if (reply instanceof KrbProtocolError) expect(reply.code).to.equal(ErrorCode.TSR_ERR_MALFORMED)
      else {
        expect((reply as Message).t, JSON.stringify(reply)).to.equal(MsgType.KRB_ERROR)
        expect((reply as Extract<Message, { t: 30 }>).code).to.equal(ErrorCode.TSR_ERR_MALFORMED)
      }
      expect(s.verified).to.equal(true)
      // The listener still serves new connections.
      const ch2 = await timeChannel()
      const ok = await ch2.request(timeReq())
      expect(ok.t).to.equal(MsgType.TIME_REP)
      expect((await syncTime(client(), { samples: 1 })).verified).to.equal(true)
    })

    it('refuses other message types on the time listener', async () => {
      const ch = await timeChannel()
      const reply = await ch.request({
        v: PROTOCOL_VERSION,
        t: MsgType.AS_REQ,
        cname: ['alice'],
        realm: k.kdc.realm,
        sname: ['krbtgt', k.kdc.realm],
        till: 0,
        nonce: 1,
        options: 0,
        padata: [],
      })
      expect(reply.t).to.equal(MsgType.KRB_ERROR)
      expect((reply as Extract<Message, { t: 30 }>).code).to.equal(ErrorCode.KRB_AP_ERR_MSG_TYPE)
      const again = await ch.request(timeReq())
      expect(again.t).to.equal(MsgType.TIME_REP)
    })
  })

  describe('a KDC whose host clock steps back', () => {
    it('keeps serving a time that never goes back, with a radius that covers the step', async () => {
      let hostOffsetMs = 0
      const kdc = await startKdc({
        config: { kdf: { N: 1024 }, log: { console: false }, preauthFailureFloorMs: 20 },
        log: false,
        timeClock: { hostNowUs: () => (Date.now() + hostOffsetMs) * 1000 },
      })
      try {
        const c = client({}, kdc.realmFile)
        const before = await syncTime(c, { samples: 2, apply: false })
        expect(Math.abs(before.offsetMs)).to.be.at.most(before.boundMs + EPS_MS)
        hostOffsetMs = -HOUR
        let last = before.serverTimeMs
        for (let i = 0; i < 5; i++) {
          const s = await syncTime(c, { samples: 1, apply: false, exchangeFallback: false })
          expect(s.source).to.equal('time')
          expect(s.serverTimeMs).to.be.greaterThan(last)
          last = s.serverTimeMs
          // The served clock did not follow the host back: it stays near real time, slewing.
          expect(Math.abs(s.offsetMs)).to.be.below(1000)
          expect(s.boundMs).to.be.at.least(HOUR - 1000)
        }
        // By default the client notices the radius and reads the exchanges' clock instead.
        const s = await syncTime(c, { samples: 1, apply: false })
        expect(s.source).to.equal('exchange')
        expect(s.radiusMs).to.be.at.least(HOUR - 1000)
      } finally {
        await kdc.close()
      }
    })
  })

  describe('kauth time', () => {
    it('prints offset, delay, bound and verified: true with --json', async () => {
      const r = await runKauth(['time', '--json'], k.env())
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const j = JSON.parse(r.stdout) as { serverTime: string; offsetMs: number; delayMs: number; boundMs: number; verified: boolean }
      expect(Object.keys(j).sort()).to.deep.equal(['boundMs', 'delayMs', 'maxClockSkewMs', 'offsetMs', 'serverTime', 'verdict', 'verified'])
      expect(j.verified).to.equal(true)
      expect(j.delayMs).to.be.at.least(0)
      expect(j.boundMs).to.be.at.least(j.delayMs / 2)
      expect(Math.abs(j.offsetMs)).to.be.at.most(j.boundMs + EPS_MS)
      expect(Math.abs(Date.parse(j.serverTime) - Date.now())).to.be.below(5000)
    })

    it('prints a readable report without --json', async () => {
      const r = await runKauth(['time', '--samples', '2'], k.env())
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.match(/^server time: \S+Z\noffset: +-?[\d.]+ ms \(add to this clock\)\ndelay: +[\d.]+ ms\nbound: +±[\d.]+ ms\nverified: +yes\nverdict: +\S[^\n]*\n$/)
    })
  })
})
