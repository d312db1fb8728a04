/** ServedClock with injected host and monotonic clocks; processTimeReq answers and signatures. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { TimeReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { ed25519KeyPair, randomBytes, verify } from '../../src/crypto/index.js'
import { KrbProtocolError } from '../../src/errors.js'
import { processTimeReq, ServedClock } from '../../src/kdc/time-req.js'
import { timeSignatureInput } from '../../src/krb/time-sig.js'
import type { WireLogger } from '../../src/wire/server.js'

const SEC = 1_000_000 // µs
const MIN = 60 * SEC
const HOUR = 60 * MIN
const START_US = 1_760_000_000 * SEC

/** A host wall clock and a monotonic clock that tests move by hand. */
class FakeClocks {
  hostUs = START_US
  monoNs = 5_000_000_000n
  readonly hostNowUs = (): number => this.hostUs
  readonly mono = (): bigint => this.monoNs
  /** Real time passes: both clocks advance. */
  advance(us: number): void {
    this.hostUs += us
    this.monoNs += BigInt(Math.round(us * 1000))
  }
  /** The host clock is stepped (NTP step, operator, VM resume); the monotonic clock is not. */
  step(us: number): void {
    this.hostUs += us
  }
}

interface LogLine {
  level: string
  msg: string
  meta: Record<string, unknown> | undefined
}

function recordingLogger(): WireLogger & { lines: LogLine[] } {
  const lines: LogLine[] = []
  const at = (level: string) => (msg: string, meta?: Record<string, unknown>) => {
    lines.push({ level, msg, meta })
  }
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

function makeClock(opts: { baseRadiusUs?: number } = {}) {
  const c = new FakeClocks()
  const logger = recordingLogger()
  const clock = new ServedClock({ hostNowUs: c.hostNowUs, monoNs: c.mono, logger, ...opts })
  return { c, clock, logger }
}

describe('ServedClock', () => {
  it('follows the host clock while nothing is stepped', () => {
    const { c, clock, logger } = makeClock()
    for (let i = 0; i < 100; i++) {
      c.advance(37_123)
      const t = clock.now()
      expect(Math.abs(t.us - c.hostUs)).to.be.at.most(1)
      expect(t.radiusUs).to.equal(1000)
    }
    expect(logger.lines).to.deep.equal([])
  })

  it('widens the radius to cover a host step too small to follow (200 ms back), for as long as it lasts', () => {
    const { c, clock } = makeClock()
    c.advance(SEC)
    clock.now()
    c.step(-200_000)
    for (let i = 0; i < 60; i++) {
      c.advance(MIN)
      const t = clock.now()
      // The signed bound |served - true| <= radius holds if the host is right.
      expect(Math.abs(t.us - c.hostUs)).to.be.at.most(t.radiusUs)
      expect(t.radiusUs).to.be.at.least(200_000)
    }
  })

  it('is strictly increasing under repeated calls at the same instant', () => {
    const { clock } = makeClock()
    let last = clock.now().us
    for (let i = 0; i < 10_000; i++) {
      const t = clock.now().us
      expect(t).to.be.greaterThan(last)
      last = t
    }
  })

  it('never goes back across a host step back of 1 h, slewing until the host catches up', () => {
    const { c, clock, logger } = makeClock()
    c.advance(SEC)
    const before = clock.now()
    c.step(-HOUR)
    let last = before.us
    let maxRadius = 0
    let caughtUpAt: number | undefined
    const STEP = 5 * MIN
    // Slewing at 0.9 speed, a 1 h gap closes after 10 h: run 11 h of calls.
    for (let elapsed = 0; elapsed <= 11 * HOUR; elapsed += STEP) {
      for (let j = 0; j < 3; j++) {
        const t = clock.now()
        expect(t.us, `served time at +${elapsed / MIN} min`).to.be.greaterThan(last)
        last = t.us
        // The radius covers the disagreement with the host clock.
        expect(t.radiusUs, `radius at +${elapsed / MIN} min`).to.be.at.least(t.us - c.hostUs)
        maxRadius = Math.max(maxRadius, t.radiusUs)
        if (caughtUpAt === undefined && t.radiusUs === 1000 && elapsed > 0) caughtUpAt = elapsed
      }
      c.advance(STEP)
    }
    expect(maxRadius).to.be.at.least(HOUR)
    expect(caughtUpAt, 'caught up with the host').to.not.equal(undefined)
    expect(caughtUpAt!).to.be.within(9 * HOUR, 11 * HOUR)
    // Once caught up, it follows the host again.
    const t = clock.now()
    expect(Math.abs(t.us - c.hostUs)).to.be.below(STEP / 10 + 10)
    const warn = logger.lines.filter((l) => l.level === 'warn')
    expect(warn).to.have.length(1)
    expect(warn[0]!.msg).to.contain('stepped back')
    expect(warn[0]!.meta?.stepMs).to.be.within(3600_000 - 1100, 3600_000 + 10)
    expect(logger.lines.some((l) => l.level === 'info' && l.msg.includes('caught up'))).to.equal(true)
  })

  it('serves a steadily increasing time while slewing (0.9 speed)', () => {
    const { c, clock } = makeClock()
    c.advance(SEC)
    clock.now()
    c.step(-HOUR)
    const a = clock.now().us
    c.advance(10 * MIN)
    const b = clock.now().us
    expect(b - a).to.be.within(0.9 * 10 * MIN - 10, 0.9 * 10 * MIN + 10)
  })

  it('keeps slewing without a second warning if the host steps back again meanwhile', () => {
    const { c, clock, logger } = makeClock()
    c.advance(SEC)
    clock.now()
    c.step(-30 * MIN)
    let last = clock.now().us
    c.advance(MIN)
    c.step(-30 * MIN)
    for (let i = 0; i < 50; i++) {
      c.advance(MIN)
      const t = clock.now()
      expect(t.us).to.be.greaterThan(last)
      expect(t.radiusUs).to.be.at.least(t.us - c.hostUs)
      last = t.us
    }
    expect(logger.lines.filter((l) => l.level === 'warn')).to.have.length(1)
  })

  it('jumps forward with a host step forward and logs it', () => {
    const { c, clock, logger } = makeClock()
    c.advance(SEC)
    const before = clock.now()
    c.step(HOUR)
    const after = clock.now()
    expect(after.us - before.us).to.be.within(HOUR - 10, HOUR + 10)
    expect(Math.abs(after.us - c.hostUs)).to.be.at.most(1)
    expect(after.radiusUs).to.equal(1000)
    c.advance(SEC)
    expect(Math.abs(clock.now().us - c.hostUs)).to.be.at.most(1)
    const warn = logger.lines.filter((l) => l.level === 'warn')
    expect(warn).to.have.length(1)
    expect(warn[0]!.msg).to.contain('stepped forward')
  })

  it('ends slewing at once when the host steps forward past the served time', () => {
    const { c, clock } = makeClock()
    c.advance(SEC)
    clock.now()
    c.step(-HOUR)
    const slewing = clock.now()
    expect(slewing.radiusUs).to.be.greaterThan(HOUR)
    c.step(2 * HOUR)
    const t = clock.now()
    expect(t.us).to.be.greaterThan(slewing.us)
    expect(Math.abs(t.us - c.hostUs)).to.be.at.most(1)
    expect(t.radiusUs).to.equal(1000)
  })

  it('ignores host jitter below the step threshold', () => {
    const { c, clock, logger } = makeClock()
    c.advance(SEC)
    const a = clock.now().us
    c.step(-200_000) // 200 ms back: below the 250 ms threshold
    const b = clock.now().us
    expect(b).to.be.greaterThan(a)
    c.step(400_000)
    clock.now()
    expect(logger.lines).to.deep.equal([])
  })

  it('reports the configured base radius', () => {
    const { c, clock } = makeClock({ baseRadiusUs: 20_000 })
    c.advance(SEC)
    expect(clock.now().radiusUs).to.equal(20_000)
  })
})

describe('processTimeReq', () => {
  const signing = ed25519KeyPair()
  const req = (nonce: Uint8Array = randomBytes(32)): TimeReq => ({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce })

  it('answers with the nonce, recv < xmit, radius and a signature that verifies with the realm signing key', () => {
    const { c, clock } = makeClock()
    c.advance(SEC)
    const r = req()
    const rep = processTimeReq(clock, signing.secretKey, r)
    expect(rep.t).to.equal(MsgType.TIME_REP)
    expect(rep.v).to.equal(PROTOCOL_VERSION)
    expect(Buffer.from(rep.nonce).equals(Buffer.from(r.nonce))).to.equal(true)
    expect(rep.xmit).to.be.greaterThan(rep.recv)
    expect(Math.abs(rep.recv - c.hostUs)).to.be.at.most(2)
    expect(rep.radius).to.equal(1000)
    expect(rep.sig).to.have.length(64)
    expect(verify(timeSignatureInput(rep.nonce, rep.recv, rep.xmit, rep.radius), rep.sig, signing.publicKey)).to.equal(true)
  })

  it('signs every field: changing the nonce, recv, xmit or radius breaks the signature', () => {
    const { clock } = makeClock()
    const rep = processTimeReq(clock, signing.secretKey, req())
    const ok = (n: Uint8Array, recv: number, xmit: number, radius: number) =>
      verify(timeSignatureInput(n, recv, xmit, radius), rep.sig, signing.publicKey)
    const other = Uint8Array.from(rep.nonce)
    other[0]! ^= 1
    expect(ok(other, rep.recv, rep.xmit, rep.radius)).to.equal(false)
    expect(ok(rep.nonce, rep.recv + 1, rep.xmit, rep.radius)).to.equal(false)
    expect(ok(rep.nonce, rep.recv, rep.xmit - 1, rep.radius)).to.equal(false)
    expect(ok(rep.nonce, rep.recv, rep.xmit, rep.radius + 1)).to.equal(false)
    expect(verify(timeSignatureInput(rep.nonce, rep.recv, rep.xmit, rep.radius), rep.sig, ed25519KeyPair().publicKey)).to.equal(false)
  })

  it('carries the slewing radius while the host clock is behind', () => {
    const { c, clock } = makeClock()
    c.advance(SEC)
    clock.now()
    c.step(-HOUR)
    const rep = processTimeReq(clock, signing.secretKey, req())
    expect(rep.radius).to.be.at.least(HOUR)
    expect(rep.xmit - c.hostUs).to.be.at.most(rep.radius)
    expect(verify(timeSignatureInput(rep.nonce, rep.recv, rep.xmit, rep.radius), rep.sig, signing.publicKey)).to.equal(true)
  })

  it('refuses to sign when the radius would not fit its uint32 field (KDC_ERR_SVC_UNAVAILABLE)', () => {
    const { c, clock } = makeClock()
    c.advance(SEC)
    clock.now()
    c.step(-3 * HOUR) // 1.08e10 µs disagreement > 2^32 - 1
    expect(() => processTimeReq(clock, signing.secretKey, req()))
      .to.throw(KrbProtocolError)
      .with.property('code', ErrorCode.KDC_ERR_SVC_UNAVAILABLE)
  })

  for (const len of [0, 16, 31, 33])
    it(`refuses a ${len}-byte nonce with TSR_ERR_MALFORMED`, () => {
      const { clock } = makeClock()
      try {
        processTimeReq(clock, signing.secretKey, req(randomBytes(len)))
        expect.fail('expected a KrbProtocolError')
      } catch (err) {
        expect(err).to.be.instanceOf(KrbProtocolError)
        expect((err as KrbProtocolError).code).to.equal(ErrorCode.TSR_ERR_MALFORMED)
      }
    })
})
