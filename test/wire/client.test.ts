import net from 'node:net'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { x25519KeyPair } from '../../src/crypto/index.js'
import { KrbProtocolError, TesseraError } from '../../src/errors.js'
import { krbError, plainFrame } from '../../src/wire/channel.js'
import { type ChannelOptions, type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { frame } from '../../src/wire/frame-reader.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { fakeServer } from '../helpers/wire-raw.js'
import { Cmd, rejectionOf, startTestServer, type TestServer, timeReq } from '../helpers/wire-server.js'

function expectTesseraCode(err: unknown, code: string): void {
  expect(err).to.be.instanceOf(TesseraError)
  expect((err as TesseraError).code).to.equal(code)
}


/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address() as net.AddressInfo
  await new Promise<void>((r) => srv.close(() => r()))
  return port
}

describe('connectChannel', () => {
  useProcessGuards()

  const cleanups: (() => unknown)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  async function fake(onConnection: (s: net.Socket) => void) {
    const f = await fakeServer(onConnection)
    cleanups.push(() => f.close())
    return f
  }
  const opts = (port: number, extra: Partial<ChannelOptions> = {}): ChannelOptions => ({
    host: '127.0.0.1',
    port,
    serverKey: x25519KeyPair().publicKey,
    handshakeTimeoutMs: 200,
    ...extra,
  })

  it('rejects with TESSERA_TIMEOUT within handshakeTimeoutMs when the server accepts but never answers', async () => {
    const f = await fake(() => {})
    const t0 = Date.now()
    const err = await rejectionOf(connectChannel(opts(f.port)))
    expectTesseraCode(err, 'TESSERA_TIMEOUT')
    expect(Date.now() - t0).to.be.within(150, 1000)
  })

  it('rejects with TESSERA_ABORTED when the signal aborts during the handshake', async () => {
    const f = await fake(() => {})
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 50)
    const t0 = Date.now()
    const err = await rejectionOf(connectChannel(opts(f.port, { signal: ac.signal, handshakeTimeoutMs: 5000 })))
    expectTesseraCode(err, 'TESSERA_ABORTED')
    expect(Date.now() - t0).to.be.lessThan(1000)
  })

  it('rejects with TESSERA_ABORTED at once when the signal is already aborted', async () => {
    const ac = new AbortController()
    ac.abort()
    expectTesseraCode(await rejectionOf(connectChannel(opts(1, { signal: ac.signal }))), 'TESSERA_ABORTED')
  })

  it('rejects with TESSERA_NETWORK when nothing listens on the port', async () => {
    expectTesseraCode(await rejectionOf(connectChannel(opts(await closedPort()))), 'TESSERA_NETWORK')
  })

  it('rejects with TESSERA_NETWORK when the server closes during the handshake', async () => {
    const f = await fake((s) => s.end())
    expectTesseraCode(await rejectionOf(connectChannel(opts(f.port))), 'TESSERA_NETWORK')
  })

  it('rejects with TESSERA_HANDSHAKE when the server answers HS_INIT with another message', async () => {
    const f = await fake((s) => s.once('data', () => s.write(plainFrame(timeReq()))))
    expectTesseraCode(await rejectionOf(connectChannel(opts(f.port))), 'TESSERA_HANDSHAKE')
  })

  it('rejects with TESSERA_HANDSHAKE when HS_RESP does not verify (a server without the KDC key)', async () => {
    const f = await fake((s) =>
      s.once('data', () =>
        s.write(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_RESP, e: x25519KeyPair().publicKey, confirm: new Uint8Array(48) })),
      ),
    )
    expectTesseraCode(await rejectionOf(connectChannel(opts(f.port))), 'TESSERA_HANDSHAKE')
  })

  it('rejects with TESSERA_DECODE when the server answers with garbage', async () => {
    const f = await fake((s) => s.once('data', () => s.write(frame(Buffer.from('c1', 'hex')))))
    expectTesseraCode(await rejectionOf(connectChannel(opts(f.port))), 'TESSERA_DECODE')
  })

  it('rejects with TESSERA_FRAME_TOO_LARGE when the server announces an oversized frame', async () => {
    const f = await fake((s) => s.once('data', () => s.write(Buffer.from('ffffffff', 'hex'))))
    expectTesseraCode(await rejectionOf(connectChannel(opts(f.port))), 'TESSERA_FRAME_TOO_LARGE')
  })

  it('rejects with KrbProtocolError carrying the code and server time when the server refuses in clear', async () => {
    const f = await fake((s) => s.once('data', () => s.end(plainFrame(krbError(ErrorCode.TSR_ERR_BUSY, 'busy', 1234)))))
    const err = await rejectionOf(connectChannel(opts(f.port)))
    expect(err).to.be.instanceOf(KrbProtocolError)
    expect((err as KrbProtocolError).code).to.equal(103)
    expect((err as KrbProtocolError).serverTime).to.equal(1234)
  })

  it('rejects a server key that is not 32 bytes with TypeError', async () => {
    expect(await rejectionOf(connectChannel(opts(1, { serverKey: new Uint8Array(31) })))).to.be.instanceOf(TypeError)
  })

  for (const [k, v] of [['connectTimeoutMs', 0], ['handshakeTimeoutMs', 2 ** 31], ['maxFrameBytes', -1]] as const) {
    it(`rejects ${k} = ${v} with RangeError`, async () => {
      expect(await rejectionOf(connectChannel(opts(1, { [k]: v })))).to.be.instanceOf(RangeError)
    })
  }

  it('rejects with TESSERA_HANDSHAKE when the client holds the wrong server public key', async () => {
    const ts = await startTestServer()
    cleanups.push(() => ts.close())
    expectTesseraCode(await rejectionOf(connectChannel(opts(ts.port, { handshakeTimeoutMs: 2000 }))), 'TESSERA_HANDSHAKE')
  })
})

describe('ClientChannel', () => {
  useProcessGuards()

  let ts: TestServer
  const channels: ClientChannel[] = []
  before(async () => {
    ts = await startTestServer()
  })
  after(async () => {
    await ts.close()
  })
  afterEach(() => {
    for (const ch of channels.splice(0)) ch.close()
  })
  async function channel(): Promise<ClientChannel> {
    const ch = await connectChannel({ host: '127.0.0.1', port: ts.port, serverKey: ts.key.publicKey })
    channels.push(ch)
    return ch
  }

  it('exposes the handshake transcript hash', async () => {
    const ch = await channel()
    expect(ch.channelHash).to.have.length(32)
  })

  it('rejects a request with TESSERA_TIMEOUT after timeoutMs and closes the channel', async () => {
    const ch = await channel()
    const err = await rejectionOf(ch.request(timeReq(Cmd.SLOW, 50), { timeoutMs: 100 }))
    expectTesseraCode(err, 'TESSERA_TIMEOUT')
    expect(ch.closed).to.equal(true)
  })

  it('rejects a request with TESSERA_ABORTED when its signal aborts, and closes the channel', async () => {
    const ch = await channel()
    const ac = new AbortController()
    const p = rejectionOf(ch.request(timeReq(Cmd.SLOW, 50), { signal: ac.signal }))
    setTimeout(() => ac.abort(), 20)
    expectTesseraCode(await p, 'TESSERA_ABORTED')
    expect(ch.closed).to.equal(true)
  })

  it('rejects a request whose signal is already aborted without closing the channel', async () => {
    const ch = await channel()
    const ac = new AbortController()
    ac.abort()
    expectTesseraCode(await rejectionOf(ch.request(timeReq(), { signal: ac.signal })), 'TESSERA_ABORTED')
    expect((await ch.request(timeReq())).t).to.equal(MsgType.TIME_REP)
  })

  it('rejects a message that cannot be encoded without desynchronising later replies', async () => {
    const ch = await channel()
    const bad = { ...timeReq(), huge: 2n ** 60n } as unknown as Message
    expect(await rejectionOf(ch.request(bad))).to.be.instanceOf(RangeError)
    expect(ch.inFlight).to.equal(0)
    const rep = await ch.request(timeReq(Cmd.ECHO, 0, 77))
    expect(rep.t === MsgType.TIME_REP && rep.nonce[2]).to.equal(77)
  })

  it('rejects a bad timeoutMs with RangeError without desynchronising later replies', async () => {
    const ch = await channel()
    expect(await rejectionOf(ch.request(timeReq(), { timeoutMs: 2 ** 31 }))).to.be.instanceOf(RangeError)
    expect((await ch.request(timeReq())).t).to.equal(MsgType.TIME_REP)
  })

  it('fails pending requests with TESSERA_CHANNEL_CLOSED on close(), and later ones too', async () => {
    const ch = await channel()
    const pending = rejectionOf(ch.request(timeReq(Cmd.SLOW, 20)))
    ch.close()
    expectTesseraCode(await pending, 'TESSERA_CHANNEL_CLOSED')
    expectTesseraCode(await rejectionOf(ch.request(timeReq())), 'TESSERA_CHANNEL_CLOSED')
  })

  it('calls onClose listeners once, and at once when already closed', async () => {
    const ch = await channel()
    let n = 0
    ch.onClose(() => n++)
    ch.close()
    ch.close()
    expect(n).to.equal(1)
    ch.onClose(() => n++)
    expect(n).to.equal(2)
  })
})
