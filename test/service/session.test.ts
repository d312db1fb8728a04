import net from 'node:net'
import { Duplex, PassThrough } from 'node:stream'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Credentials } from '../../src/client/kdc-client.js'
import { KrbProtocolError, type TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { readKeytab } from '../../src/krb/keytab.js'
import { sealFrame } from '../../src/crypto/index.js'
import {
  deriveSessionKeys,
  SecureSession,
  SEQ_BYTES,
  SessionError,
  type SessionFailure,
  SessionMsgType,
} from '../../src/service/session.js'
import { ServiceVerifier } from '../../src/service/verify-ap-req.js'
import { frame } from '../../src/wire/frame-reader.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { connect, frameProxy, type ProxyControl, type Realm, rejection, SERVICE, startRealm } from './helpers.js'

const text = (s: string) => new TextEncoder().encode(s)
const str = (b: Uint8Array) => new TextDecoder().decode(b)

function expectSessionError(err: Error | undefined, code: TesseraErrorCode, reason: SessionFailure): void {
  expect(err, 'an error').to.be.instanceOf(SessionError)
  expect((err as SessionError).code, err!.message).to.equal(code)
  expect((err as SessionError).reason, err!.message).to.equal(reason)
}

/** A TCP server whose every connection becomes a SecureSession (or a refusal). */
async function sessionServer(verifier: ServiceVerifier) {
  const accepted: Promise<SecureSession>[] = []
  const waiting: ((p: Promise<SecureSession>) => void)[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    const p = SecureSession.server(socket, { verifier })
    p.catch(() => {})
    const w = waiting.shift()
    if (w) w(p)
    else accepted.push(p)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    /** The next accepted connection's session (or its refusal). */
    next(): Promise<SecureSession> {
      const p = accepted.shift()
      if (p) return p
      return new Promise<Promise<SecureSession>>((resolve) => waiting.push(resolve)).then((x) => x)
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** A connected pair of in-memory Duplex streams. */
function duplexPair(): [Duplex, Duplex] {
  const ab = new PassThrough()
  const ba = new PassThrough()
  // Destroying one end aborts the shared PassThroughs: that error belongs to the test harness.
  for (const s of [ab, ba]) s.on('error', () => {})
  return [Duplex.from({ writable: ab, readable: ba }), Duplex.from({ writable: ba, readable: ab })]
}

describe('SecureSession', () => {
  useProcessGuards()
  let realm: Realm
  let verifier: ServiceVerifier
  let srv: Awaited<ReturnType<typeof sessionServer>>
  const ticket = () => realm.ticket()

  before(async () => {
    realm = await startRealm()
    verifier = new ServiceVerifier({ keytab: await readKeytab(await realm.keytabFile()), principal: SERVICE })
    srv = await sessionServer(verifier)
  })
  after(async () => {
    await srv?.close()
    await realm?.close()
  })

  async function open(port = srv.port, creds?: Credentials) {
    const socket = await connect(port)
    const client = await SecureSession.client(socket, { creds: creds ?? (await ticket()) })
    const server = await srv.next()
    return { socket, client, server }
  }

  it('round-trips messages both ways over a TCP socket and closes cleanly', async () => {
    const { client, server } = await open()
    expect(server.peer).to.equal(`alice@${realm.kdc.realm}`)
    expect(server.role).to.equal('server')
    expect(server.ap?.client).to.equal(`alice@${realm.kdc.realm}`)
    expect(client.peer).to.equal(`${SERVICE}@${realm.kdc.realm}`)
    const echoed = (async () => {
      for await (const m of server) await server.send(text(`echo:${str(m)}`))
    })()
    const got: string[] = []
    const done = new Promise<void>((resolve) =>
      client.on('message', (m) => {
        got.push(str(m))
        if (got.length === 3) resolve()
      }),
    )
    for (const m of ['one', '', 'three']) await client.send(text(m))
    await done
    expect(got).to.deep.equal(['echo:one', 'echo:', 'echo:three'])
    await client.close()
    await echoed
    await server.closed
    expect(client.isOpen).to.equal(false)
    expect(server.isOpen).to.equal(false)
    const err = await rejection(client.send(text('late')))
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_SESSION)
  })

  it('works over any Duplex stream, and a close from the server ends the client iteration', async () => {
    const [a, b] = duplexPair()
    const [client, server] = await Promise.all([SecureSession.client(a, { creds: await ticket() }), SecureSession.server(b, { verifier })])
    await server.send(text('hello'))
    await server.send(text('bye'))
    const closing = server.close()
    const got: string[] = []
    for await (const m of client) got.push(str(m))
    expect(got).to.deep.equal(['hello', 'bye'])
    await closing
    await client.closed
  })

  it('keeps order and respects backpressure for many large messages', async () => {
    const { client, server } = await open()
    const n = 64
    const size = client.maxMessageBytes
    const sent = (async () => {
      for (let i = 0; i < n; i++) await client.send(new Uint8Array(size).fill(i))
      await client.close()
    })()
    let i = 0
    for await (const m of server) {
      expect(m.length).to.equal(size)
      expect(m[0]).to.equal(i)
      expect(m[size - 1]).to.equal(i)
      i++
      // A slow reader: the sender must wait rather than the stream buffering everything.
      if (i % 16 === 0) await new Promise((r) => setTimeout(r, 5))
    }
    await sent
    expect(i).to.equal(n)
  })

  it('pauses the stream while unread messages exceed highWaterMark, and delivers them all once read', async () => {
    const [a, b] = duplexPair()
    const [client, server] = await Promise.all([
      SecureSession.client(a, { creds: await ticket() }),
      SecureSession.server(b, { verifier, highWaterMark: 4096 }),
    ])
    for (let i = 0; i < 40; i++) void client.send(new Uint8Array(1000).fill(i)).catch(() => {})
    await new Promise((r) => setTimeout(r, 20))
    expect(b.isPaused(), 'server stream paused').to.equal(true)
    const closing = client.close()
    let i = 0
    for await (const m of server) expect(m[0]).to.equal(i++)
    expect(i).to.equal(40)
    await closing
  })

  it('refuses to send a message above maxMessageBytes with TESSERA_FRAME_TOO_LARGE', async () => {
    const { client, server } = await open()
    const err = await rejection(client.send(new Uint8Array(client.maxMessageBytes + 1)))
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_FRAME_TOO_LARGE)
    expect(client.isOpen).to.equal(true)
    await client.close()
    await server.closed
  })

  it('derives different keys per direction and per subkey', () => {
    const sk = new Uint8Array(32).fill(1)
    const a = deriveSessionKeys(sk, new Uint8Array(32).fill(2), new Uint8Array(32).fill(3))
    const b = deriveSessionKeys(sk, new Uint8Array(32).fill(2), new Uint8Array(32).fill(4))
    expect(a.c2s).to.not.deep.equal(a.s2c)
    expect(a.c2s).to.not.deep.equal(b.c2s)
  })

  describe('handshake refusals', () => {
    it('rejects both ends with KRB_AP_ERR_NOT_US (35) for a ticket for another service', async () => {
      await realm.kdc.addPrincipal('other/localhost')
      const other = await realm.ticket('other/localhost')
      const socket = await connect(srv.port)
      const err = await rejection(SecureSession.client(socket, { creds: other }))
      expect(err).to.be.instanceOf(KrbProtocolError)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_NOT_US)
      const serr = await rejection(srv.next())
      expect((serr as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_NOT_US)
    })

    it('fails the client with KRB_AP_ERR_MUT_FAIL (46) when the AP_REP is tampered', async () => {
      const proxy = net.createServer((down) => {
        const up = net.connect(srv.port, '127.0.0.1')
        for (const s of [down, up]) s.on('error', () => {})
        down.pipe(up)
        let first = true
        up.on('data', (chunk: Buffer) => {
          if (first) {
            first = false
            chunk[chunk.length - 1]! ^= 1
          }
          down.write(chunk)
        })
      })
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
      const socket = await connect((proxy.address() as net.AddressInfo).port)
      const err = await rejection(SecureSession.client(socket, { creds: await ticket() }))
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_MUT_FAIL)
      ;(await srv.next()).destroy()
      await new Promise<void>((resolve) => proxy.close(() => resolve()))
    })

    it('times out a server whose client sends nothing (TESSERA_TIMEOUT)', async () => {
      const [a, b] = duplexPair()
      a.on('error', () => {})
      const err = await rejection(SecureSession.server(b, { verifier, handshakeTimeoutMs: 50 }))
      expectSessionError(err, TesseraErrorCode.TESSERA_TIMEOUT, 'TIMEOUT')
      a.destroy()
    })
  })

  describe('attacks on the message stream', () => {
    /** Run a session through a proxy that applies `hook` to client -> server frames; return the server's error. */
    async function attack(hook: (i: number, body: Buffer, ctl: ProxyControl) => void, messages = ['a', 'b', 'c']) {
      const proxy = await frameProxy(srv.port, hook)
      try {
        const { client, server } = await open(proxy.port)
        const received: string[] = []
        server.on('message', (m) => received.push(str(m)))
        for (const m of messages) await client.send(text(m)).catch(() => {})
        const err = await rejection(server.closed)
        expect(server.error).to.equal(err)
        client.destroy()
        return { err, received }
      } finally {
        await proxy.close()
      }
    }
    const pass = (_i: number, body: Buffer, ctl: ProxyControl) => ctl.forward(body)

    it('ends the session with TESSERA_INTEGRITY / FORGED on a flipped bit', async () => {
      const { err, received } = await attack((i, body, ctl) => {
        if (i === 2) body[SEQ_BYTES + 5]! ^= 0x10
        ctl.forward(body)
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_INTEGRITY, 'FORGED')
      expect(received).to.deep.equal(['a'])
    })

    it('reports a flipped bit in the sequence number as FORGED too', async () => {
      const { err } = await attack((i, body, ctl) => {
        if (i === 2) body[SEQ_BYTES - 1]! ^= 0x01
        ctl.forward(body)
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_INTEGRITY, 'FORGED')
    })

    it('ends the session with TESSERA_INTEGRITY / REPLAYED on a replayed message', async () => {
      const { err, received } = await attack((i, body, ctl) => {
        ctl.forward(body)
        if (i === 1) ctl.forward(body)
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_INTEGRITY, 'REPLAYED')
      expect(received).to.deep.equal(['a'])
    })

    it('ends the session with TESSERA_INTEGRITY / REORDERED on a reordered message', async () => {
      let held: Buffer | undefined
      const { err, received } = await attack((i, body, ctl) => {
        if (i === 1) held = body
        else {
          ctl.forward(body)
          if (i === 2) ctl.forward(held!)
        }
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_INTEGRITY, 'REORDERED')
      expect(received).to.deep.equal([])
    })

    it('ends the session with TESSERA_INTEGRITY / REORDERED when a message is dropped', async () => {
      const { err, received } = await attack((i, body, ctl) => {
        if (i !== 2) ctl.forward(body)
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_INTEGRITY, 'REORDERED')
      expect(received).to.deep.equal(['a'])
    })

    it('reports TESSERA_SESSION / TRUNCATED when the stream ends without the close message', async () => {
      const { err, received } = await attack((i, body, ctl) => {
        if (i <= 1) ctl.forward(body)
        if (i === 1) ctl.end()
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_SESSION, 'TRUNCATED')
      expect(received).to.deep.equal(['a'])
    })

    it('reports TRUNCATED when the stream ends in the middle of a message', async () => {
      const { err } = await attack((i, body, ctl) => {
        if (i === 0) ctl.forward(body)
        if (i === 1) {
          const whole = Buffer.concat([Buffer.alloc(4), body])
          whole.writeUInt32BE(body.length)
          ctl.raw(whole.subarray(0, 10))
          ctl.end()
        }
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_SESSION, 'TRUNCATED')
      expect(err.message).to.match(/middle of a message/)
    })

    it('reports TRUNCATED when the client socket is ended without close()', async () => {
      const { socket, server } = await open()
      socket.end()
      expectSessionError(await rejection(server.closed), TesseraErrorCode.TESSERA_SESSION, 'TRUNCATED')
      socket.destroy()
    })

    it('refuses an oversize frame header with TESSERA_FRAME_TOO_LARGE before its body arrives', async () => {
      const { err, received } = await attack((i, body, ctl) => {
        if (i === 1) ctl.raw(Uint8Array.of(0x00, 0x01, 0x00, 0x01))
        else ctl.forward(body)
      })
      expectSessionError(err, TesseraErrorCode.TESSERA_FRAME_TOO_LARGE, 'TOO_LARGE')
      expect(received).to.deep.equal([])
    })

    it('passes an untouched session (control)', async () => {
      const proxy = await frameProxy(srv.port, pass)
      const { client, server } = await open(proxy.port)
      await client.send(text('x'))
      const it = server[Symbol.asyncIterator]()
      expect(str((await it.next()).value as Uint8Array)).to.equal('x')
      await client.close()
      expect((await it.next()).done).to.equal(true)
      await server.closed
      await proxy.close()
    })

    it("rejects the iterator and pending sends with the session's error", async () => {
      const proxy = await frameProxy(srv.port, (i, body, ctl) => {
        if (i === 1) body[body.length - 1]! ^= 1
        ctl.forward(body)
      })
      const { client, server } = await open(proxy.port)
      const it = server[Symbol.asyncIterator]()
      const next = it.next()
      await client.send(text('x'))
      expectSessionError(await rejection(next), TesseraErrorCode.TESSERA_INTEGRITY, 'FORGED')
      expectSessionError(await rejection(server.send(text('y'))), TesseraErrorCode.TESSERA_INTEGRITY, 'FORGED')
      client.destroy()
      await proxy.close()
    })
  })
})

describe('SecureSession wire format (proto/PROTOCOL.md §14.3.5 test vector)', () => {
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
  const keys = deriveSessionKeys(new Uint8Array(32).fill(0x11), new Uint8Array(32).fill(0x22), new Uint8Array(32).fill(0x33))
  const framed = (key: Uint8Array, seq: number, plain: Uint8Array) => {
    const body = Buffer.concat([Buffer.alloc(8), sealFrame(key, seq, plain)])
    body.writeUInt32BE(seq, 4)
    return hex(frame(body))
  }

  it('derives the documented per-direction keys', () => {
    expect(hex(keys.c2s)).to.equal('53f64bf1ff491e9e05ddef113f804762333904b4828d18b4af6eaedea4909adb')
    expect(hex(keys.s2c)).to.equal('a9bcceffb6f180d81da29c43536be7f585955ee82f0846717e4b2c0c706857ab')
  })

  it('seals the documented data and close messages', () => {
    expect(framed(keys.c2s, 0, Uint8Array.of(SessionMsgType.DATA, 0x68, 0x69))).to.equal(
      '0000001b' + '0000000000000000' + 'ff99653af5bea18bc1235010b64e3eb154efde',
    )
    expect(framed(keys.s2c, 0, Uint8Array.of(SessionMsgType.CLOSE))).to.equal(
      '00000019' + '0000000000000000' + 'cc30d38a3775f93d7669fdac80ad95ede8',
    )
  })
})
