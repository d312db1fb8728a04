import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { x25519KeyPair } from '../../src/crypto/index.js'
import { KrbProtocolError, TesseraError } from '../../src/errors.js'
import { type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { type ConnectionContext, SecureServer } from '../../src/wire/server.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { asKrbError, RawPeer } from '../helpers/wire-raw.js'
import {
  Cmd,
  expectServed,
  rejectionOf,
  SECRET_DETAIL,
  startTestServer,
  type TestServer,
  timeReq,
  waitFor,
} from '../helpers/wire-server.js'

const connect = (ts: TestServer, extra: { handshakeTimeoutMs?: number } = {}) =>
  connectChannel({ host: '127.0.0.1', port: ts.port, serverKey: ts.key.publicKey, handshakeTimeoutMs: 2000, ...extra })

function expectKrbCode(err: unknown, code: number): void {
  expect(err).to.be.instanceOf(KrbProtocolError)
  expect((err as KrbProtocolError).code).to.equal(code)
}

function expectTesseraCode(err: unknown, code: string): void {
  expect(err).to.be.instanceOf(TesseraError)
  expect((err as TesseraError).code).to.equal(code)
}

/** Resolves when the channel closes. */
const closedOf = (ch: ClientChannel) => new Promise<void>((resolve) => ch.onClose(resolve))

describe('SecureServer', () => {
  useProcessGuards()

  const servers: TestServer[] = []
  const channels: ClientChannel[] = []
  const peers: RawPeer[] = []
  async function server(opts: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
    const ts = await startTestServer(opts)
    servers.push(ts)
    return ts
  }
  async function channel(ts: TestServer): Promise<ClientChannel> {
    const ch = await connect(ts)
    channels.push(ch)
    return ch
  }
  async function raw(ts: TestServer, opts: { pauseReading?: boolean } = {}): Promise<RawPeer> {
    const p = await RawPeer.connect(ts.port, opts)
    peers.push(p)
    return p
  }
  afterEach(async () => {
    for (const ch of channels.splice(0)) ch.close()
    for (const p of peers.splice(0)) p.destroy()
    await Promise.all(servers.splice(0).map((s) => s.close()))
  })

  describe('options', () => {
    for (const k of ['maxFrameBytes', 'handshakeTimeoutMs', 'idleTimeoutMs', 'maxConnections', 'maxConnectionsPerPeer', 'maxPendingPerConnection', 'closeGraceMs']) {
      it(`rejects ${k} = 0 with RangeError`, () => {
        expect(() => new SecureServer({ staticKey: x25519KeyPair(), [k]: 0 }, () => timeReq())).to.throw(RangeError)
      })
    }

    for (const [k, v] of [['handshakeTimeoutMs', 2 ** 31], ['idleTimeoutMs', 1.5], ['maxFrameBytes', 2 ** 32], ['maxConnections', Number.NaN]] as const) {
      it(`rejects ${k} = ${v} with RangeError`, () => {
        expect(() => new SecureServer({ staticKey: x25519KeyPair(), [k]: v }, () => timeReq())).to.throw(RangeError)
      })
    }

    it('rejects a missing static key with TypeError', () => {
      expect(() => new SecureServer({ staticKey: { publicKey: new Uint8Array(32), secretKey: new Uint8Array(3) } }, () => timeReq())).to.throw(TypeError)
    })

    it('binds 127.0.0.1 by default', async () => {
      const s = new SecureServer({ staticKey: x25519KeyPair() }, () => timeReq())
      const addr = await s.listen()
      expect(addr.address).to.equal('127.0.0.1')
      await s.close()
    })
  })

  describe('requests', () => {
    it('answers a TIME_REQ over the encrypted channel', async () => {
      const ts = await server()
      const ch = await channel(ts)
      const req = timeReq(Cmd.ECHO, 0, 42)
      const rep = await ch.request(req)
      expect(rep.t).to.equal(MsgType.TIME_REP)
      if (rep.t === MsgType.TIME_REP) expect(Buffer.from(rep.nonce).equals(Buffer.from(req.nonce))).to.equal(true)
    })

    it('passes the handler a ConnectionContext bound to this handshake', async () => {
      let seen: ConnectionContext | undefined
      const key = x25519KeyPair()
      const s = new SecureServer({ staticKey: key, name: 'time' }, (_m, ctx) => {
        seen = ctx
        return { v: PROTOCOL_VERSION, t: MsgType.TIME_REP, nonce: new Uint8Array(32), recv: 1, xmit: 2, radius: 0, sig: new Uint8Array(64) }
      })
      const { port } = await s.listen()
      try {
        const ch = await connectChannel({ host: '127.0.0.1', port, serverKey: key.publicKey })
        channels.push(ch)
        await ch.request(timeReq())
        expect(seen?.listener).to.equal('time')
        expect(seen?.remoteAddress).to.equal('127.0.0.1')
        expect(seen?.peer).to.match(/^127\.0\.0\.1:\d+$/)
        expect(Buffer.from(seen!.channelHash).equals(Buffer.from(ch.channelHash))).to.equal(true)
      } finally {
        await s.close()
      }
    })

    it('replies to 300 pipelined requests in request order', async () => {
      const ts = await server()
      const ch = await channel(ts)
      const reqs = Array.from({ length: 300 }, (_, i) => timeReq(Cmd.ECHO, i >> 8, i & 0xff))
      const reps = await Promise.all(reqs.map((r) => ch.request(r)))
      reps.forEach((rep, i) => {
        expect(rep.t).to.equal(MsgType.TIME_REP)
        if (rep.t === MsgType.TIME_REP) expect([rep.nonce[1], rep.nonce[2]], `reply ${i}`).to.deep.equal([i >> 8, i & 0xff])
      })
    })

    it('keeps reply order when handlers take different times', async () => {
      const ts = await server()
      const ch = await channel(ts)
      const reqs = Array.from({ length: 12 }, (_, i) => timeReq(i % 3 === 0 ? Cmd.SLOW : Cmd.ECHO, (i * 7) % 4, i))
      const reps = await Promise.all(reqs.map((r) => ch.request(r)))
      expect(reps.map((r) => (r.t === MsgType.TIME_REP ? r.nonce[2] : -1))).to.deep.equal(reqs.map((_, i) => i))
    })

    it('answers a handler that throws a plain Error with KRB_ERR_GENERIC whose text does not leak the message', async () => {
      const ts = await server()
      const ch = await channel(ts)
      const rep = asKrbError(await ch.request(timeReq(Cmd.THROW)))
      expect(rep.code).to.equal(ErrorCode.KRB_ERR_GENERIC)
      expect(rep.text).to.not.include('secret')
      expect(rep.text).to.not.include('hunter2')
      expect(JSON.stringify(rep)).to.not.include(SECRET_DETAIL)
      // The connection is still usable.
      expect((await ch.request(timeReq())).t).to.equal(MsgType.TIME_REP)
    })

    it('answers a handler that throws KrbProtocolError with its code and message as e-text, and stays usable', async () => {
      const ts = await server()
      const ch = await channel(ts)
      const rep = asKrbError(await ch.request(timeReq(Cmd.REFUSE)))
      expect(rep.code).to.equal(ErrorCode.KDC_ERR_POLICY)
      expect(rep.text).to.equal('refused by policy')
      expect(rep.stime).to.be.closeTo(Date.now(), 5000)
      expect((await ch.request(timeReq())).t).to.equal(MsgType.TIME_REP)
      expect(ch.closed).to.equal(false)
    })

    it('answers a handler that returns an invalid message with KRB_ERR_GENERIC, and stays usable', async () => {
      const ts = await server()
      const ch = await channel(ts)
      const rep = asKrbError(await ch.request(timeReq(Cmd.INVALID)))
      expect(rep.code).to.equal(ErrorCode.KRB_ERR_GENERIC)
      expect((await ch.request(timeReq())).t).to.equal(MsgType.TIME_REP)
    })

    it('answers a KrbProtocolError carrying an out-of-range code with KRB_ERR_GENERIC', async () => {
      const key = x25519KeyPair()
      const s = new SecureServer({ staticKey: key }, () => {
        throw new KrbProtocolError(1e6, 'BAD')
      })
      const { port } = await s.listen()
      try {
        const ch = await connectChannel({ host: '127.0.0.1', port, serverKey: key.publicKey })
        channels.push(ch)
        expect(asKrbError(await ch.request(timeReq())).code).to.equal(ErrorCode.KRB_ERR_GENERIC)
      } finally {
        await s.close()
      }
    })

    it('answers every request of a peer that half-closes after sending them', async () => {
      const ts = await server()
      const p = await raw(ts)
      const codec = await p.handshake(ts.key.publicKey)
      await p.send(Buffer.concat([0, 1, 2].map((i) => codec.seal(timeReq(Cmd.SLOW, 2, i)))))
      p.end()
      for (const i of [0, 1, 2]) {
        const rep = await p.nextSealed(codec)
        expect(rep.t === MsgType.TIME_REP && rep.nonce[2]).to.equal(i)
      }
      await p.closedWithin(2000)
    })

    it('forgets a connection once the client closes it', async () => {
      const ts = await server()
      const ch = await channel(ts)
      expect(ts.server.connectionCount).to.equal(1)
      ch.close()
      expect(await waitFor(() => ts.server.connectionCount === 0)).to.equal(true)
    })
  })

  describe('timeouts', () => {
    it('sends a plaintext TSR_ERR_TIMEOUT and closes when a peer sends nothing within handshakeTimeoutMs', async () => {
      const ts = await server({ handshakeTimeoutMs: 200 })
      const t0 = Date.now()
      const p = await raw(ts)
      const err = asKrbError(await p.nextPlain(2000))
      const elapsed = Date.now() - t0
      expect(err.code).to.equal(ErrorCode.TSR_ERR_TIMEOUT)
      expect(elapsed).to.be.within(150, 1500)
      await p.closedWithin(2500)
      await expectServed(ts)
    })

    it('times out a peer that sends only part of HS_INIT', async () => {
      const ts = await server({ handshakeTimeoutMs: 200 })
      const p = await raw(ts)
      await p.send(Buffer.from('0000002a8300', 'hex'))
      expect(asKrbError(await p.nextPlain(2000)).code).to.equal(ErrorCode.TSR_ERR_TIMEOUT)
      await p.closedWithin(2500)
    })

    it('closes an idle connection after idleTimeoutMs with a sealed TSR_ERR_TIMEOUT', async () => {
      const ts = await server({ idleTimeoutMs: 200 })
      const ch = await channel(ts)
      expect((await ch.request(timeReq())).t).to.equal(MsgType.TIME_REP)
      const t0 = Date.now()
      await closedOf(ch)
      expect(Date.now() - t0).to.be.within(100, 1500)
      expectKrbCode(await rejectionOf(ch.request(timeReq())), ErrorCode.TSR_ERR_TIMEOUT)
      await expectServed(ts)
    })

    it('does not time out a connection whose request is still being handled', async () => {
      const ts = await server({ idleTimeoutMs: 150 })
      const ch = await channel(ts)
      const rep = await ch.request(timeReq(Cmd.SLOW, 40)) // 400 ms
      expect(rep.t).to.equal(MsgType.TIME_REP)
    })
  })

  describe('connection caps', () => {
    it('refuses a connection over maxConnectionsPerPeer with TSR_ERR_BUSY (KrbProtocolError 103)', async () => {
      const ts = await server({ maxConnectionsPerPeer: 2 })
      const a = await channel(ts)
      await channel(ts)
      const err = await rejectionOf(connect(ts))
      expectKrbCode(err, 103)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.TSR_ERR_BUSY)
      // A slot frees when a connection closes.
      a.close()
      expect(await waitFor(() => ts.server.connectionCount === 1)).to.equal(true)
      await expectServed(ts)
    })

    it('refuses a connection over maxConnections with TSR_ERR_BUSY (KrbProtocolError 103)', async () => {
      const ts = await server({ maxConnections: 2, maxConnectionsPerPeer: 100 })
      await channel(ts)
      const b = await channel(ts)
      expectKrbCode(await rejectionOf(connect(ts)), ErrorCode.TSR_ERR_BUSY)
      b.close()
      expect(await waitFor(() => ts.server.connectionCount === 1)).to.equal(true)
      await expectServed(ts)
    })

    it('counts half-open handshakes against the caps and sends the refusal in clear', async () => {
      const ts = await server({ maxConnectionsPerPeer: 1 })
      await raw(ts) // connects, never says anything
      expect(await waitFor(() => ts.server.connectionCount === 1)).to.equal(true)
      const p = await raw(ts)
      expect(asKrbError(await p.nextPlain()).code).to.equal(ErrorCode.TSR_ERR_BUSY)
      await p.closedWithin(2000)
    })
  })

  describe('close()', () => {
    it('lets an in-flight request finish and reply, then closes every connection with TSR_ERR_SHUTTING_DOWN', async () => {
      const ts = await server({ closeGraceMs: 3000 })
      const busy = await channel(ts)
      const idle = await channel(ts)
      const slow = busy.request(timeReq(Cmd.SLOW, 30)) // 300 ms
      expect(await waitFor(() => ts.handled() === 1)).to.equal(true)
      const closing = ts.server.close()
      // The idle connection is told at once.
      await closedOf(idle)
      expectKrbCode(await rejectionOf(idle.request(timeReq())), ErrorCode.TSR_ERR_SHUTTING_DOWN)
      // The in-flight request still gets its reply.
      expect(busy.closed).to.equal(false)
      expect((await slow).t).to.equal(MsgType.TIME_REP)
      await closedOf(busy)
      expectKrbCode(await rejectionOf(busy.request(timeReq())), ErrorCode.TSR_ERR_SHUTTING_DOWN)
      await closing
      expect(ts.server.connectionCount).to.equal(0)
      // And the listener is gone.
      expectTesseraCode(await rejectionOf(connect(ts)), 'TESSERA_NETWORK')
    })

    it('tells a peer still in the handshake TSR_ERR_SHUTTING_DOWN in clear', async () => {
      const ts = await server()
      const p = await raw(ts)
      expect(await waitFor(() => ts.server.connectionCount === 1)).to.equal(true)
      const closing = ts.server.close()
      expect(asKrbError(await p.nextPlain()).code).to.equal(ErrorCode.TSR_ERR_SHUTTING_DOWN)
      await p.closedWithin()
      await closing
    })

    it('destroys connections whose requests outlast closeGraceMs', async () => {
      const ts = await server({ closeGraceMs: 200 })
      const ch = await channel(ts)
      const stuck = rejectionOf(ch.request(timeReq(Cmd.SLOW, 250))) // 2.5 s
      expect(await waitFor(() => ts.handled() === 1)).to.equal(true)
      const t0 = Date.now()
      await ts.server.close()
      expect(Date.now() - t0).to.be.lessThan(1500)
      expectTesseraCode(await stuck, 'TESSERA_CHANNEL_CLOSED')
    })

    it('returns the same promise when called twice', async () => {
      const ts = await server()
      const a = ts.server.close()
      expect(ts.server.close()).to.equal(a)
      await a
    })
  })

  describe('backpressure', () => {
    it('stops reading from a client that pipelines large replies without reading them, and keeps serving others', async () => {
      const maxPending = 4
      const ts = await server({ maxPendingPerConnection: maxPending, idleTimeoutMs: 10000 })
      const hog = await raw(ts)
      const codec = await hog.handshake(ts.key.publicKey)
      hog.socket.pause()
      // 2000 requests for 60000-byte replies: 120 MB if the server queued them all.
      const N = 2000
      const burst = Buffer.concat(Array.from({ length: N }, () => codec.seal(timeReq(Cmd.BIG))))
      hog.socket.write(burst)
      // Let the server work until it stops making progress.
      let last = -1
      for (let i = 0; i < 100 && ts.handled() !== last; i++) {
        last = ts.handled()
        await new Promise((r) => setTimeout(r, 50))
      }
      const stats = ts.server.connectionStats()
      expect(stats).to.have.length(1)
      const s = stats[0]!
      expect(s.readPaused, 'server paused reading').to.equal(true)
      expect(s.pending).to.be.at.most(maxPending)
      // User-space reply buffer bounded by the in-flight replies, not by the requests sent.
      expect(s.writableLength).to.be.lessThan((maxPending + 2) * 64 * 1024)
      expect(ts.handled()).to.be.lessThan(N / 2)
      // Another client is still served meanwhile.
      await expectServed(ts)
      // And once the hog reads, it gets its replies, in order.
      hog.socket.resume()
      const first = await hog.nextSealed(codec, 5000)
      expect(first.t).to.equal(MsgType.ADMIN_REP)
    })
  })
})
