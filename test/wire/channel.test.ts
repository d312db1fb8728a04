import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message, TimeReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { clientHandshakeFinish, serverHandshake, type TransportKeys, x25519KeyPair } from '../../src/crypto/index.js'
import { TesseraError, type TesseraErrorCode } from '../../src/errors.js'
import { decodeMessage, krbError, SealedCodec, wireCodeFor } from '../../src/wire/channel.js'
import { encode } from '../../src/wire/codec.js'
import { HEADER_BYTES } from '../../src/wire/frame-reader.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

function codeOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect(err, 'error class').to.be.instanceOf(TesseraError)
    return (err as TesseraError).code
  }
  throw new Error('expected a throw, got a value')
}

const nonce = () => new Uint8Array(32).fill(5)
const timeReq = (): TimeReq => ({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: nonce() })

/** A pair of SealedCodecs from a real handshake. */
function pair(): { client: SealedCodec; server: SealedCodec; keys: TransportKeys } {
  const kdc = x25519KeyPair()
  const eph = x25519KeyPair()
  const hs = serverHandshake(kdc, eph.publicKey)
  const keys = clientHandshakeFinish(kdc.publicKey, eph, hs.e, hs.confirm)!
  const copy = (k: TransportKeys): TransportKeys => ({ c2s: Uint8Array.from(k.c2s), s2c: Uint8Array.from(k.s2c), h: k.h })
  return { client: new SealedCodec(copy(keys), 'client'), server: new SealedCodec(copy(hs.keys), 'server'), keys }
}

const body = (framed: Buffer) => framed.subarray(HEADER_BYTES)

describe('decodeMessage', () => {
  useProcessGuards()

  it('returns a valid message', () => {
    const m = decodeMessage(encode(timeReq()))
    expect(m.t).to.equal(MsgType.TIME_REQ)
  })

  const invalid: [string, unknown][] = [
    ['a missing field', { v: 1, t: MsgType.TIME_REQ }],
    ['an extra field', { ...timeReq(), extra: 1 }],
    ['a field of the wrong type', { v: 1, t: MsgType.TIME_REQ, nonce: 'not bytes' }],
    ['a bin of the wrong length', { v: 1, t: MsgType.TIME_REQ, nonce: new Uint8Array(31) }],
    ['a wrong protocol version', { ...timeReq(), v: 2 }],
    ['an unknown message type', { v: 1, t: 99 }],
    ['a string message type', { v: 1, t: '40', nonce: nonce() }],
    ['no message type', { v: 1, nonce: nonce() }],
    ['a top-level array', [1, 40]],
    ['a top-level integer', 40],
    ['a top-level nil', null],
    ['an integer field beyond its maximum', { v: 1, t: MsgType.KRB_ERROR, code: 70000, text: '', stime: 0 }],
    ['a negative time', { v: 1, t: MsgType.KRB_ERROR, code: 60, text: '', stime: -1 }],
    ['an over-long error text', { v: 1, t: MsgType.KRB_ERROR, code: 60, text: 'x'.repeat(513), stime: 0 }],
    ['an extra field in a nested object', { v: 1, t: MsgType.KRB_ERROR, code: 60, text: '', stime: 0, edata: { x: 1 } }],
  ]
  for (const [name, value] of invalid) {
    it(`rejects valid MessagePack with ${name} with TESSERA_VALIDATION`, () => {
      expect(codeOf(() => decodeMessage(encode(value)))).to.equal('TESSERA_VALIDATION')
    })
  }

  it('rejects malformed MessagePack with TESSERA_DECODE, before validation', () => {
    expect(codeOf(() => decodeMessage(Buffer.from('c1', 'hex')))).to.equal('TESSERA_DECODE')
  })

  it('passes DecodeOptions to the structural scan', () => {
    expect(codeOf(() => decodeMessage(encode(timeReq()), { maxEntries: 2 }))).to.equal('TESSERA_DECODE')
  })
})

describe('krbError', () => {
  useProcessGuards()

  it('builds a valid KRB_ERROR with the server time', () => {
    const e = krbError(ErrorCode.TSR_ERR_BUSY, 'busy', 1234)
    expect(e).to.deep.equal({ v: PROTOCOL_VERSION, t: MsgType.KRB_ERROR, code: 103, text: 'busy', stime: 1234 })
    expect(decodeMessage(encode(e))).to.deep.equal(e)
  })

  it('truncates the text to the 512 characters the schema allows', () => {
    const e = krbError(60, 'y'.repeat(2000))
    expect(e.text.length).to.equal(512)
    expect(decodeMessage(encode(e)).t).to.equal(MsgType.KRB_ERROR)
  })

  it('carries edata when given', () => {
    expect(krbError(25, 'x', 1, { salt: 's' }).edata).to.deep.equal({ salt: 's' })
  })
})

describe('wireCodeFor', () => {
  useProcessGuards()

  const table: [TesseraErrorCode, number][] = [
    ['TESSERA_FRAME_TOO_LARGE', ErrorCode.KRB_ERR_FIELD_TOOLONG],
    ['TESSERA_INTEGRITY', ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY],
    ['TESSERA_DECODE', ErrorCode.TSR_ERR_MALFORMED],
    ['TESSERA_VALIDATION', ErrorCode.TSR_ERR_MALFORMED],
    ['TESSERA_HANDSHAKE', ErrorCode.TSR_ERR_HANDSHAKE],
    ['TESSERA_TIMEOUT', ErrorCode.TSR_ERR_TIMEOUT],
    ['TESSERA_DB', ErrorCode.KRB_ERR_GENERIC],
  ]
  for (const [local, wire] of table) {
    it(`maps ${local} to wire code ${wire}`, () => {
      expect(wireCodeFor(new TesseraError(local, 'x'))).to.equal(wire)
    })
  }

  it('maps anything else to KRB_ERR_GENERIC', () => {
    expect(wireCodeFor(new Error('x'))).to.equal(ErrorCode.KRB_ERR_GENERIC)
    expect(wireCodeFor('x')).to.equal(ErrorCode.KRB_ERR_GENERIC)
  })
})

describe('SealedCodec', () => {
  useProcessGuards()

  it('carries messages both ways, in order', () => {
    const { client, server } = pair()
    for (let i = 0; i < 5; i++) {
      expect(server.open(body(client.seal(timeReq()))).t).to.equal(MsgType.TIME_REQ)
      expect(client.open(body(server.seal(krbError(60, `n${i}`, i)))).t).to.equal(MsgType.KRB_ERROR)
    }
  })

  it('never sends the plaintext: the sealed body does not contain the message bytes', () => {
    const { client } = pair()
    const m = krbError(60, 'very-recognisable-plaintext')
    expect(client.seal(m).includes(Buffer.from('very-recognisable-plaintext'))).to.equal(false)
  })

  it('rejects a frame with any single flipped bit with TESSERA_INTEGRITY', () => {
    const { client, keys } = pair()
    const sealed = body(client.seal(timeReq()))
    for (let i = 0; i < sealed.length; i++) {
      for (const bit of [0, 7]) {
        const s = new SealedCodec({ c2s: Uint8Array.from(keys.c2s), s2c: Uint8Array.from(keys.s2c), h: keys.h }, 'server')
        const bad = Buffer.from(sealed)
        bad[i]! ^= 1 << bit
        expect(codeOf(() => s.open(bad)), `byte ${i} bit ${bit}`).to.equal('TESSERA_INTEGRITY')
      }
    }
  })

  it('rejects a replayed frame with TESSERA_INTEGRITY', () => {
    const { client, server } = pair()
    const a = body(client.seal(timeReq()))
    server.open(a)
    expect(codeOf(() => server.open(a))).to.equal('TESSERA_INTEGRITY')
  })

  it('rejects reordered frames with TESSERA_INTEGRITY', () => {
    const { client, server } = pair()
    client.seal(timeReq())
    const second = body(client.seal(timeReq()))
    expect(codeOf(() => server.open(second))).to.equal('TESSERA_INTEGRITY')
  })

  it('rejects a frame reflected back in the other direction with TESSERA_INTEGRITY', () => {
    const { client } = pair()
    const mine = body(client.seal(timeReq()))
    expect(codeOf(() => client.open(mine))).to.equal('TESSERA_INTEGRITY')
  })

  it('rejects a frame shorter than the tag with TESSERA_INTEGRITY', () => {
    const { server } = pair()
    expect(codeOf(() => server.open(new Uint8Array(0)))).to.equal('TESSERA_INTEGRITY')
    expect(codeOf(() => server.open(new Uint8Array(15)))).to.equal('TESSERA_INTEGRITY')
  })

  it('rejects a sealed message of an unknown type with TESSERA_VALIDATION', () => {
    const { client, server } = pair()
    expect(codeOf(() => server.open(body(client.seal({ v: 1, t: 99 } as unknown as Message))))).to.equal('TESSERA_VALIDATION')
  })

  it('does not use up a counter when a message fails to encode', () => {
    const { client, server } = pair()
    const bad = { ...timeReq(), huge: 2n ** 60n } as unknown as Message
    expect(() => client.seal(bad)).to.throw(RangeError)
    // The next frame still opens: the failed seal did not advance the nonce.
    expect(server.open(body(client.seal(timeReq()))).t).to.equal(MsgType.TIME_REQ)
  })

  it('refuses to seal or open after destroy() with TESSERA_CHANNEL_CLOSED (the keys are wiped)', () => {
    const { client, server } = pair()
    const f = body(client.seal(timeReq()))
    client.destroy()
    server.destroy()
    expect(codeOf(() => client.seal(timeReq()))).to.equal('TESSERA_CHANNEL_CLOSED')
    expect(codeOf(() => server.open(f))).to.equal('TESSERA_CHANNEL_CLOSED')
  })
})
