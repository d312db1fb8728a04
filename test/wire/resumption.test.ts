/**
 * Transport resumption (PROTOCOL.md §3.6): the TicketIssuer and ResumptionStore on
 * their own with an injected clock, then SecureServer + connectAndRequest over TCP,
 * raw hostile peers against a resuming server, the client's fallback to a full
 * handshake, and what travels in clear.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { randomBytes, x25519KeyPair } from '../../src/crypto/index.js'
import { TesseraError } from '../../src/errors.js'
import { decodeMessage, plainFrame } from '../../src/wire/channel.js'
import { type ChannelOptions, connectAndRequest, connectChannel } from '../../src/wire/client.js'
import { encode } from '../../src/wire/codec.js'
import { frame } from '../../src/wire/frame-reader.js'
import { type ClientTicket, type RefusalReason, ResumptionStore, TICKET_BYTES, TicketIssuer } from '../../src/wire/resumption.js'
import { expectEcho, useResumptionFixture } from '../helpers/resumption-fixture.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { asKrbError, fakeServer, framesOf, RawPeer, resumeHello, startRecordingProxy } from '../helpers/wire-raw.js'
import { Cmd, expectServed, rejectionOf, startTestServer, type TestServer, timeReq } from '../helpers/wire-server.js'

/** A hand-driven monotonic clock, ms. */
function fakeClock(start = 1_000_000): { t: number; now: () => number } {
  const c = { t: start, now: () => c.t }
  return c
}

function refusal(r: ReturnType<TicketIssuer['redeem']>): RefusalReason | 'accepted' {
  return 'refused' in r ? r.refused : 'accepted'
}

/** Expect a TIME_REP echoing the nonce of timeReq(Cmd.ECHO, 0, tag). */

function contains(haystack: Buffer, needle: Uint8Array): boolean {
  return haystack.indexOf(Buffer.from(needle)) !== -1
}

describe('TicketIssuer', () => {
  const W = 1000
  let clock: ReturnType<typeof fakeClock>
  let issuer: TicketIssuer
  beforeEach(() => {
    clock = fakeClock()
    issuer = new TicketIssuer({ lifetimeMs: 60_000, windowMs: W, now: clock.now })
  })
  afterEach(() => issuer.close())

  const cr = () => randomBytes(32)

  it('redeems a ticket for the rms it carries, as a copy the caller may wipe', () => {
    const rms = randomBytes(32)
    const keep = Uint8Array.from(rms)
    const tk = issuer.issue(rms)
    rms.fill(0) // the caller wipes its own
    expect(tk.length).to.equal(TICKET_BYTES)
    clock.t += 250
    const r = issuer.redeem(tk, cr(), 250)
    expect(refusal(r)).to.equal('accepted')
    if ('rms' in r) {
      expect(Buffer.from(r.rms)).to.deep.equal(Buffer.from(keep))
      r.rms.fill(0)
    }
    const again = issuer.redeem(tk, cr(), 250)
    if (!('rms' in again)) throw new Error(`refused: ${again.refused}`)
    expect(Buffer.from(again.rms)).to.deep.equal(Buffer.from(keep))
  })

  it('issues a different ticket each time, even for the same rms', () => {
    const rms = randomBytes(32)
    expect(Buffer.from(issuer.issue(rms))).to.not.deep.equal(Buffer.from(issuer.issue(rms)))
  })

  it('tells clients the lifetime in whole seconds', () => {
    expect(issuer.lifetimeS).to.equal(60)
    const short = new TicketIssuer({ lifetimeMs: 1500, now: clock.now })
    expect(short.lifetimeS).to.equal(1)
    short.close()
  })

  it('refuses a ticket with any one byte flipped, and still redeems the original', () => {
    const tk = issuer.issue(randomBytes(32))
    for (let i = 0; i < tk.length; i++) {
      const bad = Uint8Array.from(tk)
      bad[i]! ^= 0x01
      expect(refusal(issuer.redeem(bad, cr(), 0)), `byte ${i}`).to.equal('bad-ticket')
    }
    expect(refusal(issuer.redeem(tk, cr(), 0))).to.equal('accepted')
  })

  for (const [what, len] of [
    ['empty', 0],
    ['one byte short', TICKET_BYTES - 1],
    ['one byte long', TICKET_BYTES + 1],
    ['256 bytes', 256],
  ] as const) {
    it(`refuses a ticket of the wrong length (${what}) as bad-ticket`, () => {
      const tk = issuer.issue(randomBytes(32))
      const bad = new Uint8Array(len)
      bad.set(tk.subarray(0, Math.min(len, tk.length)))
      expect(refusal(issuer.redeem(bad, cr(), 0))).to.equal('bad-ticket')
    })
  }

  it('refuses a ticket from another issuer (another process)', () => {
    const other = new TicketIssuer({ lifetimeMs: 60_000, windowMs: W, now: clock.now })
    try {
      const tk = other.issue(randomBytes(32))
      expect(refusal(issuer.redeem(tk, cr(), 0))).to.equal('bad-ticket')
      expect(refusal(other.redeem(tk, cr(), 0))).to.equal('accepted')
    } finally {
      other.close()
    }
  })

  it('accepts a ticket at exactly its lifetime and refuses it 1 ms later as expired', () => {
    const tk = issuer.issue(randomBytes(32))
    clock.t += 60_000
    expect(refusal(issuer.redeem(tk, cr(), 60_000))).to.equal('accepted')
    clock.t += 1
    expect(refusal(issuer.redeem(tk, cr(), 60_001))).to.equal('expired')
  })

  it('accepts a client age off by exactly windowMs either way and refuses 1 ms more', () => {
    const tk = issuer.issue(randomBytes(32))
    clock.t += 10_000
    expect(refusal(issuer.redeem(tk, cr(), 10_000 - W))).to.equal('accepted')
    expect(refusal(issuer.redeem(tk, cr(), 10_000 + W))).to.equal('accepted')
    expect(refusal(issuer.redeem(tk, cr(), 10_000 - W - 1))).to.equal('age-mismatch')
    expect(refusal(issuer.redeem(tk, cr(), 10_000 + W + 1))).to.equal('age-mismatch')
    expect(refusal(issuer.redeem(tk, cr(), 0))).to.equal('age-mismatch')
    expect(refusal(issuer.redeem(tk, cr(), 0xffffffff))).to.equal('age-mismatch')
  })

  it('refuses a client random it accepted before, at every step until 2 x windowMs later', () => {
    // Accept late in a generation (the issuer rotates its memory every 2 x windowMs
    // counted from construction), the worst case for a generational memory.
    clock.t += 2 * W - 1
    const t0 = clock.t
    const tk = issuer.issue(randomBytes(32))
    const c = cr()
    expect(refusal(issuer.redeem(tk, c, 0))).to.equal('accepted')
    // Every attempt is a call that may rotate the memory; the age is made to match each time.
    for (const dt of [0, 1, W / 2, W, W + 1, (3 * W) / 2, 2 * W - 1]) {
      clock.t = t0 + dt
      expect(refusal(issuer.redeem(tk, c, dt)), `at +${dt} ms`).to.equal('replay')
      // A different client random with the same ticket at the same moment is fine.
      expect(refusal(issuer.redeem(tk, cr(), dt)), `fresh cr at +${dt} ms`).to.equal('accepted')
    }
  })

  it('remembers a client random across one memory rotation', () => {
    const tk = issuer.issue(randomBytes(32))
    const c = cr()
    expect(refusal(issuer.redeem(tk, c, 0))).to.equal('accepted')
    expect(issuer.rememberedRandoms).to.equal(1)
    clock.t += 2 * W // one rotation: the random moves to the older generation
    expect(refusal(issuer.redeem(tk, c, 2 * W))).to.equal('replay')
    expect(issuer.rememberedRandoms).to.equal(1)
  })

  // The anti-replay memory keys on the whole cr (it once kept only the first 16 bytes).
  it('accepts a client random that differs from an accepted one only in its last byte', () => {
    const tk = issuer.issue(randomBytes(32))
    const c = cr()
    expect(refusal(issuer.redeem(tk, c, 0))).to.equal('accepted')
    const c2 = Uint8Array.from(c)
    c2[31]! ^= 1
    expect(refusal(issuer.redeem(tk, c2, 0))).to.equal('accepted')
  })

  it('redeems tickets of the previous key after a rotation, up to their lifetime', () => {
    const rms = randomBytes(32)
    clock.t += 60_000 - 1 // the first key is nearly due
    const old = issuer.issue(rms)
    clock.t += 1 // next call rotates: the old key becomes the previous one
    const fresh = issuer.issue(randomBytes(32))
    expect(Buffer.from(fresh.subarray(0, 4))).to.not.deep.equal(Buffer.from(old.subarray(0, 4)))
    clock.t += 60_000 - 1 // `old` is now exactly 60 000 ms old
    const r = issuer.redeem(old, cr(), 60_000)
    if (!('rms' in r)) throw new Error(`refused: ${r.refused}`)
    expect(Buffer.from(r.rms)).to.deep.equal(Buffer.from(rms))
  })

  it('refuses a ticket whose key has been rotated out as bad-ticket (the key is gone, not just expired)', () => {
    const old = issuer.issue(randomBytes(32))
    clock.t += 60_000 // rotation 1: the key of `old` becomes the previous one
    const mid = issuer.issue(randomBytes(32))
    expect(refusal(issuer.redeem(old, cr(), 60_000))).to.equal('accepted')
    clock.t += 60_000 // rotation 2: the key of `old` is wiped
    expect(refusal(issuer.redeem(old, cr(), 120_000))).to.equal('bad-ticket')
    // The previous key (that of `mid`) is still there.
    expect(refusal(issuer.redeem(mid, cr(), 60_000))).to.equal('accepted')
  })

  it("refuses with 'busy' once maxRecent client randoms are remembered, and accepts again after a rotation", () => {
    const small = new TicketIssuer({ lifetimeMs: 60_000, windowMs: W, maxRecent: 3, now: clock.now })
    try {
      const tk = small.issue(randomBytes(32))
      const first = cr()
      expect(refusal(small.redeem(tk, first, 0))).to.equal('accepted')
      expect(refusal(small.redeem(tk, cr(), 0))).to.equal('accepted')
      expect(refusal(small.redeem(tk, cr(), 0))).to.equal('accepted')
      expect(refusal(small.redeem(tk, cr(), 0))).to.equal('busy')
      expect(refusal(small.redeem(tk, first, 0))).to.equal('replay')
      expect(small.rememberedRandoms).to.equal(3)
      clock.t += 2 * W
      expect(refusal(small.redeem(tk, cr(), 2 * W))).to.equal('accepted')
      expect(refusal(small.redeem(tk, first, 2 * W))).to.equal('replay')
    } finally {
      small.close()
    }
  })

  it('refuses every ticket after close() and issues no more', () => {
    const tks = [issuer.issue(randomBytes(32)), issuer.issue(randomBytes(32))]
    issuer.close()
    for (const tk of tks) expect(refusal(issuer.redeem(tk, cr(), 0))).to.equal('bad-ticket')
    expect(() => issuer.issue(randomBytes(32))).to.throw()
    expect(issuer.rememberedRandoms).to.equal(0)
  })

  for (const [k, v] of [
    ['lifetimeMs', 0],
    ['lifetimeMs', 1.5],
    ['windowMs', -1],
    ['windowMs', Number.NaN],
    ['maxRecent', 0],
  ] as const) {
    it(`rejects ${k} = ${v} with RangeError`, () => {
      expect(() => new TicketIssuer({ [k]: v })).to.throw(RangeError)
    })
  }
})

describe('ResumptionStore', () => {
  const tk = () => randomBytes(TICKET_BYTES)

  it('keeps a ticket until a second before its lifetime, then forgets it', () => {
    const clock = fakeClock()
    const store = new ResumptionStore(4, clock.now)
    store.set('a', tk(), randomBytes(32), 10)
    clock.t += 9000
    expect(store.get('a')).to.not.equal(undefined)
    expect(store.age(store.get('a')!)).to.equal(9000)
    clock.t += 1
    expect(store.get('a')).to.equal(undefined)
    expect(store.size).to.equal(0)
  })

  it('exports tickets with wall-clock receipt times and imports them into another process with their age', () => {
    const c1 = fakeClock()
    const a = new ResumptionStore(4, c1.now)
    const ticket = tk()
    const rms = randomBytes(32)
    a.set('srv', ticket, rms, 600)
    c1.t += 2000
    const wall = 1_800_000_000_000
    const exported = a.export(wall)
    expect(exported).to.have.length(1)
    expect(exported[0]!.receivedAtMs).to.equal(wall - 2000)
    rms.fill(0) // the export is a copy
    expect(exported[0]!.rms.some((b) => b !== 0)).to.equal(true)
    // Another process, 3 s later on the wall clock.
    const c2 = fakeClock()
    const b = new ResumptionStore(4, c2.now)
    b.import(exported, wall + 3000)
    const t = b.get('srv')!
    expect(Buffer.from(t.tk).equals(Buffer.from(ticket))).to.equal(true)
    expect(b.age(t)).to.equal(5000)
    // Expired, or received "in the future" (the clock went back): not taken.
    const c = new ResumptionStore(4, fakeClock().now)
    c.import(exported, wall + 600_000)
    c.import([{ ...exported[0]!, id: 'future', receivedAtMs: wall + 10_000 }], wall)
    expect(c.size).to.equal(0)
  })

  it('states the age in whole ms, never negative', () => {
    const clock = fakeClock()
    const store = new ResumptionStore(4, clock.now)
    store.set('a', tk(), randomBytes(32), 10)
    const t = store.get('a')!
    clock.t += 12.6
    expect(store.age(t)).to.equal(13)
    clock.t -= 100
    expect(store.age(t)).to.equal(0)
  })

  it('replaces a server’s ticket and drops the oldest server when full', () => {
    const store = new ResumptionStore(2)
    const a2 = tk()
    store.set('a', tk(), randomBytes(32), 60)
    store.set('b', tk(), randomBytes(32), 60)
    store.set('a', a2, randomBytes(32), 60) // replacing makes 'a' the newest
    store.set('c', tk(), randomBytes(32), 60)
    expect(store.size).to.equal(2)
    expect(store.get('b')).to.equal(undefined)
    expect(store.get('a')?.tk).to.equal(a2)
    expect(store.get('c')).to.not.equal(undefined)
  })

  it('keys tickets by host, port and transport key', () => {
    const k1 = x25519KeyPair().publicKey
    const k2 = x25519KeyPair().publicKey
    const ids = new Set([
      ResumptionStore.id('127.0.0.1', 1, k1),
      ResumptionStore.id('127.0.0.1', 2, k1),
      ResumptionStore.id('127.0.0.2', 1, k1),
      ResumptionStore.id('127.0.0.1', 1, k2),
    ])
    expect(ids.size).to.equal(4)
  })
})

describe('resumption over TCP', () => {
  useProcessGuards()
  const { cleanups, defer, resumingServer, channelOpts, ask, ticketOf } = useResumptionFixture()
  /** A ticket for `ts` from an honest full handshake. */
  async function ticketFrom(ts: TestServer): Promise<ClientTicket> {
    const store = new ResumptionStore()
    await ask(channelOpts(ts, store), 0)
    return ticketOf(store, channelOpts(ts, store))
  }

  describe('an honest client', () => {
    it('does a full handshake first, then resumes with the request as early data, always with its newest ticket', async () => {
      const { ts, issuer } = await resumingServer()
      const proxy = defer(await startRecordingProxy(ts.port))
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store, proxy.port)

      await ask(opts, 1)
      expect(issuer.rememberedRandoms).to.equal(0)
      expect(ts.handled()).to.equal(1)
      const seen = [ticketOf(store, opts)]
      const first = framesOf(proxy.connections[0]!.c2s)
      expect(decodeMessage(first[0]!).t).to.equal(MsgType.HS_INIT)
      const resp = decodeMessage(framesOf(proxy.connections[0]!.s2c)[0]!)
      expect(resp.t === MsgType.HS_RESP && resp.nt !== undefined, 'HS_RESP carries nt').to.equal(true)

      for (let i = 2; i <= 4; i++) {
        const before = seen.at(-1)!
        await ask(opts, i)
        expect(issuer.rememberedRandoms, `resumption ${i - 1}`).to.equal(i - 1)
        expect(ts.handled()).to.equal(i)
        const c2s = framesOf(proxy.connections[i - 1]!.c2s)
        // One frame only: the request went inside HS_RESUME, not after it.
        expect(c2s).to.have.length(1)
        const hello = decodeMessage(c2s[0]!)
        expect(hello.t).to.equal(MsgType.HS_RESUME)
        if (hello.t === MsgType.HS_RESUME) {
          expect(hello.x, 'early request').to.not.equal(undefined)
          expect(Buffer.from(hello.tk)).to.deep.equal(Buffer.from(before.tk))
        }
        const back = decodeMessage(framesOf(proxy.connections[i - 1]!.s2c)[0]!)
        expect(back.t).to.equal(MsgType.HS_RESUMED)
        const t = ticketOf(store, opts)
        if (back.t === MsgType.HS_RESUMED && back.nt !== undefined) {
          // A new ticket was handed out: the store holds it (new tk, new rms) and never an old one.
          for (const old of seen) {
            expect(Buffer.from(t.tk)).to.not.deep.equal(Buffer.from(old.tk))
            expect(Buffer.from(t.rms)).to.not.deep.equal(Buffer.from(old.rms))
          }
        } else {
          expect(Buffer.from(t.tk), 'no nt: the ticket is kept').to.deep.equal(Buffer.from(before.tk))
          expect(Buffer.from(t.rms)).to.deep.equal(Buffer.from(before.rms))
        }
        seen.push(t)
      }
      expect(store.size).to.equal(1)
    })

    // Client and server share one hand-driven clock, so ticket ages agree.
    for (const [why, start, advance] of [
      ['once the old one is past half its lifetime', 0, 1_800_001],
      ['when the old one was sealed under the previous ticket key', 3_599_000, 2000],
    ] as const) {
      it(`replaces the client's ticket on resumption ${why}`, async () => {
        const clock = fakeClock()
        const { ts, issuer } = await resumingServer(new TicketIssuer({ lifetimeMs: 3_600_000, windowMs: 1000, now: clock.now }))
        const proxy = defer(await startRecordingProxy(ts.port))
        const store = new ResumptionStore(64, clock.now)
        const opts = channelOpts(ts, store, proxy.port)
        clock.t += start
        await ask(opts, 1)
        const t1 = ticketOf(store, opts)
        clock.t += advance
        await ask(opts, 2)
        expect(issuer.rememberedRandoms).to.equal(1)
        const back = decodeMessage(framesOf(proxy.connections[1]!.s2c)[0]!)
        expect(back.t === MsgType.HS_RESUMED && back.nt !== undefined, 'HS_RESUMED carries nt').to.equal(true)
        const t2 = ticketOf(store, opts)
        expect(Buffer.from(t2.tk)).to.not.deep.equal(Buffer.from(t1.tk))
        expect(Buffer.from(t2.rms)).to.not.deep.equal(Buffer.from(t1.rms))
        // The next resumption presents the new ticket, and it redeems.
        await ask(opts, 3)
        const hello = decodeMessage(framesOf(proxy.connections[2]!.c2s)[0]!)
        expect(hello.t === MsgType.HS_RESUME && Buffer.from(hello.tk).equals(Buffer.from(t2.tk)), 'HS_RESUME presents the new tk').to.equal(true)
        expect(issuer.rememberedRandoms).to.equal(2)
        expect(ts.handled()).to.equal(3)
      })
    }

    it('answers further pipelined requests on a resumed channel in order', async () => {
      const { ts, issuer } = await resumingServer()
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store)
      await ask(opts, 1)
      const { channel, reply } = await connectAndRequest(opts, timeReq(Cmd.SLOW, 5, 10), { timeoutMs: 2000 })
      cleanups.push(() => channel.close())
      expect(issuer.rememberedRandoms).to.equal(1)
      expect(reply.t).to.equal(MsgType.TIME_REP)
      if (reply.t === MsgType.TIME_REP) expect(reply.nonce[2]).to.equal(10)
      // A slow one first: the fast ones behind it must still come back after it.
      const tags = [11, 12, 13, 14, 15]
      const replies = await Promise.all(
        tags.map((tag, i) => channel.request(i === 0 ? timeReq(Cmd.SLOW, 5, tag) : timeReq(Cmd.ECHO, 0, tag), { timeoutMs: 2000 })),
      )
      expect(replies.map((r) => (r.t === MsgType.TIME_REP ? r.nonce[2] : -1))).to.deep.equal(tags)
      expect(ts.handled()).to.equal(2 + tags.length)
    })

    it('resumes with connectChannel (no early data) and then sends sealed requests', async () => {
      const { ts, issuer } = await resumingServer()
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store)
      await ask(opts, 1)
      const ch = await connectChannel(opts)
      cleanups.push(() => ch.close())
      expect(issuer.rememberedRandoms).to.equal(1)
      expect(ts.handled()).to.equal(1)
      expectEcho(await ch.request(timeReq(Cmd.ECHO, 0, 2), { timeoutMs: 2000 }), 2)
      expectEcho(await ch.request(timeReq(Cmd.ECHO, 0, 3), { timeoutMs: 2000 }), 3)
      expect(store.size).to.equal(1)
    })

    it('resumes several connections at once from one ticket, each with its own client random', async () => {
      const { ts, issuer } = await resumingServer()
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store)
      await ask(opts, 1)
      const tags = [2, 3, 4, 5, 6]
      await Promise.all(tags.map((tag) => ask(opts, tag)))
      expect(issuer.rememberedRandoms).to.equal(tags.length)
      expect(ts.handled()).to.equal(1 + tags.length)
    })

    it('never puts a resumption secret on the wire, in either direction', async () => {
      const { ts } = await resumingServer()
      const proxy = defer(await startRecordingProxy(ts.port))
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store, proxy.port)
      await ask(opts, 1)
      const t1 = ticketOf(store, opts)
      await ask(opts, 2)
      const t2 = ticketOf(store, opts)
      await ask(opts, 3)
      const t3 = ticketOf(store, opts)
      expect(proxy.connections).to.have.length(3)
      const wire = proxy.connections.map((c) => Buffer.concat([...c.c2s, ...c.s2c]))
      // The capture is the real traffic: the tickets themselves do travel in clear.
      expect(contains(wire[1]!, t1.tk), 'tk of ticket 1 in HS_RESUME').to.equal(true)
      expect(contains(wire[2]!, t2.tk), 'tk of ticket 2 in HS_RESUME').to.equal(true)
      for (const [i, t] of [t1, t2, t3].entries())
        for (const [j, w] of wire.entries()) expect(contains(w, t.rms), `rms of ticket ${i + 1} in connection ${j + 1}`).to.equal(false)
    })
  })

  describe('hostile peers against a resuming server', () => {
    let ts: TestServer
    let issuer: TicketIssuer
    const peers: RawPeer[] = []
    before(async () => {
      issuer = new TicketIssuer({ windowMs: 60_000 })
      ts = await startTestServer({ resumption: issuer })
    })
    after(async () => {
      await ts.close()
      issuer.close()
    })
    afterEach(async () => {
      for (const p of peers.splice(0)) p.destroy()
      // After every case the server still does full handshakes and resumptions.
      await expectServed(ts)
      const store = new ResumptionStore()
      await ask(channelOpts(ts, store), 0xa0)
      const n = issuer.rememberedRandoms
      const h = ts.handled()
      await ask(channelOpts(ts, store), 0xa1)
      expect(issuer.rememberedRandoms, 'an honest client still resumes').to.equal(n + 1)
      expect(ts.handled()).to.equal(h + 1)
    })

    async function peer(port = ts.port): Promise<RawPeer> {
      const p = await RawPeer.connect(port)
      peers.push(p)
      return p
    }
    async function expectPlainErrorThenClose(p: RawPeer, code: number): Promise<void> {
      const err = asKrbError(await p.nextPlain())
      expect(err.code, `got ${err.code} "${err.text}"`).to.equal(code)
      await p.closedWithin()
    }

    it('refuses a byte-for-byte replay of an honest client’s HS_RESUME with TSR_ERR_RESUME in clear, without handling the early request again', async () => {
      const proxy = defer(await startRecordingProxy(ts.port))
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store, proxy.port)
      await ask(opts, 1)
      await ask(opts, 2) // resumed, with the request as early data
      const captured = framesOf(proxy.connections[1]!.c2s)
      const hello = decodeMessage(captured[0]!)
      expect(hello.t).to.equal(MsgType.HS_RESUME)
      if (hello.t === MsgType.HS_RESUME) expect(hello.x).to.not.equal(undefined)
      const handled = ts.handled()
      const remembered = issuer.rememberedRandoms
      for (let i = 0; i < 2; i++) {
        const p = await peer()
        await p.send(frame(captured[0]!))
        await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_RESUME)
      }
      expect(ts.handled(), 'the early request was handled again').to.equal(handled)
      expect(issuer.rememberedRandoms).to.equal(remembered)
    })

    it('takes the early request once and answers it as sealed frame 0; the client counts from 0 after it', async () => {
      const t = await ticketFrom(ts)
      const h0 = ts.handled()
      const hello = resumeHello(ts.key.publicKey, t, { early: timeReq(Cmd.ECHO, 0, 7) })
      const p = await peer()
      await p.send(hello.frame)
      const codec = await p.resumed(hello)
      expectEcho(await p.nextSealed(codec), 7)
      await p.send(codec.seal(timeReq(Cmd.ECHO, 0, 8)))
      expectEcho(await p.nextSealed(codec), 8)
      expect(ts.handled()).to.equal(h0 + 2)
    })

    it('answers HS_RESUME without x with HS_RESUMED only, then serves sealed requests', async () => {
      const t = await ticketFrom(ts)
      const h0 = ts.handled()
      const hello = resumeHello(ts.key.publicKey, t)
      const p = await peer()
      await p.send(hello.frame)
      const codec = await p.resumed(hello)
      await p.send(codec.seal(timeReq(Cmd.ECHO, 0, 9)))
      expectEcho(await p.nextSealed(codec), 9)
      expect(ts.handled()).to.equal(h0 + 1)
    })

    it('refuses a ticket whose stated age is far off with TSR_ERR_RESUME in clear, without opening x', async () => {
      const t = await ticketFrom(ts)
      const h0 = ts.handled()
      const p = await peer()
      await p.send(resumeHello(ts.key.publicKey, t, { early: timeReq(), age: 0xffffffff }).frame)
      await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_RESUME)
      expect(ts.handled()).to.equal(h0)
    })

    it('refuses a ticket with a flipped byte with TSR_ERR_RESUME in clear', async () => {
      const t = await ticketFrom(ts)
      const tk = Uint8Array.from(t.tk)
      tk[40]! ^= 0x80
      const h0 = ts.handled()
      const p = await peer()
      await p.send(resumeHello(ts.key.publicKey, { tk, rms: t.rms }, { early: timeReq() }).frame)
      await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_RESUME)
      expect(ts.handled()).to.equal(h0)
    })

    const badEarly: [string, (t: ClientTicket) => { early?: Message | Uint8Array; x?: Uint8Array }, number][] = [
      ['random bytes as x', () => ({ x: randomBytes(48) }), ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY],
      ['a 16-byte x (a bare tag)', () => ({ x: randomBytes(16) }), ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY],
      [
        'x sealed for another client random',
        (t) => ({ x: resumeHello(ts.key.publicKey, t, { early: timeReq() }).msg.x! }),
        ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY,
      ],
      ['x that opens to bytes that are not MessagePack', () => ({ early: Uint8Array.of(0xc1) }), ErrorCode.TSR_ERR_MALFORMED],
      ['x that opens to nothing', () => ({ early: new Uint8Array(0) }), ErrorCode.TSR_ERR_MALFORMED],
      [
        'x that opens to a request followed by a trailing byte',
        () => ({ early: Buffer.concat([encode(timeReq()), Buffer.of(0)]) }),
        ErrorCode.TSR_ERR_MALFORMED,
      ],
      ['x that opens to a map that is no message', () => ({ early: encode({ v: 1, t: 9999 }) }), ErrorCode.TSR_ERR_MALFORMED],
      [
        'x that opens to HS_INIT',
        () => ({ early: { v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: x25519KeyPair().publicKey } }),
        ErrorCode.TSR_ERR_HANDSHAKE,
      ],
      ['x that opens to HS_RESUME', (t) => ({ early: resumeHello(ts.key.publicKey, t).msg }), ErrorCode.TSR_ERR_HANDSHAKE],
    ]
    for (const [what, make, code] of badEarly) {
      it(`answers HS_RESUMED, then a sealed ${code} and close, for ${what}; the handler is not called`, async () => {
        const t = await ticketFrom(ts)
        const h0 = ts.handled()
        const hello = resumeHello(ts.key.publicKey, t, make(t))
        const p = await peer()
        await p.send(hello.frame)
        const codec = await p.resumed(hello)
        const err = asKrbError(await p.nextSealed(codec))
        expect(err.code, `got ${err.code} "${err.text}"`).to.equal(code)
        await p.closedWithin()
        expect(ts.handled()).to.equal(h0)
      })
    }

    it('refuses HS_RESUME with TSR_ERR_RESUME in clear on a server without an issuer, without opening x', async () => {
      const t = await ticketFrom(ts)
      const plain = defer(await startTestServer())
      // Same static key would not matter: without an issuer nothing can be redeemed.
      const p = await peer(plain.port)
      await p.send(resumeHello(plain.key.publicKey, t, { early: timeReq() }).frame)
      await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_RESUME)
      expect(plain.handled()).to.equal(0)
      await expectServed(plain)
    })

    it('closes with a sealed TSR_ERR_HANDSHAKE on HS_RESUME after a full handshake', async () => {
      const t = await ticketFrom(ts)
      const p = await peer()
      const codec = await p.handshake(ts.key.publicKey)
      const remembered = issuer.rememberedRandoms
      await p.send(codec.seal(resumeHello(ts.key.publicKey, t, { early: timeReq() }).msg))
      const err = asKrbError(await p.nextSealed(codec))
      expect(err.code).to.equal(ErrorCode.TSR_ERR_HANDSHAKE)
      await p.closedWithin()
      expect(issuer.rememberedRandoms, 'the ticket was redeemed').to.equal(remembered)
    })

    it('closes with a sealed TSR_ERR_HANDSHAKE on HS_RESUME or HS_RESUMED inside a resumed channel', async () => {
      for (const second of ['HS_RESUME', 'HS_RESUMED'] as const) {
        const t = await ticketFrom(ts)
        const hello = resumeHello(ts.key.publicKey, t)
        const p = await peer()
        await p.send(hello.frame)
        const codec = await p.resumed(hello)
        const h0 = ts.handled()
        const msg: Message =
          second === 'HS_RESUME'
            ? resumeHello(ts.key.publicKey, t).msg
            : { v: PROTOCOL_VERSION, t: MsgType.HS_RESUMED, n: randomBytes(32), confirm: randomBytes(48) }
        await p.send(codec.seal(msg))
        const err = asKrbError(await p.nextSealed(codec))
        expect(err.code, second).to.equal(ErrorCode.TSR_ERR_HANDSHAKE)
        await p.closedWithin()
        expect(ts.handled()).to.equal(h0)
      }
    })

    const malformed: [string, Record<string, unknown>][] = [
      ['cr of 31 bytes', { cr: randomBytes(31) }],
      ['cr of 33 bytes', { cr: randomBytes(33) }],
      ['tk of 300 bytes', { tk: randomBytes(300) }],
      ['an empty tk', { tk: new Uint8Array(0) }],
      ['a negative age', { age: -1 }],
      ['an age of 2^32', { age: 2 ** 32 }],
      ['a fractional age', { age: 1.5 }],
      ['an age that is a string', { age: '0' }],
      ['an x of 15 bytes', { x: randomBytes(15) }],
      ['no cr', { cr: undefined }],
      ['version 2', { v: 2 }],
    ]
    for (const [what, change] of malformed) {
      it(`refuses HS_RESUME with ${what} with TSR_ERR_MALFORMED in clear, before redeeming`, async () => {
        const t = await ticketFrom(ts)
        const hello = resumeHello(ts.key.publicKey, t, { early: timeReq() })
        const bad = { ...hello.msg, ...change }
        const h0 = ts.handled()
        const remembered = issuer.rememberedRandoms
        const p = await peer()
        await p.send(frame(encode(bad)))
        await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_MALFORMED)
        expect(ts.handled()).to.equal(h0)
        expect(issuer.rememberedRandoms).to.equal(remembered)
        // The ticket was not used up: it still resumes with a fresh cr.
        const ok = resumeHello(ts.key.publicKey, t, { early: timeReq(Cmd.ECHO, 0, 3) })
        const q = await peer()
        await q.send(ok.frame)
        expectEcho(await q.nextSealed(await q.resumed(ok)), 3)
      })
    }
  })

  describe('replays with a rewritten age', () => {
    // `age` is bound into h (PROTOCOL.md §3.6), so k_early depends on it: a recorded
    // HS_RESUME re-encoded with a later age, sent once its cr is forgotten, passes the age
    // and cr checks but its early request no longer opens. (Found by this test: age was
    // once outside h, and the early request ran again for the ticket's whole lifetime.)
    it('never handles a recorded early request again when the replay rewrites the age to pass the age check', async () => {
      const W = 1000
      const clock = fakeClock()
      const issuer = new TicketIssuer({ windowMs: W, now: clock.now })
      const ts = await startTestServer({ resumption: issuer })
      cleanups.push(() => issuer.close())
      cleanups.push(() => ts.close())
      const t = await ticketFrom(ts) // issued at clock.t
      const original = resumeHello(ts.key.publicKey, t, { early: timeReq(Cmd.ECHO, 0, 1), age: 0 })
      const honest = await RawPeer.connect(ts.port)
      cleanups.push(() => honest.destroy())
      await honest.send(original.frame)
      expectEcho(await honest.nextSealed(await honest.resumed(original)), 1)
      expect(ts.handled()).to.equal(2)

      // The attacker replays, each time with the age rewritten to match the server's clock.
      for (const dt of [2 * W + 1, 4 * W + 2, 10 * W]) {
        clock.t = 1_000_000 + dt
        const replay = { ...original.msg, age: dt }
        const p = await RawPeer.connect(ts.port)
        cleanups.push(() => p.destroy())
        await p.send(plainFrame(replay))
        // The server may accept the ticket (HS_RESUMED) but the early request must not open.
        const m = await p.nextPlain()
        expect([MsgType.HS_RESUMED, MsgType.KRB_ERROR], `replay at +${dt} ms got t=${m.t}`).to.include(m.t)
        // After HS_RESUMED: one sealed error (x did not open), then close.
        if (m.t === MsgType.HS_RESUMED) await p.nextFrame()
        await p.closedWithin()
        expect(ts.handled(), `the early request was handled again at +${dt} ms`).to.equal(2)
      }
    })

    it('refuses a recorded HS_RESUME replayed byte for byte after 2 x windowMs (age check)', async () => {
      const W = 1000
      const clock = fakeClock()
      const issuer = new TicketIssuer({ windowMs: W, now: clock.now })
      const ts = await startTestServer({ resumption: issuer })
      cleanups.push(() => issuer.close())
      cleanups.push(() => ts.close())
      const t = await ticketFrom(ts)
      const original = resumeHello(ts.key.publicKey, t, { early: timeReq(Cmd.ECHO, 0, 1), age: 0 })
      const honest = await RawPeer.connect(ts.port)
      cleanups.push(() => honest.destroy())
      await honest.send(original.frame)
      expectEcho(await honest.nextSealed(await honest.resumed(original)), 1)
      for (const dt of [0, 2 * W + 1, 4 * W + 2, 10 * W]) {
        clock.t = 1_000_000 + dt
        const p = await RawPeer.connect(ts.port)
        cleanups.push(() => p.destroy())
        await p.send(original.frame)
        const err = asKrbError(await p.nextPlain())
        expect(err.code, `at +${dt} ms`).to.equal(ErrorCode.TSR_ERR_RESUME)
        await p.closedWithin()
      }
      expect(ts.handled()).to.equal(2)
    })
  })

  describe('client fallback', () => {
    it('an attacker holding a ticket who floods resumptions fills the anti-replay memory; honest clients fall back and are served', async () => {
      const { ts, issuer } = await resumingServer(new TicketIssuer({ windowMs: 60_000, maxRecent: 20 }))
      const attacker = new ResumptionStore()
      await ask(channelOpts(ts, attacker), 1)
      const t = ticketOf(attacker, channelOpts(ts, attacker))
      // 20 resumptions with fresh client randoms, each accepted (and remembered).
      for (let i = 0; i < 20; i++) {
        const hello = resumeHello(ts.key.publicKey, t)
        const p = await RawPeer.connect(ts.port)
        cleanups.push(() => p.destroy())
        await p.send(hello.frame)
        expect((await p.nextPlain()).t).to.equal(MsgType.HS_RESUMED)
        p.destroy()
      }
      expect(issuer.rememberedRandoms).to.equal(20)
      // An honest client with its own ticket: refused ('busy'), falls back, is answered once.
      const honest = new ResumptionStore()
      await ask(channelOpts(ts, honest), 2)
      const before = ts.handled()
      await ask(channelOpts(ts, honest), 3)
      expect(honest.refused, 'its resumption was refused while the memory is full').to.equal(1)
      expect(ts.handled() - before, 'answered once').to.equal(1)
    })

    it('falls back to a full handshake on a bogus ticket, is answered once, and stores a real ticket', async () => {
      const { ts, issuer } = await resumingServer()
      const proxy = defer(await startRecordingProxy(ts.port))
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store, proxy.port)
      const id = ResumptionStore.id(opts.host, opts.port, opts.serverKey)
      const bogus = randomBytes(TICKET_BYTES)
      store.set(id, bogus, randomBytes(32), 3600)
      await ask(opts, 1)
      expect(ts.handled()).to.equal(1)
      expect(proxy.connections).to.have.length(2)
      expect(decodeMessage(framesOf(proxy.connections[0]!.c2s)[0]!).t).to.equal(MsgType.HS_RESUME)
      expect(asKrbError(decodeMessage(framesOf(proxy.connections[0]!.s2c)[0]!)).code).to.equal(ErrorCode.TSR_ERR_RESUME)
      expect(decodeMessage(framesOf(proxy.connections[1]!.c2s)[0]!).t).to.equal(MsgType.HS_INIT)
      const fresh = ticketOf(store, opts)
      expect(Buffer.from(fresh.tk)).to.not.deep.equal(Buffer.from(bogus))
      // ... and the fresh one resumes.
      await ask(opts, 2)
      expect(issuer.rememberedRandoms).to.equal(1)
      expect(ts.handled()).to.equal(2)
    })

    it('falls back when the server restarted on the same port with a new issuer', async () => {
      const key = x25519KeyPair()
      const issuerA = new TicketIssuer()
      const a = await startTestServer({ staticKey: key, resumption: issuerA })
      const port = a.port
      const store = new ResumptionStore()
      const opts: ChannelOptions = { host: '127.0.0.1', port, serverKey: key.publicKey, handshakeTimeoutMs: 2000, resumption: store }
      try {
        await ask(opts, 1)
        await ask(opts, 2)
        expect(issuerA.rememberedRandoms).to.equal(1)
      } finally {
        await a.close()
        issuerA.close()
      }
      const old = ticketOf(store, opts)
      const issuerB = new TicketIssuer()
      const b = await startTestServer({ staticKey: key, port, resumption: issuerB })
      cleanups.push(() => issuerB.close())
      cleanups.push(() => b.close())
      expect(b.port).to.equal(port)
      await ask(opts, 3)
      expect(b.handled(), 'answered exactly once').to.equal(1)
      expect(issuerB.rememberedRandoms).to.equal(0)
      expect(Buffer.from(ticketOf(store, opts).tk)).to.not.deep.equal(Buffer.from(old.tk))
      await ask(opts, 4)
      expect(issuerB.rememberedRandoms).to.equal(1)
      expect(b.handled()).to.equal(2)
    })

    // A closed issuer must not throw out of the socket's data handler (it once did, on any HS_INIT).
    it('falls back and is served when the server’s issuer was closed while it still listens', async () => {
      const { ts, issuer } = await resumingServer()
      const store = new ResumptionStore()
      const opts = channelOpts(ts, store)
      await ask(opts, 1)
      issuer.close()
      await ask(opts, 2)
      expect(ts.handled()).to.equal(2)
    })

    it('rejects with TESSERA_HANDSHAKE when a server answers HS_RESUME with a bad confirm, and sends nothing more', async () => {
      const { ts } = await resumingServer()
      const store = new ResumptionStore()
      await ask(channelOpts(ts, store), 1)
      const t = ticketOf(store, channelOpts(ts, store))
      const received: Buffer[] = []
      const fake = defer(
        await fakeServer((s) => {
          s.on('data', (b: Buffer) => {
            received.push(b)
            if (received.length === 1) s.write(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_RESUMED, n: randomBytes(32), confirm: randomBytes(48) }))
          })
        }),
      )
      const opts = channelOpts(ts, store, fake.port)
      store.set(ResumptionStore.id(opts.host, opts.port, opts.serverKey), t.tk, t.rms, 3600)
      const err = await rejectionOf(connectAndRequest(opts, timeReq(), { timeoutMs: 2000 }))
      expect(err).to.be.instanceOf(TesseraError)
      expect((err as TesseraError).code).to.equal('TESSERA_HANDSHAKE')
      await new Promise((r) => setTimeout(r, 50))
      const frames = framesOf(received)
      expect(frames).to.have.length(1)
      expect(decodeMessage(frames[0]!).t).to.equal(MsgType.HS_RESUME)
    })

    it('rejects with TESSERA_HANDSHAKE when a server answers HS_RESUME with HS_RESP', async () => {
      const store = new ResumptionStore()
      const serverKey = x25519KeyPair().publicKey
      const fake = defer(
        await fakeServer((s) =>
          s.once('data', () =>
            s.write(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_RESP, e: x25519KeyPair().publicKey, confirm: randomBytes(48) })),
          ),
        ),
      )
      const opts: ChannelOptions = { host: '127.0.0.1', port: fake.port, serverKey, handshakeTimeoutMs: 2000, resumption: store }
      store.set(ResumptionStore.id(opts.host, opts.port, serverKey), randomBytes(TICKET_BYTES), randomBytes(32), 3600)
      const err = await rejectionOf(connectAndRequest(opts, timeReq(), { timeoutMs: 2000 }))
      expect(err).to.be.instanceOf(TesseraError)
      expect((err as TesseraError).code).to.equal('TESSERA_HANDSHAKE')
    })

    it('does not fall back on other errors in clear (TSR_ERR_BUSY is thrown as is)', async () => {
      const store = new ResumptionStore()
      const serverKey = x25519KeyPair().publicKey
      let connections = 0
      const fake = defer(
        await fakeServer((s) => {
          connections++
          s.once('data', () => s.end(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.KRB_ERROR, code: ErrorCode.TSR_ERR_BUSY, text: 'busy', stime: 1 })))
        }),
      )
      const opts: ChannelOptions = { host: '127.0.0.1', port: fake.port, serverKey, handshakeTimeoutMs: 2000, resumption: store }
      store.set(ResumptionStore.id(opts.host, opts.port, serverKey), randomBytes(TICKET_BYTES), randomBytes(32), 3600)
      const err = await rejectionOf(connectAndRequest(opts, timeReq(), { timeoutMs: 2000 }))
      expect((err as { code?: unknown }).code).to.equal(ErrorCode.TSR_ERR_BUSY)
      expect(connections).to.equal(1)
    })
  })
})

