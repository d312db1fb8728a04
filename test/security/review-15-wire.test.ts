/**
 * Hostile review of the transport server's performance change (issue 15): synchronous replies
 * sealed in the same turn, the outbox of pump(), one timeout sweep per server instead of
 * per-socket timers, the lazy `closed` and ctx.peer, and the printable-ASCII fast path of
 * principal-name validation. Everything here is driven from outside, over TCP on 127.0.0.1,
 * against a SecureServer whose handler answers some requests synchronously and some not.
 *
 * One finding, fixed in src/wire/server.ts: a handler reply whose `then` is a throwing getter
 * threw out of the socket's 'data' handler (an uncaught exception: the process dies), where the
 * old `await` turned it into KRB_ERR_GENERIC. The reply chains also got back their last-resort
 * catch. Everything else here held, and stays as regression guards.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message, TimeRep, TimeReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { type KeyPair, randomBytes, x25519KeyPair } from '../../src/crypto/index.js'
import { checkPrincipalId, isValidPrincipalId } from '../../src/db/names.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { plainFrame, type SealedCodec } from '../../src/wire/channel.js'
import { connectAndRequest, connectChannel } from '../../src/wire/client.js'
import { ResumptionStore, TicketIssuer } from '../../src/wire/resumption.js'
import { type ConnectionContext, SecureServer, type SecureServerOptions } from '../../src/wire/server.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { asKrbError, RawPeer, resumeHello } from '../helpers/wire-raw.js'
import { waitFor } from '../helpers/wire-server.js'

/** What the handler does with a TIME_REQ, by nonce[0]. Tags are nonce[2..3] (uint16 BE). */
const Do = {
  /** Echo at once (a synchronous reply). */
  SYNC: 0,
  /** Echo after nonce[1] * 10 ms (a Promise). */
  SLOW: 1,
  /** Throw a plain Error synchronously. */
  THROW: 2,
  /** Return a rejected Promise. */
  REJECT: 3,
  /** Return a non-Promise thenable that fulfils after 5 ms. */
  THENABLE: 4,
  /** Return a non-Promise thenable whose then() throws. */
  THENABLE_THROWS: 5,
  /** A 60000-byte reply, synchronously. */
  BIG: 6,
  /** Record ctx.peer after nonce[1] * 10 ms, then echo. */
  PEER_LATER: 7,
  /** Return an object whose `then` getter throws (a handler bug). */
  THEN_GETTER_THROWS: 8,
  /** Call server.close() from inside the handler, then echo at once. */
  CLOSE_SERVER: 9,
} as const

const SECRET = 'secret-review15: the db password is hunter2'
const BIG_ENC = new Uint8Array(60000).fill(7)

function req(what: number, tag = 0, arg = 0): TimeReq {
  const nonce = new Uint8Array(32)
  nonce[0] = what
  nonce[1] = arg
  nonce[2] = tag >> 8
  nonce[3] = tag & 0xff
  return { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce }
}

function echo(nonce: Uint8Array): TimeRep {
  return { v: PROTOCOL_VERSION, t: MsgType.TIME_REP, nonce: Uint8Array.from(nonce), recv: 1, xmit: 2, radius: 0, sig: new Uint8Array(64) }
}

/** The tag of an echo, or -1 for a KRB_ERROR (its code in `codes`). */
function tagOf(m: Message): number {
  if (m.t === MsgType.TIME_REP) return (m.nonce[2]! << 8) | m.nonce[3]!
  if (m.t === MsgType.KRB_ERROR) return -1
  if (m.t === MsgType.ADMIN_REP) return -2
  throw new Error(`unexpected reply t=${m.t}`)
}

interface Srv {
  server: SecureServer
  port: number
  key: KeyPair
  handled: () => number
  peers: string[]
  sweeper: () => unknown
  perPeer: () => Map<string, number>
  /** What server.close() returned when a handler called it. */
  closing: () => Promise<void> | undefined
}

function handler(peers: string[], count: { n: number }, self: { server?: SecureServer; closing?: Promise<void> }) {
  return (msg: Message, ctx: ConnectionContext): Message | Promise<Message> => {
    count.n++
    if (msg.t !== MsgType.TIME_REQ) throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE')
    const n = msg.nonce
    switch (n[0]) {
      case Do.SLOW:
        return new Promise((r) => setTimeout(() => r(echo(n)), (n[1] ?? 0) * 10))
      case Do.THROW:
        throw new Error(SECRET)
      case Do.REJECT:
        return Promise.reject(new Error(SECRET))
      case Do.THENABLE:
        // biome-ignore lint/suspicious/noThenProperty: a non-Promise thenable is what is tested
        return { then: (ok: (m: Message) => void) => void setTimeout(() => ok(echo(n)), 5) } as unknown as Promise<Message>
      case Do.THENABLE_THROWS:
        return {
          // biome-ignore lint/suspicious/noThenProperty: a non-Promise thenable is what is tested
          then: () => {
            throw new Error(SECRET)
          },
        } as unknown as Promise<Message>
      case Do.BIG:
        return { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REP, enc: BIG_ENC }
      case Do.PEER_LATER:
        return new Promise((r) =>
          setTimeout(
            () => {
              peers.push(ctx.peer)
              r(echo(n))
            },
            (n[1] ?? 0) * 10,
          ),
        )
      case Do.THEN_GETTER_THROWS:
        return Object.defineProperty(echo(n), 'then', {
          get() {
            throw new Error(SECRET)
          },
          enumerable: false,
        })
      case Do.CLOSE_SERVER:
        self.closing = self.server!.close()
        return echo(n)
      default:
        return echo(n)
    }
  }
}

describe('security review 15: the transport server after the performance change, from outside', function () {
  this.timeout(20000)
  useProcessGuards()
  const cleanups: (() => unknown)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function start(opts: Partial<SecureServerOptions> = {}): Promise<Srv> {
    const key = x25519KeyPair()
    const peers: string[] = []
    const count = { n: 0 }
    const self: { server?: SecureServer; closing?: Promise<void> } = {}
    const server = new SecureServer(
      { staticKey: key, host: '127.0.0.1', port: 0, handshakeTimeoutMs: 1000, idleTimeoutMs: 3000, closeGraceMs: 1000, ...opts },
      handler(peers, count, self),
    )
    self.server = server
    const { port } = await server.listen()
    cleanups.push(() => server.close())
    const priv = server as unknown as { sweeper: unknown; perPeer: Map<string, number> }
    return {
      server,
      port,
      key,
      peers,
      handled: () => count.n,
      sweeper: () => priv.sweeper,
      perPeer: () => priv.perPeer,
      closing: () => self.closing,
    }
  }

  async function raw(s: Srv, opts: { pauseReading?: boolean } = {}): Promise<RawPeer> {
    const p = await RawPeer.connect(s.port, opts)
    cleanups.push(() => p.destroy())
    return p
  }

  async function served(s: Srv, tag = 0xabc): Promise<void> {
    const ch = await connectChannel({ host: '127.0.0.1', port: s.port, serverKey: s.key.publicKey, handshakeTimeoutMs: 3000 })
    try {
      const rep = await ch.request(req(Do.SYNC, tag), { timeoutMs: 3000 })
      expect(tagOf(rep)).to.equal(tag)
    } finally {
      ch.close()
    }
  }

  async function replies(p: RawPeer, codec: SealedCodec, n: number, timeoutMs = 3000): Promise<Message[]> {
    const out: Message[] = []
    for (let i = 0; i < n; i++) out.push(await p.nextSealed(codec, timeoutMs))
    return out
  }

  describe('pipelining synchronously answered requests', () => {
    it('answers 3000 synchronous requests sent in one write, each once and in order, and still serves an honest client', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const n = 3000
      const reqs: Buffer[] = []
      for (let i = 0; i < n; i++) reqs.push(codec.seal(req(Do.SYNC, i)))
      await p.send(Buffer.concat(reqs))
      const got = (await replies(p, codec, n)).map(tagOf)
      expect(got).to.deep.equal([...Array(n).keys()])
      expect(s.handled()).to.equal(n)
      await served(s)
    })

    it('a peer that pipelines large synchronous replies and never reads is held to the socket buffer (reading paused), others are served, and the idle timeout ends it', async () => {
      const s = await start({ idleTimeoutMs: 800 })
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      p.socket.pause()
      // 400 requests of ~100 bytes, each asking for a 60 kB reply: 24 MB of replies that no kernel buffer holds.
      const reqs: Buffer[] = []
      for (let i = 0; i < 400; i++) reqs.push(codec.seal(req(Do.BIG, i)))
      p.socket.write(Buffer.concat(reqs))
      expect(await waitFor(() => s.server.connectionStats().some((c) => c.readPaused && c.queuedFrames > 0), 5000), 'the hog is paused').to
        .equal(true)
      const hog = s.server.connectionStats().find((c) => c.readPaused)!
      // At most one high-water mark plus one 60 kB reply in user space, whatever was asked.
      expect(hog.writableLength).to.be.below(16384 + 2 * 61000)
      const handledWhileBlocked = s.handled()
      expect(handledWhileBlocked).to.be.below(400)
      await served(s)
      // Nothing more is opened while the peer reads nothing, and the idle timeout still ends it.
      expect(await waitFor(() => s.server.connectionCount === 0, 8000), 'the hog was not cut off').to.equal(true)
      expect(s.handled()).to.be.below(400)
    })
  })

  describe('reply order when synchronous and asynchronous replies interleave', () => {
    it('answers a mixed pipeline (slow, sync, sync throw, rejected promise, thenable, throwing thenable, sync) strictly in request order, no secret on the wire', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const plan: [number, number][] = [
        [Do.SLOW, 5],
        [Do.SYNC, 0],
        [Do.THROW, 0],
        [Do.SYNC, 0],
        [Do.REJECT, 0],
        [Do.THENABLE, 0],
        [Do.SYNC, 0],
        [Do.THENABLE_THROWS, 0],
        [Do.SLOW, 2],
        [Do.SYNC, 0],
      ]
      await p.send(Buffer.concat(plan.map(([what, arg], i) => codec.seal(req(what, i, arg)))))
      const got = await replies(p, codec, plan.length)
      const want = plan.map(([what], i) => ([Do.THROW, Do.REJECT, Do.THENABLE_THROWS] as number[]).includes(what) ? -1 : i)
      expect(got.map(tagOf)).to.deep.equal(want)
      for (const m of got)
        if (m.t === MsgType.KRB_ERROR) {
          expect(m.code).to.equal(ErrorCode.KRB_ERR_GENERIC)
          expect(JSON.stringify(m)).not.to.contain('hunter2')
        }
      await served(s)
    })

    it('a synchronous request sent while an asynchronous one is pending is answered after it', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      await p.send(codec.seal(req(Do.SLOW, 1, 30)))
      expect(await waitFor(() => s.handled() === 1)).to.equal(true)
      await p.send(Buffer.concat([codec.seal(req(Do.SYNC, 2)), codec.seal(req(Do.SYNC, 3))]))
      expect((await replies(p, codec, 2)).map(tagOf)).to.deep.equal([1, 2])
      // The third was waiting behind the second; then a fresh sync request on an idle connection.
      expect(tagOf(await p.nextSealed(codec))).to.equal(3)
      await p.send(codec.seal(req(Do.SYNC, 4)))
      expect(tagOf(await p.nextSealed(codec))).to.equal(4)
    })

    it('a handler reply whose `then` getter throws is answered KRB_ERR_GENERIC, not thrown out of the socket handler', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      await p.send(Buffer.concat([codec.seal(req(Do.THEN_GETTER_THROWS, 1)), codec.seal(req(Do.SYNC, 2))]))
      const got = await replies(p, codec, 2)
      expect(got.map(tagOf)).to.deep.equal([-1, 2])
      expect(asKrbError(got[0]!).code).to.equal(ErrorCode.KRB_ERR_GENERIC)
      await served(s)
    })
  })

  describe('early data and the outbox', () => {
    async function resuming() {
      const issuer = new TicketIssuer({ windowMs: 60_000 })
      const s = await start({ resumption: issuer })
      cleanups.push(() => issuer.close())
      const store = new ResumptionStore()
      const opts = { host: '127.0.0.1', port: s.port, serverKey: s.key.publicKey, handshakeTimeoutMs: 3000, resumption: store }
      const ticket = async () => {
        const { channel, reply } = await connectAndRequest(opts, req(Do.SYNC, 0), { timeoutMs: 3000 })
        channel.close()
        expect(tagOf(reply)).to.equal(0)
        const t = store.get(ResumptionStore.id(opts.host, opts.port, opts.serverKey))
        if (!t) throw new Error('no ticket')
        // Forget it, so that the next full handshake leaves a fresh one.
        store.delete(ResumptionStore.id(opts.host, opts.port, opts.serverKey))
        return t
      }
      return { s, ticket }
    }

    it('a synchronously answered early request comes after HS_RESUMED, and a garbage frame sent behind it gets HS_RESUMED, the reply, then a sealed error and close', async () => {
      const { s, ticket } = await resuming()
      const t = await ticket()
      const hello = resumeHello(s.key.publicKey, t, { early: req(Do.SYNC, 7) })
      const p = await raw(s)
      // One write: HS_RESUME and a frame of random bytes the server cannot open.
      const junk = randomBytes(60)
      const len = Buffer.alloc(4)
      len.writeUInt32BE(junk.length)
      await p.send(Buffer.concat([hello.frame, len, junk]))
      const codec = await p.resumed(hello)
      expect(tagOf(await p.nextSealed(codec))).to.equal(7)
      expect(asKrbError(await p.nextSealed(codec)).code).to.equal(ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
      await p.closedWithin(3000)
      await served(s)
    })

    it('early data that fails to open: HS_RESUMED first, then the sealed error, then close; the handler is not called', async () => {
      const { s, ticket } = await resuming()
      const t = await ticket()
      const h0 = s.handled()
      const hello = resumeHello(s.key.publicKey, t, { x: randomBytes(48) })
      const p = await raw(s)
      await p.send(hello.frame)
      const codec = await p.resumed(hello)
      expect(asKrbError(await p.nextSealed(codec)).code).to.equal(ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
      await p.closedWithin(3000)
      expect(s.handled()).to.equal(h0)
      expect(await waitFor(() => s.server.connectionCount === 0)).to.equal(true)
    })

    it('a replayed HS_RESUME with early data is refused in clear and the early request is not handled again', async () => {
      const { s, ticket } = await resuming()
      const t = await ticket()
      const hello = resumeHello(s.key.publicKey, t, { early: req(Do.SYNC, 9) })
      const p1 = await raw(s)
      await p1.send(hello.frame)
      const c1 = await p1.resumed(hello)
      expect(tagOf(await p1.nextSealed(c1))).to.equal(9)
      const h = s.handled()
      const p2 = await raw(s)
      await p2.send(hello.frame)
      const m = await p2.nextPlain()
      expect(asKrbError(m).code).to.equal(ErrorCode.TSR_ERR_RESUME)
      await p2.closedWithin(3000)
      expect(s.handled()).to.equal(h)
    })
  })

  describe('malformed, oversized, truncated and replayed frames behind synchronous replies', () => {
    it('an oversized frame header behind valid requests: an in-order prefix of replies, KRB_ERR_FIELD_TOOLONG last, then close; others still served', async () => {
      const s = await start({ maxFrameBytes: 4096 })
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const head = Buffer.alloc(4)
      head.writeUInt32BE(1 << 20)
      const reqs: Buffer[] = []
      for (let i = 0; i < 20; i++) reqs.push(codec.seal(req(Do.SYNC, i)))
      await p.send(Buffer.concat([...reqs, head, Buffer.alloc(100)]))
      // The frame reader refuses the chunk as a whole: requests in the same chunk as the bad
      // header may go unanswered (as before the change), but what is answered is in order, and
      // the error comes last.
      const got: Message[] = []
      for (;;) {
        const m = await p.nextSealed(codec)
        got.push(m)
        if (m.t === MsgType.KRB_ERROR) break
      }
      const tags = got.slice(0, -1).map(tagOf)
      expect(tags).to.deep.equal([...Array(tags.length).keys()])
      expect(asKrbError(got.at(-1)!).code).to.equal(ErrorCode.KRB_ERR_FIELD_TOOLONG)
      await p.closedWithin(3000)
      await served(s)
    })

    it('a replayed sealed request is refused (TSR_ERR_TRANSPORT_INTEGRITY) after the first is answered once', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const f = codec.seal(req(Do.SYNC, 1))
      await p.send(Buffer.concat([f, f]))
      expect(tagOf(await p.nextSealed(codec))).to.equal(1)
      expect(asKrbError(await p.nextSealed(codec)).code).to.equal(ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
      await p.closedWithin(3000)
      expect(s.handled()).to.equal(1)
    })

    it('a truncated frame then FIN: the complete requests before it are answered, then the server closes', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const whole = Buffer.concat([codec.seal(req(Do.SYNC, 1)), codec.seal(req(Do.SLOW, 2, 3))])
      const part = codec.seal(req(Do.SYNC, 3)).subarray(0, 20)
      await p.send(Buffer.concat([whole, part]))
      p.end()
      expect((await replies(p, codec, 2)).map(tagOf)).to.deep.equal([1, 2])
      // A truncated frame at FIN gets no answer: the server closes.
      await p.closedWithin(4000)
      expect(await waitFor(() => s.server.connectionCount === 0, 4000)).to.equal(true)
    })
  })

  describe('half-close', () => {
    it('a peer that sends 50 sync, 1 slow and 50 sync requests then FIN gets all 101 replies in order, then the server closes', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const frames: Buffer[] = []
      for (let i = 0; i < 101; i++) frames.push(codec.seal(i === 50 ? req(Do.SLOW, i, 10) : req(Do.SYNC, i)))
      await p.send(Buffer.concat(frames))
      p.end()
      expect((await replies(p, codec, 101)).map(tagOf)).to.deep.equal([...Array(101).keys()])
      await p.closedWithin(3000)
    })

    it('a peer that sends one sync request and FIN in one go gets its reply before the close', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      p.socket.end(codec.seal(req(Do.SYNC, 5)))
      expect(tagOf(await p.nextSealed(codec))).to.equal(5)
      await p.closedWithin(3000)
    })
  })

  describe('the timeout sweep', () => {
    /** Expect a clear TSR_ERR_TIMEOUT and a close within `ms`. */
    async function timedOut(p: RawPeer, ms: number): Promise<void> {
      const m = await p.nextPlain(ms)
      expect(asKrbError(m).code).to.equal(ErrorCode.TSR_ERR_TIMEOUT)
      await p.closedWithin(3000)
    }

    it('ends a connection that never starts the handshake (TSR_ERR_TIMEOUT in clear)', async () => {
      const s = await start({ handshakeTimeoutMs: 300 })
      expect(s.server.tickMs).to.equal(37)
      const p = await raw(s)
      await timedOut(p, 3000)
    })

    it('ends a peer that dribbles a HS_INIT one byte every 40 ms: dribbling does not extend the handshake deadline', async () => {
      const s = await start({ handshakeTimeoutMs: 300 })
      const p = await raw(s)
      const frame = plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: x25519KeyPair().publicKey })
      let sent = 0
      const drip = setInterval(() => {
        if (sent < frame.length && !p.socket.destroyed) p.socket.write(frame.subarray(sent, ++sent))
      }, 40)
      try {
        await timedOut(p, 4000)
      } finally {
        clearInterval(drip)
      }
      // 300 ms + at most one 37 ms tick: far from the ~2 s the whole frame would take.
      expect(sent).to.be.below(frame.length)
    })

    it('starts again after it stopped for want of connections: a silent peer then is still ended', async () => {
      const s = await start({ handshakeTimeoutMs: 200 })
      await served(s)
      expect(await waitFor(() => s.server.connectionCount === 0 && s.sweeper() === undefined, 3000), 'the sweep stopped').to.equal(true)
      const p = await raw(s)
      expect(s.sweeper()).not.to.equal(undefined)
      await timedOut(p, 3000)
    })

    it('still ends a silent peer while 300 other connections come and go, and stops once all are gone', async () => {
      const s = await start({ handshakeTimeoutMs: 400 })
      const silent = await raw(s)
      const t0 = Date.now()
      let churned = 0
      while (churned < 300 && Date.now() - t0 < 5000) {
        await Promise.all(
          Array.from({ length: 20 }, async () => {
            const c = await RawPeer.connect(s.port)
            c.destroy()
          }),
        )
        churned += 20
      }
      await timedOut(silent, 4000)
      expect(await waitFor(() => s.server.connectionCount === 0 && s.sweeper() === undefined, 3000), 'the sweep is still running').to.equal(
        true,
      )
      expect(s.perPeer().size).to.equal(0)
      await served(s)
    })

    it('never idles out a connection while its request is pending, and does once it is answered', async () => {
      const s = await start({ idleTimeoutMs: 200 })
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      // 80 x 10 ms = 800 ms: four idle periods.
      await p.send(codec.seal(req(Do.SLOW, 1, 80)))
      expect(tagOf(await p.nextSealed(codec, 4000))).to.equal(1)
      const m = await p.nextSealed(codec, 3000)
      expect(asKrbError(m).code).to.equal(ErrorCode.TSR_ERR_TIMEOUT)
      await p.closedWithin(3000)
    })

    it('1000 short connections (half of them served) leave no connection, no per-peer count and no running sweep', async () => {
      const s = await start({ handshakeTimeoutMs: 2000 })
      for (let round = 0; round < 20; round++) {
        await Promise.all(
          Array.from({ length: 50 }, async (_, i) => {
            if (i % 2 === 0) {
              const c = await RawPeer.connect(s.port)
              c.destroy()
            } else {
              const ch = await connectChannel({ host: '127.0.0.1', port: s.port, serverKey: s.key.publicKey, handshakeTimeoutMs: 5000 })
              try {
                expect(tagOf(await ch.request(req(Do.SYNC, i), { timeoutMs: 5000 }))).to.equal(i)
              } finally {
                ch.close()
              }
            }
          }),
        )
      }
      expect(await waitFor(() => s.server.connectionCount === 0 && s.sweeper() === undefined, 5000)).to.equal(true)
      expect(s.perPeer().size).to.equal(0)
      expect(s.server.counters.accepted).to.equal(1000)
    })
  })

  describe('server.close()', () => {
    it('during pipelined traffic: an in-order prefix of the replies, then a sealed TSR_ERR_SHUTTING_DOWN, then close; close() resolves and the sweep stops', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      const frames: Buffer[] = []
      for (let i = 0; i < 600; i++) frames.push(codec.seal(i === 300 ? req(Do.SLOW, i, 20) : req(Do.SYNC, i)))
      p.socket.write(Buffer.concat(frames))
      expect(await waitFor(() => s.handled() > 0, 3000)).to.equal(true)
      const closed = s.server.close()
      const got: number[] = []
      for (;;) {
        const m = await p.nextSealed(codec, 4000)
        if (m.t === MsgType.KRB_ERROR) {
          expect(m.code).to.equal(ErrorCode.TSR_ERR_SHUTTING_DOWN)
          break
        }
        got.push(tagOf(m))
      }
      expect(got).to.deep.equal([...Array(got.length).keys()])
      await p.closedWithin(3000)
      await closed
      expect(s.server.connectionCount).to.equal(0)
      expect(await waitFor(() => s.sweeper() === undefined, 2000)).to.equal(true)
    })

    it('called synchronously from a handler answering inside pump(): that reply, then TSR_ERR_SHUTTING_DOWN instead of the requests behind it, then close', async () => {
      const s = await start()
      const p = await raw(s)
      const codec = await p.handshake(s.key.publicKey)
      await p.send(Buffer.concat([codec.seal(req(Do.SYNC, 1)), codec.seal(req(Do.CLOSE_SERVER, 2)), codec.seal(req(Do.SYNC, 3))]))
      const got = await replies(p, codec, 3)
      expect(got.slice(0, 2).map(tagOf)).to.deep.equal([1, 2])
      expect(asKrbError(got[2]!).code).to.equal(ErrorCode.TSR_ERR_SHUTTING_DOWN)
      await p.closedWithin(3000)
      await s.closing()
      expect(s.handled()).to.equal(2)
      expect(s.server.connectionCount).to.equal(0)
    })
  })

  describe('ctx.peer (now made on first use)', () => {
    it('names the client address and port even when first read after the client has gone', async () => {
      const s = await start()
      const p = await raw(s)
      const port = p.socket.localPort
      const codec = await p.handshake(s.key.publicKey)
      await p.send(codec.seal(req(Do.PEER_LATER, 1, 20)))
      p.destroy()
      expect(await waitFor(() => s.peers.length === 1, 3000)).to.equal(true)
      expect(s.peers[0]).to.equal(`127.0.0.1:${port}`)
    })
  })
})

// ---- principal names: the printable-ASCII fast path against the checks it skips ----

// The checks of src/db/names.ts before the fast path (commit a42c1b9), kept as the reference.
const REF = {
  CONTROL: /[\u0000-\u001f\u007f-\u009f]/,
  FORBIDDEN: /[/@\\]/,
  LONE_SURROGATE: /\p{Cs}/u,
  BIDI_CONTROL: /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/,
  INVISIBLE: /[\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}]/u,
  ODD_SPACE: /[\p{Zs}\u2800]/u,
  REALM: /^[A-Za-z0-9._-]+$/,
}

function refVisible(text: string): boolean {
  for (const ch of text) if (ch !== ' ' && REF.ODD_SPACE.test(ch)) return false
  if (text.startsWith(' ') || text.endsWith(' ')) return false
  return !REF.INVISIBLE.test(text)
}

function refComponent(c: string): boolean {
  if (c.length === 0 || Buffer.byteLength(c, 'utf8') > 255) return false
  if (REF.FORBIDDEN.test(c) || REF.CONTROL.test(c) || REF.LONE_SURROGATE.test(c) || REF.BIDI_CONTROL.test(c)) return false
  if (!refVisible(c)) return false
  return c.normalize('NFC') === c
}

function refRealm(r: string): boolean {
  if (r.length === 0 || r.length > 255 || !refVisible(r) || !REF.REALM.test(r)) return false
  return !(r.startsWith('.') || r.endsWith('.') || r.includes('..'))
}

describe('security review 15: the printable-ASCII fast path of principal names refuses all the old checks refused', () => {
  function corpus(): string[] {
    const out: string[] = []
    const singles: string[] = []
    for (let cp = 0; cp <= 0x3100; cp++) singles.push(String.fromCharCode(cp))
    for (const cp of [0xfeff, 0xfff9, 0xfffc, 0xfffd, 0xffa0, 0x3164, 0xe0001, 0xe0020, 0xe007f, 0xfe00, 0xfe0f, 0x1d173, 0x10ffff])
      singles.push(String.fromCodePoint(cp))
    singles.push('\ud800', '\udfff', '\udc00\ud800', 'e\u0301', '\u212b', 'A\u030a', '\ufb01')
    for (const ch of singles) out.push(ch, `a${ch}`, `${ch}a`, `ad${ch}min`, `${ch}${ch}`)
    for (const s of [' ', '  ', ' a', 'a ', ' a ', 'a b', '~', '!x', 'x\n', '\nx', 'x\r\n', '\tx', 'x\u007f', 'a'.repeat(255), 'a'.repeat(256)])
      out.push(s)
    return out
  }

  it('checkPrincipalId agrees with the old checks on every component of a 60 000-string corpus (every control, DEL, spaces at the ends, U+0085, U+00A0, U+00AD, U+200B, bidi controls, lone surrogates, non-NFC)', () => {
    const diffs: string[] = []
    for (const c of corpus()) {
      const want = refComponent(c)
      const got = isValidPrincipalId({ realm: 'EXAMPLE.COM', components: ['host', c] })
      if (got !== want) diffs.push(JSON.stringify(c))
    }
    expect(diffs.slice(0, 20), `${diffs.length} differences`).to.deep.equal([])
    for (const bad of ['\u0085', '\u00a0', '\u00ad', '\u200b', '\u202e', '\u2066', '\ud800', 'e\u0301', ' x', 'x ', '\u007f', '\u0000'])
      expect(isValidPrincipalId({ realm: 'EXAMPLE.COM', components: [`a${bad}`] }) && isValidPrincipalId({ realm: 'EXAMPLE.COM', components: [bad] }), JSON.stringify(bad)).to
        .equal(false)
  })

  it('and on every realm of the corpus', () => {
    const diffs: string[] = []
    for (const r of corpus()) {
      const want = refRealm(r)
      const got = isValidPrincipalId({ realm: r, components: ['alice'] })
      if (got !== want) diffs.push(JSON.stringify(r))
    }
    expect(diffs.slice(0, 20), `${diffs.length} differences`).to.deep.equal([])
  })

  it('names a leading or trailing space as before (TESSERA_BAD_NAME)', () => {
    for (const c of [' alice', 'alice ', ' '])
      try {
        checkPrincipalId({ realm: 'EXAMPLE.COM', components: [c] })
        expect.fail(`accepted ${JSON.stringify(c)}`)
      } catch (err) {
        expect(err).to.be.instanceOf(TesseraError)
        expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_BAD_NAME)
        expect((err as Error).message).to.contain('leading or trailing space')
      }
  })
})
