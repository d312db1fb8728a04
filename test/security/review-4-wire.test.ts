/**
 * Security review 4 (issue 9), the transport, client and service parts: the early request
 * bound into the resumption transcript (item 6), the ticket-key forward-secrecy bound
 * (item 11), AP replay across a service restart (item 4), AP_REP uniqueness (item 9),
 * look-alike principal names (item 10), and the design points on the per-peer connection
 * cap, the client's KDF memory cap and the reply realm checks.
 *
 * Every test here failed on the code reviewed (the commit before its fix).
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { expect } from 'chai'
import { KeyUsage } from '../../proto/key-usage.js'
import { type ApReq, EncKdcRepPart, type HsResume, type Message, TgsAuthenticator } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { ErrorCode } from '../../proto/error-codes.js'
import { checkConfirm, type KdfParams, passwordToKey, randomBytes, randomKey, resumeKeys, x25519KeyPair } from '../../src/crypto/index.js'
import { buildApReq, verifyApRep } from '../../src/client/ap.js'
import { type Credentials, KdcClient, type KdcClientOptions } from '../../src/client/kdc-client.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { Keytab, readKeytab } from '../../src/krb/keytab.js'
import { openPart, sealPart } from '../../src/krb/parts.js'
import type { RealmFile } from '../../src/krb/realm-file.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { ServiceVerifier, type ServiceVerifierOptions } from '../../src/service/verify-ap-req.js'
import { decodeMessage, plainFrame, SealedCodec } from '../../src/wire/channel.js'
import { connectChannel, openWithRequest } from '../../src/wire/client.js'
import { FrameReader } from '../../src/wire/frame-reader.js'
import { ResumptionStore, TicketIssuer } from '../../src/wire/resumption.js'
import { peerBucket, SecureServer } from '../../src/wire/server.js'
import { expectEcho, useResumptionFixture } from '../helpers/resumption-fixture.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { asKrbError, RawPeer, resumeHello } from '../helpers/wire-raw.js'
import { Cmd, rejectionOf, startTestServer, type TestServer, timeReq, waitFor } from '../helpers/wire-server.js'
import { type Realm, startRealm, thrown } from '../service/helpers.js'
import { ADMIN_PASSWORD, asReq, expectKrbError, useTestKdc } from '../helpers/kdc-helpers.js'

/**
 * A relay on 127.0.0.1 in front of `targetPort` that hands the client's first frame (the
 * HS_RESUME) to `rewrite` and forwards what it returns; everything else passes as is.
 */
async function startRewritingProxy(targetPort: number, rewrite: (m: HsResume) => HsResume) {
  const sockets = new Set<net.Socket>()
  const track = (s: net.Socket) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  }
  let rewritten = 0
  const srv = net.createServer((inbound) => {
    const outbound = net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true })
    track(inbound)
    track(outbound)
    const reader = new FrameReader(1 << 20)
    let first = true
    inbound.on('data', (b: Buffer) => {
      if (!first) {
        outbound.write(b)
        return
      }
      const frames = reader.push(b)
      if (frames.length === 0) return
      first = false
      const m = decodeMessage(frames[0]!)
      if (m.t === MsgType.HS_RESUME) {
        rewritten++
        outbound.write(plainFrame(rewrite(m)))
      } else outbound.write(plainFrame(m))
      for (const f of frames.slice(1)) {
        const len = Buffer.alloc(4)
        len.writeUInt32BE(f.length)
        outbound.write(Buffer.concat([len, f]))
      }
    })
    outbound.on('data', (b: Buffer) => inbound.write(b))
    inbound.on('close', () => outbound.destroy())
    outbound.on('close', () => inbound.destroy())
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address() as net.AddressInfo
  return {
    port,
    rewritten: () => rewritten,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        srv.close(() => r())
      }),
  }
}

describe('security review 4: the early request is bound into the resumption transcript (issue 9 item 6)', function () {
  this.timeout(15000)
  useProcessGuards()
  const fx = useResumptionFixture()

  /** A resuming server, a store holding a ticket for it (keyed by the proxy's port), and a rewriting proxy. */
  async function setup(rewrite: (m: HsResume) => HsResume) {
    const { ts } = await fx.resumingServer()
    const proxy = await startRewritingProxy(ts.port, rewrite)
    fx.cleanups.push(() => proxy.close())
    const store = new ResumptionStore()
    const opts = fx.channelOpts(ts, store, proxy.port)
    // First connection: a full handshake (nothing to rewrite), which leaves a ticket.
    await fx.ask(opts, 1)
    expect(store.size).to.equal(1)
    return { ts, proxy, store, opts }
  }

  it('a man in the middle who strips x from HS_RESUME fails the handshake (TESSERA_HANDSHAKE); the reply to the next request is never taken for the reply to x', async () => {
    const { ts, proxy, opts } = await setup((m) => {
      const { x: _x, ...rest } = m
      return rest
    })
    const handledBefore = ts.handled()
    const o = openWithRequest(opts, timeReq(Cmd.ECHO, 0, 2), { timeoutMs: 2000 })
    // What a client would do once the channel is up: queue its next request on it.
    const next = o.channel.then((ch) => {
      fx.defer(ch)
      return ch.request(timeReq(Cmd.ECHO, 0, 3), { timeoutMs: 2000 })
    })
    next.catch(() => {})
    const err = await rejectionOf(o.reply)
    expect(proxy.rewritten()).to.equal(1)
    expect(err, String(err)).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_HANDSHAKE)
    await rejectionOf(o.channel)
    await rejectionOf(next)
    // The server never saw x, and nothing the client sends is handled.
    expect(ts.handled()).to.equal(handledBefore)
  })

  it('a man in the middle who adds an x to an HS_RESUME without one fails the handshake (TESSERA_HANDSHAKE); nothing is handled', async () => {
    // An x sealed under another resumption's k_early (a recorded one): the server cannot open it,
    // and with x bound into h2 the client does not accept HS_RESUMED either.
    const foreignX = randomBytes(48)
    const { ts, proxy, opts } = await setup((m) => ({ ...m, x: foreignX }))
    const handledBefore = ts.handled()
    const err = await rejectionOf(connectChannel(opts))
    expect(proxy.rewritten()).to.equal(1)
    expect(err, String(err)).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_HANDSHAKE)
    expect(ts.handled()).to.equal(handledBefore)
  })

  it('server side: with x stripped, the server\'s keys are not the client\'s: its HS_RESUMED does not confirm and a frame under the client\'s keys closes the connection unhandled', async () => {
    const { ts, store, opts } = await setup((m) => m)
    const hello = resumeHello(ts.key.publicKey, fx.ticketOf(store, opts), { early: timeReq(Cmd.ECHO, 0, 6) })
    const { x: _x, ...stripped } = hello.msg
    const p = await RawPeer.connect(ts.port)
    fx.cleanups.push(() => p.destroy())
    await p.send(plainFrame(stripped))
    const resumed = await p.nextPlain()
    if (resumed.t !== MsgType.HS_RESUMED) throw new Error(`expected HS_RESUMED, got t=${resumed.t}`)
    // The client's view (x sent) does not confirm; the server's view (no x) does.
    const mine = resumeKeys(hello.h, hello.msg.x, resumed.n, hello.rms)
    expect(checkConfirm(mine.confirmKey, mine.keys.h, resumed.confirm)).to.equal(false)
    const theirs = resumeKeys(hello.h, undefined, resumed.n, hello.rms)
    expect(checkConfirm(theirs.confirmKey, theirs.keys.h, resumed.confirm)).to.equal(true)
    const handledBefore = ts.handled()
    await p.send(new SealedCodec(mine.keys, 'client').seal(timeReq(Cmd.ECHO, 0, 7)))
    // The server cannot open it: one sealed error (under its own keys) and close.
    const err = asKrbError(await p.nextSealed(new SealedCodec(theirs.keys, 'client')))
    expect(err.code).to.equal(ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    await p.closedWithin()
    expect(ts.handled()).to.equal(handledBefore)
  })

  it('an untouched resumption through the same relay still works, with the early request answered as its own reply', async () => {
    const { opts, store } = await setup((m) => m)
    const o = openWithRequest(opts, timeReq(Cmd.ECHO, 0, 4), { timeoutMs: 2000 })
    const ch = fx.defer(await o.channel)
    expect(ch.resumed).to.equal(true)
    const second = ch.request(timeReq(Cmd.ECHO, 0, 5), { timeoutMs: 2000 })
    expectEcho(await o.reply, 4)
    expectEcho(await second, 5)
    expect(await waitFor(() => store.resumed === 1)).to.equal(true)
  })
})

/** A hand-driven clock and timer queue for the TicketIssuer. */
function fakeTimers(start = 1_000_000) {
  let seq = 0
  const timers = new Map<number, { due: number; fn: () => void }>()
  const c = {
    t: start,
    now: () => c.t,
    setTimer(fn: () => void, delayMs: number): () => void {
      const id = ++seq
      timers.set(id, { due: c.t + delayMs, fn })
      return () => timers.delete(id)
    },
    pending: () => timers.size,
    /** Move the clock to `to`, firing every timer due on the way, in order. */
    advanceTo(to: number): void {
      for (;;) {
        let next: [number, { due: number; fn: () => void }] | undefined
        for (const e of timers) if (e[1].due <= to && (!next || e[1].due < next[1].due)) next = e
        if (!next) break
        timers.delete(next[0])
        c.t = Math.max(c.t, next[1].due)
        next[1].fn()
      }
      c.t = to
    },
  }
  return c
}

/** The bytes of the ticket key the issuer seals with right now (a reference: wiping zeroes them). */
function currentTicketKey(issuer: TicketIssuer): Uint8Array {
  return (issuer as unknown as { current: { key: Uint8Array } }).current.key
}

const isWiped = (key: Uint8Array) => key.every((b) => b === 0)

describe('security review 4: the resumption forward-secrecy window is 2 x lifetime (issue 9 item 11)', () => {
  // 61 s was the worst case of the old once-a-minute poll (a key lived almost 4 x lifetime); 600 s is the default.
  for (const lifetimeMs of [61_000, 100_000, 600_000]) {
    it(`an idle issuer wipes every ticket key no later than 2 x lifetime after it was made (lifetime ${lifetimeMs / 1000} s)`, () => {
      const clock = fakeTimers()
      const issuer = new TicketIssuer({ lifetimeMs, now: clock.now, setTimer: clock.setTimer })
      try {
        const keys: { key: Uint8Array; created: number }[] = []
        const start = clock.t
        // Ten lifetimes, in 1 s steps; a key seen at each step is noted with its creation time.
        for (let t = start; t <= start + 10 * lifetimeMs; t += 1000) {
          clock.advanceTo(t)
          const key = currentTicketKey(issuer)
          if (!keys.some((k) => k.key === key)) keys.push({ key, created: t })
          for (const k of keys) {
            if (t - k.created >= 2 * lifetimeMs) expect(isWiped(k.key), `key made at +${k.created - start} ms, now +${t - start} ms`).to.equal(true)
          }
        }
        expect(keys.length).to.be.greaterThan(8)
      } finally {
        issuer.close()
      }
    })
  }

  it('keeps a ticket redeemable for its whole lifetime across the scheduled rotations', () => {
    const clock = fakeTimers()
    const L = 60_000
    const issuer = new TicketIssuer({ lifetimeMs: L, windowMs: 1000, now: clock.now, setTimer: clock.setTimer })
    try {
      clock.advanceTo(clock.t + L - 1) // the first key is about to rotate
      const rms = randomBytes(32)
      const tk = issuer.issue(rms)
      clock.advanceTo(clock.t + L) // one rotation later: the ticket is exactly L old, under the previous key
      const r = issuer.redeem(tk, randomBytes(32), L)
      expect('rms' in r, JSON.stringify(r)).to.equal(true)
      clock.advanceTo(clock.t + 1) // its key (made 2 x L ago) is gone
      expect(issuer.redeem(tk, randomBytes(32), L + 1)).to.deep.equal({ refused: 'bad-ticket' })
    } finally {
      issuer.close()
    }
  })

  it('wipes both keys on a call after a stall of 2 x lifetime with no timer run (a blocked event loop)', () => {
    const clock = fakeTimers()
    const L = 60_000
    const issuer = new TicketIssuer({ lifetimeMs: L, now: clock.now, setTimer: clock.setTimer })
    try {
      const first = currentTicketKey(issuer)
      clock.t += 2 * L // no timer fired
      issuer.issue(randomBytes(32))
      expect(isWiped(first)).to.equal(true)
      expect(currentTicketKey(issuer)).to.not.equal(first)
    } finally {
      issuer.close()
    }
  })

  it('close() cancels the rotation timer', () => {
    const clock = fakeTimers()
    const issuer = new TicketIssuer({ lifetimeMs: 60_000, now: clock.now, setTimer: clock.setTimer })
    expect(clock.pending()).to.equal(1)
    issuer.close()
    expect(clock.pending()).to.equal(0)
  })
})

describe('security review 4: an AP_REQ accepted before a service restart is refused after it (issue 9 item 4)', function () {
  this.timeout(20000)
  const MIN = 60_000
  const SKEW = 5 * MIN
  let realm: Realm
  let creds: Credentials
  before(async () => {
    realm = await startRealm()
    creds = await realm.ticket()
  })
  after(async () => {
    await realm?.close()
  })

  /** The service's clock, ms (starts at the real time: the tickets are real). */
  const clock = { t: 0 }
  const now = () => clock.t
  const logged: string[] = []
  const logger = { warn: (msg: string) => logged.push(msg) }
  const verifiers: ServiceVerifier[] = []
  beforeEach(() => {
    clock.t = Date.now()
    logged.length = 0
  })
  afterEach(() => {
    for (const v of verifiers.splice(0)) v.close()
  })
  function service(opts: Omit<ServiceVerifierOptions, 'now' | 'logger'>): ServiceVerifier {
    const v = new ServiceVerifier({ now, logger, ...opts })
    verifiers.push(v)
    return v
  }
  /** A verifier that started long enough ago that no start rule applies any more. */
  function runningService(opts: Omit<ServiceVerifierOptions, 'now' | 'logger'>): ServiceVerifier {
    const t = clock.t
    clock.t = t - 2 * SKEW
    const v = service(opts)
    clock.t = t
    return v
  }
  /** An AP_REQ made at service time `at` by a client whose clock is `aheadMs` ahead of the service's. */
  const apReq = (aheadMs: number, at = clock.t) => buildApReq(creds, { now: () => at + aheadMs }).req

  /** The verdict of verifying `req` at service time `at`: 'accepted', or the error's status. */
  function verdictAt(v: ServiceVerifier, req: ApReq, at: number): string {
    clock.t = at
    try {
      v.verify(req)
      return 'accepted'
    } catch (err) {
      expect(err).to.be.instanceOf(KrbProtocolError)
      return (err as KrbProtocolError).status
    }
  }

  /** Every moment after the restart at which the recorded AP_REQ would still pass the skew check. */
  function replayTimes(accepted: number, restart: number, ctime: number): number[] {
    const out = [restart, restart + 1000, ctime - 1, ctime, ctime + 1, ctime + MIN, ctime + SKEW - 1, ctime + SKEW]
    return out.filter((t) => t >= restart && Math.abs(t - ctime) <= SKEW && t > accepted)
  }

  for (const aheadMs of [4 * MIN, 2_000, 500, SKEW]) {
    it(`keytab from a file: a client ${aheadMs / 1000} s ahead, accepted, then replayed after a restart at any time within the skew, is refused`, async () => {
      const file = await realm.keytabFile(`ahead-${aheadMs}.keytab`)
      const before = service({ keytab: await readKeytab(file) })
      const req = apReq(aheadMs)
      const accepted = clock.t
      expect(verdictAt(before, req, accepted)).to.equal('accepted')
      expect(verdictAt(before, req, accepted + 1)).to.equal('REPEAT')
      const st = await stat(`${file}.rcache`)
      expect(st.mode & 0o777).to.equal(0o600)
      // The restart: a new process (a new verifier over the same keytab file), 50 ms later.
      const restart = accepted + 50
      clock.t = restart
      const after = service({ keytab: await readKeytab(file) })
      for (const t of replayTimes(accepted, restart, accepted + aheadMs))
        expect(verdictAt(after, req, t), `replayed at ctime ${t - accepted - aheadMs} ms`).to.be.oneOf(['REPEAT', 'REPLAY_COLD'])
      // An honest client is served at once.
      expect(verdictAt(after, apReq(0, restart + 1), restart + 1)).to.equal('accepted')
    })

    it(`in-memory keytab (no replay file): a client ${aheadMs / 1000} s ahead, accepted, then replayed after a restart at any time within the skew, is refused`, () => {
      const keytab = new Keytab([realm.entry(realm.serviceKey)])
      const before = runningService({ keytab })
      const req = apReq(aheadMs)
      const accepted = clock.t
      expect(verdictAt(before, req, accepted)).to.equal('accepted')
      const restart = accepted + 50
      clock.t = restart
      const after = service({ keytab: new Keytab([realm.entry(realm.serviceKey)]) })
      for (const t of replayTimes(accepted, restart, accepted + aheadMs))
        expect(verdictAt(after, req, t), `replayed at ctime ${t - accepted - aheadMs} ms`).to.be.oneOf(['REPEAT', 'REPLAY_COLD'])
    })
  }

  it('in-memory keytab: the price is that authenticators dated within the skew after the start are refused as cold (documented)', () => {
    clock.t += 10_000
    const start = clock.t
    const v = service({ keytab: new Keytab([realm.entry(realm.serviceKey)]) })
    for (const at of [start, start + 1000, start + SKEW - 1]) expect(verdictAt(v, apReq(0, at), at)).to.equal('REPLAY_COLD')
    expect(verdictAt(v, apReq(0, start + SKEW), start + SKEW)).to.equal('accepted')
    // Judged by the authenticator's date: a client a minute behind is refused a minute longer.
    expect(verdictAt(v, apReq(-MIN, start + SKEW + 30_000), start + SKEW + 30_000)).to.equal('REPLAY_COLD')
    expect(verdictAt(v, apReq(-MIN, start + SKEW + MIN + 2000), start + SKEW + MIN + 2000)).to.equal('accepted')
  })

  it('replayCacheFile: false with a keytab file behaves as in memory; an explicit path is used with an in-memory keytab', async () => {
    const file = await realm.keytabFile('explicit.keytab')
    const start = clock.t
    const none = service({ keytab: await readKeytab(file), replayCacheFile: false })
    expect(verdictAt(none, apReq(0, start + 1000), start + 1000)).to.equal('REPLAY_COLD')
    expect(((await rejectionOf(stat(`${file}.rcache`))) as NodeJS.ErrnoException).code).to.equal('ENOENT')
    const own = path.join(realm.dir, 'own.rcache')
    clock.t = start
    const v = service({ keytab: new Keytab([realm.entry(realm.serviceKey)]), replayCacheFile: own })
    const req = apReq(3 * MIN, start + 1000)
    expect(verdictAt(v, req, start + 1000)).to.equal('accepted')
    expect((await stat(own)).mode & 0o777).to.equal(0o600)
    clock.t = start + 2000
    const again = service({ keytab: new Keytab([realm.entry(realm.serviceKey)]), replayCacheFile: own })
    expect(verdictAt(again, req, start + 3 * MIN)).to.equal('REPEAT')
  })

  it('a corrupt replay file (garbage records, a torn last record) is read past: a warning, valid records still refuse their replay, honest clients are served', async () => {
    const file = await realm.keytabFile('corrupt.keytab')
    const rcache = `${file}.rcache`
    const first = service({ keytab: await readKeytab(file) })
    const req = apReq(4 * MIN)
    const accepted = clock.t
    expect(verdictAt(first, req, accepted)).to.equal('accepted')
    first.close()
    const good = await readFile(rcache)
    // Garbage lines around the good record, and a torn record at the end.
    await writeFile(
      rcache,
      Buffer.concat([
        good,
        Buffer.from('zz not a record\n\n0123 1\nffffffffffffffffffffffffffffffff 99999999999999999999999\n'),
        randomBytes(64).map((b) => (b === 10 ? 11 : b)),
        Buffer.from('\nabcdef0123456789abcdef0123456789 17'),
      ]),
    )
    clock.t = accepted + 50
    const after = service({ keytab: await readKeytab(file) })
    expect(logged.join('\n')).to.match(/replay file/i)
    expect(verdictAt(after, req, accepted + 4 * MIN + 10)).to.equal('REPEAT')
    expect(verdictAt(after, apReq(0, accepted + 2000), accepted + 2000)).to.equal('accepted')
    // The file was rewritten without the junk.
    expect((await readFile(rcache)).toString('latin1')).to.not.match(/zz not a record/)
  })

  for (const [what, make] of [
    ['random bytes (no header)', (f: string) => writeFile(f, randomBytes(4096))],
    ['an empty file', (f: string) => writeFile(f, '')],
    ['a directory', (f: string) => mkdir(f)],
    ['too large (21 MB)', (f: string) => writeFile(f, `tessera-rcache-v1\n${'00112233445566778899aabbccddeeff 1\n'.repeat(600_000)}`)],
  ] as const) {
    it(`a replay file that is ${what} does not stop the service: a warning, then the safe start (cold within the skew), then service`, async () => {
      const file = await realm.keytabFile(`bad-${what.replace(/\W+/g, '-')}.keytab`)
      const before = runningService({ keytab: await readKeytab(file), replayCacheFile: false })
      const req = apReq(4 * MIN)
      const accepted = clock.t
      expect(verdictAt(before, req, accepted)).to.equal('accepted')
      await make(`${file}.rcache`)
      clock.t = accepted + 50
      const after = service({ keytab: await readKeytab(file) })
      expect(logged.join('\n')).to.match(/replay file/i)
      for (const t of replayTimes(accepted, accepted + 50, accepted + 4 * MIN)) expect(verdictAt(after, req, t)).to.be.oneOf(['REPEAT', 'REPLAY_COLD'])
      expect(verdictAt(after, apReq(0, accepted + 50 + SKEW), accepted + 50 + SKEW)).to.equal('accepted')
    })
  }
})

describe('security review 4: a mutual-auth AP_REP answers one AP_REQ only (issue 9 item 9)', function () {
  this.timeout(20000)
  let realm: Realm
  let creds: Credentials
  before(async () => {
    realm = await startRealm()
    creds = await realm.ticket()
  })
  after(async () => {
    await realm?.close()
  })

  it('two AP_REQs made with one ticket in the same millisecond (and microsecond) do not accept each other\'s AP_REP', () => {
    const T = Date.now()
    const at = () => T // a clock that stands still: both authenticators in one millisecond
    const a = buildApReq(creds, { mutual: true, now: at })
    const b = buildApReq(creds, { mutual: true, now: at })
    expect([a.ctime, a.cusec]).to.not.deep.equal([b.ctime, b.cusec])
    const v = new ServiceVerifier({
      keytab: new Keytab([realm.entry(realm.serviceKey)]),
      now: at,
      replayCache: new ReplayCache({ maxClockSkewMs: 300_000, now: () => T - 1 }),
    })
    const repA = v.verify(a.req).apRep!
    const repB = v.verify(b.req).apRep!
    expect(verifyApRep(repA, a)).to.be.an('object')
    expect(verifyApRep(repB, b)).to.be.an('object')
    for (const [rep, pending] of [
      [repA, b],
      [repB, a],
    ] as const) {
      const err = thrown(() => verifyApRep(rep, pending))
      expect(err).to.be.instanceOf(KrbProtocolError)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_MUT_FAIL)
    }
  })

  it('authenticator times are strictly increasing within a process, for any clock', () => {
    const T = Date.now()
    let last: [number, number] = [0, 0]
    for (const now of [() => T, () => T, () => T + 0.0004, () => T - 0.5, () => T + 1]) {
      for (let i = 0; i < 600; i++) {
        const p = buildApReq(creds, { now })
        expect(p.cusec).to.be.within(0, 999)
        expect(p.ctime > last[0] || (p.ctime === last[0] && p.cusec > last[1]), `${p.ctime}.${p.cusec} after ${last}`).to.equal(true)
        last = [p.ctime, p.cusec]
      }
    }
    // A clock stepped back by more than a second is followed (not pushed ahead of it).
    const back = buildApReq(creds, { now: () => T - 10_000 })
    expect(back.ctime).to.equal(T - 10_000)
  })
})

describe('security review 4: look-alike principal names (issue 9 item 10)', () => {
  useProcessGuards()
  const t = useTestKdc()

  for (const [what, cname] of [
    ['"ad\\u200Bmin" (zero-width space)', ['ad\u200bmin']],
    ['"admin\\u00AD" (soft hyphen)', ['admin\u00ad']],
    ['"\\uFEFFadmin" (byte order mark)', ['\ufeffadmin']],
    ['"admin\\u{E0041}" (tag character)', ['admin\u{e0041}']],
    ['"admin/\\u2028x" (line separator)', ['admin', '\u2028x']],
  ] as const) {
    it(`the KDC answers an AS_REQ for ${what} with KDC_ERR_C_PRINCIPAL_UNKNOWN (6, bad name) and keeps serving`, async () => {
      const ch = await t.channel('as')
      expectKrbError(await ch.request(asReq([...cname])), ErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN)
      // The same connection, and the real admin, still work.
      const m = await ch.request(asReq(['admin']))
      expectKrbError(m, ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    })
  }

  it('the client refuses such a name itself, before sending anything, with TESSERA_BAD_NAME naming the code point', async () => {
    const c = t.client()
    const err = await rejectionOf(c.login('ad\u200bmin', ADMIN_PASSWORD))
    expect(err, String(err)).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_BAD_NAME)
    expect((err as TesseraError).message).to.match(/invisible or line-separator character U\+200B at position 3/)
    // and the admin logs in
    expect((await c.login('admin', ADMIN_PASSWORD)).cname).to.deep.equal(['admin'])
  })

  it('no principal with such a name can be created', async () => {
    const err = await rejectionOf(t.kdc.addPrincipal('ad\u200bmin', { password: 'correct horse battery staple 7' }))
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_BAD_NAME)
  })

  it('logs no internal error for them', () => {
    const bad = t.opsErrors.filter((l) => /internal error|not a valid message/.test(l))
    expect(bad, bad.join('\n')).to.deep.equal([])
  })
})

describe('security review 4: the per-peer connection cap counts an IPv6 /64 as one peer (design point)', () => {
  useProcessGuards()
  for (const [address, bucket] of [
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['::FFFF:192.0.2.7', '192.0.2.7'],
    ['::ffff:c000:207', '192.0.2.7'],
    ['0:0:0:0:0:ffff:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::1', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::192.0.2.7', '0:0:0:0::/64'],
    ['not an address', 'not an address'],
    ['1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8:9'],
  ] as const) {
    it(`puts ${address} in bucket ${bucket}`, () => {
      expect(peerBucket(address)).to.equal(bucket)
    })
  }

  it('puts every address of one /64 in one bucket and neighbouring /64s in others', () => {
    const b = peerBucket('2001:db8:aa:bb::1')
    for (const a of ['2001:db8:aa:bb::2', '2001:db8:aa:bb:1234:5678:9abc:def0', '2001:db8:aa:bb:ffff::']) expect(peerBucket(a)).to.equal(b)
    for (const a of ['2001:db8:aa:bc::1', '2001:db8:ab:bb::1']) expect(peerBucket(a)).to.not.equal(b)
  })

  it('a SecureServer on ::1 caps connections from [::1] with TSR_ERR_BUSY', async function () {
    let ts: TestServer
    try {
      ts = await startTestServer({ host: '::1', maxConnectionsPerPeer: 2 })
    } catch {
      this.skip() // no IPv6 loopback here
    }
    try {
      const opts = { host: '::1', port: ts.port, serverKey: ts.key.publicKey, handshakeTimeoutMs: 2000 }
      const a = await connectChannel(opts)
      const b = await connectChannel(opts)
      const err = await rejectionOf(connectChannel(opts))
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.TSR_ERR_BUSY)
      a.close()
      b.close()
    } finally {
      await ts.close()
    }
  })
})

/**
 * A stub KDC on one port (every listener) for realm STUB.TEST that knows one password: it
 * asks for pre-authentication with `kdf`, then answers AS and TGS requests with replies
 * sealed correctly, but with the realms `tamper` gives.
 */
async function startStubKdc(o: { kdf?: KdfParams; srealm?: string; ticketRealm?: string; tgsSrealm?: string } = {}) {
  const REALM = 'STUB.TEST'
  const PASSWORD = 'stub password 7!'
  const salt = `${REALM}alice`
  const kdf = o.kdf ?? { alg: 'scrypt', N: 1024, r: 8, p: 1 }
  const sessionKey = randomKey()
  const derivations = { count: 0 }
  const handler = async (msg: Message): Promise<Message> => {
    const now = Date.now()
    const times = { flags: 0, authtime: now, starttime: now, endtime: now + 3_600_000 }
    if (msg.t === MsgType.AS_REQ) {
      if (msg.padata.length === 0)
        throw Object.assign(new KrbProtocolError(ErrorCode.KDC_ERR_PREAUTH_REQUIRED, 'PREAUTH_REQUIRED', { message: 'pre-authentication required' }), {
          edata: { salt, kdf },
        })
      derivations.count++
      const key = await passwordToKey(PASSWORD, salt, kdf)
      const srealm = o.srealm ?? REALM
      return {
        v: PROTOCOL_VERSION,
        t: MsgType.AS_REP,
        crealm: REALM,
        cname: msg.cname,
        kvno: 1,
        ticket: { realm: o.ticketRealm ?? REALM, sname: msg.sname, kvno: 1, enc: randomBytes(64) },
        enc: sealPart(key, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, { key: sessionKey, nonce: msg.nonce, ...times, srealm, sname: msg.sname }),
      }
    }
    if (msg.t === MsgType.TGS_REQ) {
      const auth = openPart(sessionKey, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, msg.auth)
      return {
        v: PROTOCOL_VERSION,
        t: MsgType.TGS_REP,
        crealm: REALM,
        cname: auth.cname,
        ticket: { realm: REALM, sname: auth.sname, kvno: 1, enc: randomBytes(64) },
        enc: sealPart(sessionKey, KeyUsage.TGS_REP_ENCPART_SESSKEY, EncKdcRepPart, {
          key: randomKey(),
          nonce: auth.nonce,
          ...times,
          srealm: o.tgsSrealm ?? REALM,
          sname: auth.sname,
        }),
      }
    }
    throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE')
  }
  const key = x25519KeyPair()
  const server = new SecureServer({ staticKey: key, host: '127.0.0.1', port: 0, handshakeTimeoutMs: 2000 }, handler)
  const { port } = await server.listen()
  const realm: RealmFile = {
    realm: REALM,
    kdcs: [{ host: '127.0.0.1', as: port, tgs: port, time: port, admin: port }],
    transportKey: key.publicKey,
    signingKey: randomBytes(32),
    maxClockSkewMs: 300_000,
  }
  return { realm, PASSWORD, derivations, close: () => server.close() }
}

describe('security review 4: what a client accepts from a KDC (design points)', function () {
  this.timeout(20000)
  useProcessGuards()
  const cleanups: (() => unknown)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  async function stub(o: Parameters<typeof startStubKdc>[0] = {}) {
    const s = await startStubKdc(o)
    cleanups.push(() => s.close())
    return s
  }
  function client(s: { realm: RealmFile }, opts: KdcClientOptions = {}) {
    const c = new KdcClient(s.realm, { timeoutMs: 10_000, resumption: false, ...opts })
    cleanups.push(() => c.close())
    return c
  }

  it('an honest stub is accepted (login, then a service ticket)', async () => {
    const s = await stub()
    const c = client(s)
    const tgt = await c.login('alice', s.PASSWORD)
    expect(tgt.srealm).to.equal('STUB.TEST')
    expect((await c.getServiceTicket(tgt, 'svc/host')).srealm).to.equal('STUB.TEST')
  })

  for (const [what, kdf] of [
    ['1 GiB (N = 2^20, r = 8)', { alg: 'scrypt', N: 1 << 20, r: 8, p: 1 }],
    ['4 GiB (N = 2^20, r = 32)', { alg: 'scrypt', N: 1 << 20, r: 32, p: 1 }],
    ['512 MiB (N = 2^19, r = 8)', { alg: 'scrypt', N: 1 << 19, r: 8, p: 1 }],
  ] as const) {
    it(`a KDC hinting scrypt parameters needing ${what} fails the login with TESSERA_KDF_LIMIT before any derivation`, async () => {
      const s = await stub({ kdf })
      const err = await rejectionOf(client(s).login('alice', s.PASSWORD))
      expect(err, String(err)).to.be.instanceOf(TesseraError)
      expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_KDF_LIMIT)
      expect((err as TesseraError).message).to.match(/MiB/)
      expect(s.derivations.count).to.equal(0)
    })
  }

  it('maxKdfMemoryBytes lowers (or raises) the cap', async () => {
    const kdf = { alg: 'scrypt', N: 1 << 14, r: 8, p: 1 } as const // 16 MiB
    const s = await stub({ kdf })
    const err = await rejectionOf(client(s, { maxKdfMemoryBytes: 8 * 1024 * 1024 }).login('alice', s.PASSWORD))
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_KDF_LIMIT)
    expect((await client(s, { maxKdfMemoryBytes: 16 * 1024 * 1024 }).login('alice', s.PASSWORD)).srealm).to.equal('STUB.TEST')
  })

  for (const [what, o] of [
    ['an AS_REP whose sealed srealm is another realm', { srealm: 'EVIL.TEST' }],
    ["an AS_REP whose ticket's realm is another realm", { ticketRealm: 'EVIL.TEST' }],
  ] as const) {
    it(`refuses ${what} with TESSERA_BAD_REPLY`, async () => {
      const s = await stub(o)
      const err = await rejectionOf(client(s).login('alice', s.PASSWORD))
      expect(err, String(err)).to.be.instanceOf(TesseraError)
      expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_BAD_REPLY)
      expect((err as TesseraError).message).to.match(/realm/)
    })
  }

  it('refuses a TGS_REP whose sealed srealm is another realm with TESSERA_BAD_REPLY', async () => {
    const s = await stub({ tgsSrealm: 'EVIL.TEST' })
    const c = client(s)
    const tgt = await c.login('alice', s.PASSWORD)
    const err = await rejectionOf(c.getServiceTicket(tgt, 'svc/host'))
    expect(err, String(err)).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_BAD_REPLY)
  })
})
