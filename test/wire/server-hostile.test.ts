/**
 * SecureServer against hostile peers: a raw socket that does the handshake by hand
 * and then sends what an attacker would. Every case ends with an honest client being
 * served by the same server, and the process guards fail the test on any unhandled
 * rejection or uncaught exception.
 */
import { expect } from 'chai'
import fc from 'fast-check'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { x25519KeyPair } from '../../src/crypto/index.js'
import { plainFrame, type SealedCodec } from '../../src/wire/channel.js'
import { encode } from '../../src/wire/codec.js'
import { frame, HEADER_BYTES } from '../../src/wire/frame-reader.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { asKrbError, RawPeer } from '../helpers/wire-raw.js'
import { Cmd, expectServed, startTestServer, type TestServer, timeReq } from '../helpers/wire-server.js'

// X25519 public keys of small order (RFC 7748 §6.1; the libsodium blocklist): every
// shared secret with them is all-zero, so they must be refused.
const LOW_ORDER_KEYS = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
]

const MAX_FRAME = 4096

describe('SecureServer (hostile peers)', () => {
  useProcessGuards()

  let ts: TestServer
  const peers: RawPeer[] = []

  before(async () => {
    ts = await startTestServer({ maxFrameBytes: MAX_FRAME, handshakeTimeoutMs: 1000, idleTimeoutMs: 3000 })
  })
  after(async () => {
    await ts.close()
  })
  afterEach(async () => {
    for (const p of peers.splice(0)) p.destroy()
    // After every hostile case an honest client is still served by the same server.
    await expectServed(ts)
  })

  async function peer(): Promise<RawPeer> {
    const p = await RawPeer.connect(ts.port)
    peers.push(p)
    return p
  }

  /** A peer past the handshake, with its codec. */
  async function established(): Promise<{ p: RawPeer; codec: SealedCodec }> {
    const p = await peer()
    const codec = await p.handshake(ts.key.publicKey)
    return { p, codec }
  }

  /** Expect one sealed KRB_ERROR with `code`, then the server closing. */
  async function expectSealedErrorThenClose(p: RawPeer, codec: SealedCodec, code: number): Promise<void> {
    const err = asKrbError(await p.nextSealed(codec))
    expect(err.code, `got ${err.code} "${err.text}"`).to.equal(code)
    await p.closedWithin()
  }

  /** Expect one plaintext KRB_ERROR with `code`, then the server closing. */
  async function expectPlainErrorThenClose(p: RawPeer, code: number): Promise<void> {
    const err = asKrbError(await p.nextPlain())
    expect(err.code, `got ${err.code} "${err.text}"`).to.equal(code)
    await p.closedWithin()
  }

  describe('tampered sealed frames', () => {
    // Positions in the sealed body: tag (16 bytes), then ciphertext.
    const positions: [string, (len: number) => number][] = [
      ['the first tag byte', () => 0],
      ['the last tag byte', () => 15],
      ['the first ciphertext byte', () => 16],
      ['a middle ciphertext byte', (len) => 16 + Math.floor((len - 16) / 2)],
      ['the last byte', (len) => len - 1],
    ]
    for (const [where, at] of positions) {
      for (const bit of [0, 7]) {
        it(`closes with a sealed TSR_ERR_TRANSPORT_INTEGRITY on a flipped bit ${bit} in ${where}`, async () => {
          const { p, codec } = await established()
          const f = codec.seal(timeReq())
          const body = f.subarray(HEADER_BYTES)
          body[at(body.length)]! ^= 1 << bit
          await p.send(f)
          await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
        })
      }
    }

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a flipped bit in the length header that shortens the frame', async () => {
      const { p, codec } = await established()
      const f = codec.seal(timeReq())
      const len = f.readUInt32BE(0)
      f.writeUInt32BE(len & (len - 1), 0) // clear the lowest set bit
      await p.send(f)
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a flipped bit in the length header that lengthens the frame', async () => {
      const { p, codec } = await established()
      const f = codec.seal(timeReq())
      const len = f.readUInt32BE(0)
      let bit = 0
      while (len & (1 << bit)) bit++
      f.writeUInt32BE(len | (1 << bit), 0) // set the lowest clear bit
      // Supply the extra bytes the header now announces.
      await p.send(Buffer.concat([f, Buffer.alloc(1 << bit)]))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a replayed frame (after answering the original)', async () => {
      const { p, codec } = await established()
      const f = codec.seal(timeReq())
      await p.send(f)
      expect((await p.nextSealed(codec)).t).to.equal(MsgType.TIME_REP)
      await p.send(f)
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on two frames swapped', async () => {
      const { p, codec } = await established()
      const first = codec.seal(timeReq(Cmd.ECHO, 0, 1))
      const second = codec.seal(timeReq(Cmd.ECHO, 0, 2))
      await p.send(Buffer.concat([second, first]))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a dropped frame (the next one arrives out of turn)', async () => {
      const { p, codec } = await established()
      codec.seal(timeReq()) // never sent
      await p.send(codec.seal(timeReq()))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a frame from another connection', async () => {
      const a = await established()
      const b = await established()
      await b.p.send(a.codec.seal(timeReq()))
      await expectSealedErrorThenClose(b.p, b.codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a server frame reflected back', async () => {
      const { p, codec } = await established()
      await p.send(codec.seal(timeReq()))
      const reply = await p.nextFrame()
      expect(codec.open(reply).t).to.equal(MsgType.TIME_REP)
      await p.send(frame(reply))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on an empty frame after the handshake', async () => {
      const { p, codec } = await established()
      await p.send(frame(new Uint8Array(0)))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('closes with TSR_ERR_TRANSPORT_INTEGRITY on a plaintext message after the handshake', async () => {
      const { p, codec } = await established()
      await p.send(plainFrame(timeReq()))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
    })

    it('survives random sealed-frame garbage after the handshake (property, 30 connections)', async () => {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 200 }), async (junk) => {
          const { p, codec } = await established()
          await p.send(frame(junk))
          await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
          p.destroy()
        }),
        { numRuns: 30 },
      )
    })
  })

  describe('bad sealed content', () => {
    it('closes with a sealed TSR_ERR_MALFORMED on a sealed message of unknown type', async () => {
      const { p, codec } = await established()
      await p.send(codec.seal({ v: PROTOCOL_VERSION, t: 99 } as unknown as Message))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_MALFORMED)
    })

    it('closes with a sealed TSR_ERR_MALFORMED on a sealed message with an extra field', async () => {
      const { p, codec } = await established()
      await p.send(codec.seal({ ...timeReq(), admin: true } as unknown as Message))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_MALFORMED)
    })

    it('closes with a sealed TSR_ERR_HANDSHAKE on a sealed HS_INIT after the handshake', async () => {
      const { p, codec } = await established()
      await p.send(codec.seal({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: x25519KeyPair().publicKey }))
      await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_HANDSHAKE)
    })

    it('answers the requests before a bad frame, then closes', async () => {
      const { p, codec } = await established()
      await p.send(Buffer.concat([codec.seal(timeReq(Cmd.ECHO, 0, 1)), codec.seal({ v: 1, t: 99 } as unknown as Message)]))
      // Whatever the order, the good request never gets a wrong answer, and the last word is the error.
      const first = await p.nextSealed(codec)
      if (first.t === MsgType.TIME_REP) {
        expect(first.nonce[2]).to.equal(1)
        await expectSealedErrorThenClose(p, codec, ErrorCode.TSR_ERR_MALFORMED)
      } else {
        expect(asKrbError(first).code).to.equal(ErrorCode.TSR_ERR_MALFORMED)
        await p.closedWithin()
      }
    })
  })

  describe('before the handshake', () => {
    it('closes with a plaintext TSR_ERR_MALFORMED on a framed garbage body instead of HS_INIT', async () => {
      const p = await peer()
      await p.send(frame(Buffer.from('c1deadbeef', 'hex')))
      await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_MALFORMED)
    })

    it('closes with a plaintext KRB_ERR_FIELD_TOOLONG on unframed text (an HTTP request) instead of HS_INIT', async () => {
      const p = await peer()
      await p.send(Buffer.from('GET / HTTP/1.1\r\nHost: kdc\r\n\r\n'))
      await expectPlainErrorThenClose(p, ErrorCode.KRB_ERR_FIELD_TOOLONG)
    })

    it('closes with a plaintext TSR_ERR_HANDSHAKE on a valid message that is not HS_INIT', async () => {
      const p = await peer()
      await p.send(plainFrame(timeReq()))
      await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_HANDSHAKE)
    })

    it('closes with a plaintext TSR_ERR_MALFORMED on an HS_INIT with a 31-byte key', async () => {
      const p = await peer()
      await p.send(frame(encode({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: new Uint8Array(31).fill(9) })))
      await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_MALFORMED)
    })

    for (const k of LOW_ORDER_KEYS) {
      it(`closes with a plaintext TSR_ERR_HANDSHAKE on an HS_INIT with the low-order key ${k.slice(0, 8)}…`, async () => {
        const p = await peer()
        await p.send(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: Buffer.from(k, 'hex') }))
        await expectPlainErrorThenClose(p, ErrorCode.TSR_ERR_HANDSHAKE)
      })
    }

    it('closes with a plaintext KRB_ERR_FIELD_TOOLONG as soon as an oversized header arrives', async () => {
      const p = await peer()
      const header = Buffer.alloc(HEADER_BYTES)
      header.writeUInt32BE(MAX_FRAME + 1)
      await p.send(header) // no body at all
      await expectPlainErrorThenClose(p, ErrorCode.KRB_ERR_FIELD_TOOLONG)
    })

    it('closes with a plaintext KRB_ERR_FIELD_TOOLONG on a header announcing 2^32-1 bytes', async () => {
      const p = await peer()
      await p.send(Buffer.from('ffffffff', 'hex'))
      await expectPlainErrorThenClose(p, ErrorCode.KRB_ERR_FIELD_TOOLONG)
    })

    it('closes without crashing on a truncated frame followed by FIN', async () => {
      const p = await peer()
      const hs = plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: x25519KeyPair().publicKey })
      await p.send(hs.subarray(0, hs.length - 5))
      p.end()
      await p.closedWithin()
    })

    it('closes without crashing on a bare FIN', async () => {
      const p = await peer()
      p.end()
      await p.closedWithin()
    })

    it('closes without crashing when the peer resets mid-frame', async () => {
      const p = await peer()
      await p.send(Buffer.from('0000004083', 'hex'))
      p.socket.resetAndDestroy()
    })

    it('answers only the first HS_INIT when two are pipelined (the second is not a sealed frame)', async () => {
      const p = await peer()
      const eph = x25519KeyPair()
      const hs = plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: eph.publicKey })
      await p.send(Buffer.concat([hs, hs]))
      expect((await p.nextPlain()).t).to.equal(MsgType.HS_RESP)
      // The second one is taken as a sealed frame, fails to open, and closes the connection.
      await p.nextFrame()
      await p.closedWithin()
    })
  })

  describe('after the handshake', () => {
    it('closes with a sealed KRB_ERR_FIELD_TOOLONG as soon as an oversized header arrives', async () => {
      const { p, codec } = await established()
      const header = Buffer.alloc(HEADER_BYTES)
      header.writeUInt32BE(MAX_FRAME + 1)
      await p.send(header)
      await expectSealedErrorThenClose(p, codec, ErrorCode.KRB_ERR_FIELD_TOOLONG)
    })

    it('closes without crashing on a truncated sealed frame followed by FIN', async () => {
      const { p, codec } = await established()
      const f = codec.seal(timeReq())
      await p.send(f.subarray(0, f.length - 3))
      p.end()
      await p.closedWithin()
    })

    it('does not crash when the peer resets while its request is being handled', async () => {
      const { p, codec } = await established()
      await p.send(codec.seal(timeReq(Cmd.SLOW, 10)))
      p.socket.resetAndDestroy()
      await new Promise((r) => setTimeout(r, 150))
    })

    it('does not crash when the peer resets while large replies are queued', async () => {
      const { p, codec } = await established()
      p.socket.pause()
      await p.send(Buffer.concat(Array.from({ length: 50 }, () => codec.seal(timeReq(Cmd.BIG)))))
      await new Promise((r) => setTimeout(r, 100))
      p.socket.resetAndDestroy()
      await new Promise((r) => setTimeout(r, 100))
    })
  })
})
