/** syncTime arithmetic against a scripted time server (no network), and checkTimeRep's refusals. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message, TimeRep } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import type { KdcClient } from '../../src/client/kdc-client.js'
import { checkTimeRep, syncTime } from '../../src/client/time-sync.js'
import { ed25519KeyPair, randomBytes, sign } from '../../src/crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { timeSignatureInput } from '../../src/krb/time-sig.js'
import { krbError } from '../../src/wire/channel.js'

const KEY = ed25519KeyPair()
const T0 = 1_760_000_000_000

function rep(nonce: Uint8Array, recvUs: number, xmitUs: number, radiusUs = 1000, seed = KEY.secretKey): TimeRep {
  return {
    v: PROTOCOL_VERSION,
    t: MsgType.TIME_REP,
    nonce,
    recv: recvUs,
    xmit: xmitUs,
    radius: radiusUs,
    sig: sign(timeSignatureInput(nonce, recvUs, xmitUs, radiusUs), seed),
  }
}

/** One scripted exchange: ms on the way up, in the server, on the way down. */
interface Leg {
  up: number
  proc: number
  down: number
  /** Override the reply (built from the request nonce and honest times). */
  reply?: (nonce: Uint8Array, recvUs: number, xmitUs: number) => Message
}

/**
 * A stand-in for KdcClient: a local wall clock `wall` (ms) that runs with the monotonic
 * clock, a server clock `trueOffsetMs` ahead of it, and scripted network delays.
 */
class ScriptedClient {
  clockOffsetMs = 0
  wall = T0
  monoMs = 1000
  readonly realm = { signingKey: KEY.publicKey }
  sent = 0
  constructor(
    readonly trueOffsetMs: number,
    readonly legs: Leg[],
  ) {}
  now(): number {
    return this.wall + this.clockOffsetMs
  }
  readonly mono = (): number => this.monoMs
  private pass(ms: number): void {
    this.wall += ms
    this.monoMs += ms
  }
  async send(listener: string, build: () => Message): Promise<Message> {
    expect(listener).to.equal('time')
    const req = build()
    if (req.t !== MsgType.TIME_REQ) throw new Error('not a TIME_REQ')
    const leg = this.legs[this.sent++ % this.legs.length]!
    this.pass(leg.up)
    const recvUs = Math.round((this.wall + this.trueOffsetMs) * 1000)
    this.pass(leg.proc)
    const xmitUs = Math.round((this.wall + this.trueOffsetMs) * 1000)
    this.pass(leg.down)
    return leg.reply ? leg.reply(req.nonce, recvUs, xmitUs) : rep(req.nonce, recvUs, xmitUs)
  }
  asClient(): KdcClient {
    return this as unknown as KdcClient
  }
}

async function rejectsTime(p: Promise<unknown>, text: string): Promise<void> {
  try {
    await p
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_TIME)
    expect((err as Error).message).to.contain(text)
    return
  }
  throw new Error('expected TESSERA_TIME, but the promise resolved')
}

describe('syncTime', () => {
  it('computes offset and delay with the four-timestamp method (symmetric path: exact)', async () => {
    const c = new ScriptedClient(-7200_000, [{ up: 5, proc: 0.25, down: 5 }])
    const s = await syncTime(c.asClient(), { samples: 1, monoMs: c.mono })
    expect(s.offsetMs).to.be.closeTo(-7200_000, 1e-6)
    expect(s.delayMs).to.be.closeTo(10, 1e-6)
    expect(s.boundMs).to.be.closeTo(5 + 1, 1e-6)
    expect(s.serverTimeMs).to.be.closeTo(T0 + 5.25 - 7200_000, 1e-6)
    expect(s.verified).to.equal(true)
    expect(c.clockOffsetMs).to.equal(s.offsetMs)
  })

  it('stays within delay/2 + radius on an asymmetric path', async () => {
    const c = new ScriptedClient(37 * 60_000, [{ up: 18, proc: 1, down: 2 }])
    const s = await syncTime(c.asClient(), { samples: 1, monoMs: c.mono })
    // offset = true + (up - down) / 2
    expect(s.offsetMs - c.trueOffsetMs).to.be.closeTo(8, 1e-6)
    expect(s.delayMs).to.be.closeTo(20, 1e-6)
    expect(Math.abs(s.offsetMs - c.trueOffsetMs)).to.be.at.most(s.boundMs)
  })

  it('keeps the lowest-delay sample of several', async () => {
    const c = new ScriptedClient(500, [
      { up: 30, proc: 0, down: 10 },
      { up: 2, proc: 3, down: 2 },
      { up: 1, proc: 0, down: 20 },
    ])
    const s = await syncTime(c.asClient(), { samples: 3, monoMs: c.mono })
    expect(s.samples).to.equal(3)
    expect(s.delayMs).to.be.closeTo(4, 1e-6)
    expect(s.offsetMs).to.be.closeTo(500, 1e-6)
  })

  it('measures from the local clock, not from an offset applied before', async () => {
    const c = new ScriptedClient(-60_000, [{ up: 1, proc: 0, down: 1 }])
    c.clockOffsetMs = 12_345
    const s = await syncTime(c.asClient(), { samples: 1, monoMs: c.mono })
    expect(s.offsetMs).to.be.closeTo(-60_000, 1e-6)
    expect(c.clockOffsetMs).to.be.closeTo(-60_000, 1e-6)
  })

  it('does not touch the client offset with apply: false', async () => {
    const c = new ScriptedClient(999, [{ up: 1, proc: 0, down: 1 }])
    await syncTime(c.asClient(), { samples: 2, apply: false, monoMs: c.mono })
    expect(c.clockOffsetMs).to.equal(0)
  })

  it('rejects an answer claiming more server time than the round trip took', async () => {
    const c = new ScriptedClient(0, [
      { up: 1, proc: 0, down: 1, reply: (n, recv, xmit) => rep(n, recv - 5000, xmit + 5000) },
    ])
    await rejectsTime(syncTime(c.asClient(), { samples: 1, monoMs: c.mono }), 'negative round trip')
    expect(c.clockOffsetMs).to.equal(0)
  })

  it('rejects the whole sync when any one sample is forged', async () => {
    const other = ed25519KeyPair()
    const c = new ScriptedClient(0, [
      { up: 1, proc: 0, down: 1 },
      { up: 1, proc: 0, down: 1, reply: (n, recv, xmit) => rep(n, recv, xmit, 1000, other.secretKey) },
    ])
    await rejectsTime(syncTime(c.asClient(), { samples: 2, monoMs: c.mono }), 'signature')
    expect(c.clockOffsetMs).to.equal(0)
  })

  it('throws the KRB_ERROR of the time service as a KrbProtocolError', async () => {
    const c = new ScriptedClient(0, [{ up: 1, proc: 0, down: 1, reply: () => krbError(ErrorCode.TSR_ERR_BUSY, 'BUSY') }])
    try {
      await syncTime(c.asClient(), { samples: 1, monoMs: c.mono })
      expect.fail('expected a KrbProtocolError')
    } catch (err) {
      expect(err).to.be.instanceOf(KrbProtocolError)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.TSR_ERR_BUSY)
    }
  })

  for (const samples of [0, -1, 1.5, 65, Number.NaN])
    it(`throws RangeError for samples = ${samples}`, async () => {
      const c = new ScriptedClient(0, [{ up: 1, proc: 0, down: 1 }])
      try {
        await syncTime(c.asClient(), { samples })
        expect.fail('expected a RangeError')
      } catch (err) {
        expect(err).to.be.instanceOf(RangeError)
      }
      expect(c.sent).to.equal(0)
    })

  it('uses a fresh 32-byte nonce for each exchange', async () => {
    const nonces: string[] = []
    const c = new ScriptedClient(0, [
      {
        up: 1,
        proc: 0,
        down: 1,
        reply: (n, recv, xmit) => {
          nonces.push(Buffer.from(n).toString('hex'))
          return rep(n, recv, xmit)
        },
      },
    ])
    await syncTime(c.asClient(), { samples: 5, monoMs: c.mono })
    expect(nonces).to.have.length(5)
    expect(new Set(nonces).size).to.equal(5)
    for (const n of nonces) expect(n).to.have.length(64)
  })
})

describe('checkTimeRep', () => {
  const nonce = randomBytes(32)
  const good = () => rep(nonce, T0 * 1000, T0 * 1000 + 10)

  it('returns a valid answer', () => {
    const r = good()
    expect(checkTimeRep(r, nonce, KEY.publicKey)).to.equal(r)
  })

  const refuses = (name: string, m: () => Message, text: string, key = KEY.publicKey) =>
    it(`refuses ${name} with TESSERA_TIME`, () => {
      try {
        checkTimeRep(m(), nonce, key)
        expect.fail('expected TESSERA_TIME')
      } catch (err) {
        expect(err).to.be.instanceOf(TesseraError)
        expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_TIME)
        expect((err as Error).message).to.contain(text)
      }
    })

  refuses('another message type', () => krbError(ErrorCode.KRB_ERR_GENERIC, 'x'), 'unexpected reply type')
  refuses('another nonce', () => rep(randomBytes(32), T0 * 1000, T0 * 1000 + 10), 'another nonce')
  refuses('a signature by another key', () => rep(nonce, T0 * 1000, T0 * 1000 + 10, 1000, ed25519KeyPair().secretKey), 'signature')
  refuses('a valid answer checked against another realm key', good, 'signature', ed25519KeyPair().publicKey)
  refuses('a tampered radius', () => ({ ...good(), radius: 1 }), 'signature')
  refuses('a tampered transmit time', () => ({ ...good(), xmit: T0 * 1000 + 11 }), 'signature')
  refuses('a signed answer with xmit < recv', () => rep(nonce, T0 * 1000, T0 * 1000 - 1), 'transmitted before received')
})
