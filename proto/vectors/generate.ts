/**
 * Generates the wire test vectors in proto/vectors/*.json from fixed inputs (keys,
 * nonces, seeds, times): nothing here is random, so running it again gives the same
 * files byte for byte.
 *
 *   npx tsx proto/vectors/generate.ts            (rewrites proto/vectors/*.json)
 *   npx tsx proto/vectors/generate.ts --check    (exit 1 if a committed file differs)
 *
 * This is tooling, not part of the contract: unlike proto/*.ts it imports the
 * reference implementation in src/ (crypto, codec, framing) to compute the bytes.
 * test/proto/vectors.test.ts recomputes every vector with every NaCl backend.
 *
 * JSON conventions: byte strings are lowercase hex; inside a message or inner-part
 * value a byte string is written {"$bin": "<hex>"} so it cannot be mistaken for a
 * MessagePack str. Integers are JSON numbers (all below 2^53). Map keys are encoded
 * in the order they appear in the JSON.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MsgType, PROTOCOL_VERSION } from '../msg-types.js'
import { ErrorCode } from '../error-codes.js'
import { KeyUsage } from '../key-usage.js'
import { KdcOption, PaType, TicketFlag } from '../flags.js'
import { backend } from '../../src/crypto/backend.js'
import { clientKeyThumbprint, serviceTokenClaims, signServiceToken } from '../../src/kdc/jwt.js'
import {
  checkConfirm,
  clientHandshakeFinish,
  confirmBox,
  counterNonce,
  earlyDataHash,
  openEarly,
  openTicketBox,
  resumeEarly,
  resumeKeys,
  sealEarly,
  sealFrame,
  sealTicketBox,
  identityKeyId,
  serverHandshake,
  transcriptHash,
} from '../../src/crypto/handshake.js'
import { defaultSalt, hkdf, passwordToKey, sha256, usageKey } from '../../src/crypto/keys.js'
import { seal } from '../../src/crypto/seal.js'
import { sign, x25519 } from '../../src/crypto/sign.js'
import { encode } from '../../src/wire/codec.js'
import { frame } from '../../src/wire/frame-reader.js'
import { isMain } from '../is-main.js'

// ---------------------------------------------------------------- helpers

/** Lowercase hex of bytes. */
export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex')
/** Bytes of a hex string. */
export const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'))
const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'ascii'))

/** `n` bytes counting up from `start` (mod 256): readable fixed keys and nonces. */
export function seq(n: number, start = 0): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (start + i) & 0xff
  return out
}

/** A value with byte strings as {"$bin": hex}, ready for JSON. */
export function toJsonValue(v: unknown): unknown {
  if (v instanceof Uint8Array) return { $bin: hex(v) }
  if (Array.isArray(v)) return v.map(toJsonValue)
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = toJsonValue(x)
    return out
  }
  return v
}

/** Inverse of toJsonValue: {"$bin": hex} -> Uint8Array. */
export function fromJsonValue(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromJsonValue)
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    const keys = Object.keys(o)
    if (keys.length === 1 && keys[0] === '$bin' && typeof o.$bin === 'string') return unhex(o.$bin)
    const out: Record<string, unknown> = {}
    for (const k of keys) out[k] = fromJsonValue(o[k])
    return out
  }
  return v
}

const u32be = (n: number): Uint8Array => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return new Uint8Array(b)
}
const u64be = (n: number): Uint8Array => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return new Uint8Array(b)
}
const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts))

// ---------------------------------------------------------------- fixed inputs

/** 2023-11-14T22:13:20Z in ms: above 2^32, so it shows the 64-bit integer encoding. */
export const T0 = 1_700_000_000_000
const REALM = 'EXAMPLE.COM'
const v = PROTOCOL_VERSION

/** Long-term and session keys used across the exchange vectors. */
const KEYS = {
  client: undefined as unknown as Uint8Array, // password-derived, filled in below
  krbtgt: seq(32, 0x40),
  service: seq(32, 0x60),
  tgtSession: seq(32, 0x80),
  serviceSession: seq(32, 0xa0),
  kadmin: seq(32, 0xc0),
  adminSession: seq(32, 0xe0),
  adminSession2: seq(32, 0x10),
  /** The random key addprinc --randkey made in the admin example (a daemon draws it at random). */
  newServiceKey: seq(32, 0x24),
}
const SMALL_KDF = { alg: 'scrypt', N: 1024, r: 8, p: 1 } as const

/**
 * The `text` of the example KRB_ERRORs: what Tessera's KDC sends for these codes. Texts are
 * informative only (PROTOCOL.md §9); test/proto/vectors.test.ts checks these against a daemon.
 */
export const DAEMON_TEXTS = {
  PREAUTH_REQUIRED: 'pre-authentication required',
  SKEW: 'clock skew too great',
  /** AdminResult.text of the getprinc refused to alice (no ACL line names her). */
  GETPRINC_REFUSED:
    "getprinc requires the 'i' (inquire) permission on bob@EXAMPLE.COM: no ACL line matches alice@EXAMPLE.COM on bob@EXAMPLE.COM: 'i' (inquire) is not granted",
} as const

// ---------------------------------------------------------------- files

type VectorFile = { description: string; [k: string]: unknown }

function framing(): VectorFile {
  const bodies: [string, Uint8Array][] = [
    ['empty body', new Uint8Array(0)],
    ['one byte', unhex('c0')],
    ['HS_INIT body', encode({ v, t: MsgType.HS_INIT, e: seq(32, 0x20) })],
    ['300 bytes counting up', seq(300)],
  ]
  return {
    description:
      'Framing: frame = uint32be(len(body)) || body. A reader refuses a header announcing more than maxFrameBytes ' +
      '(default 65536) before reading any of the body.',
    frames: bodies.map(([name, body]) => ({ name, body: hex(body), frame: hex(frame(body)) })),
    headers: [
      { name: 'largest accepted by default', maxFrameBytes: 65536, header: '00010000', length: 65536, accepted: true },
      { name: 'one byte over the default cap', maxFrameBytes: 65536, header: '00010001', length: 65537, accepted: false, error: 'TESSERA_FRAME_TOO_LARGE' },
      { name: 'all ones', maxFrameBytes: 65536, header: 'ffffffff', length: 4294967295, accepted: false, error: 'TESSERA_FRAME_TOO_LARGE' },
      { name: 'custom cap 1024, 1025 announced', maxFrameBytes: 1024, header: '00000401', length: 1025, accepted: false, error: 'TESSERA_FRAME_TOO_LARGE' },
    ],
  }
}

function codec(): VectorFile {
  const values: [string, unknown][] = [
    ['uint 0 (positive fixint)', 0],
    ['uint 127 (positive fixint)', 127],
    ['uint 128 (uint8)', 128],
    ['uint 255 (uint8)', 255],
    ['uint 256 (uint16)', 256],
    ['uint 65535 (uint16)', 65535],
    ['uint 65536 (uint32)', 65536],
    ['uint 2^32-1 (uint32)', 0xffffffff],
    ['uint 2^32 (int64)', 0x100000000],
    ['uint 2^53-1 (int64)', Number.MAX_SAFE_INTEGER],
    ['time in ms (int64)', T0],
    ['time in us (int64)', T0 * 1000 + 123],
    ['true', true],
    ['false', false],
    ['empty str (fixstr)', ''],
    ['str of 31 bytes (fixstr)', 'x'.repeat(31)],
    ['str of 32 bytes (str8)', 'x'.repeat(32)],
    ['str of 256 bytes (str16)', 'y'.repeat(256)],
    ['non-ASCII str: 16 chars, 32 UTF-8 bytes (str8)', 'é'.repeat(16)],
    ['empty bin (bin8)', new Uint8Array(0)],
    ['bin of 32 bytes (bin8)', seq(32)],
    ['bin of 256 bytes (bin16)', seq(256)],
    ['array of 2 str (fixarray)', ['krbtgt', REALM]],
    ['array of 16 (array16)', Array.from({ length: 16 }, (_, i) => i)],
    ['map of 16 (map16)', Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i.toString(16)}`, i]))],
  ]
  const asReq = {
    v,
    t: MsgType.AS_REQ,
    cname: ['alice'],
    realm: REALM,
    sname: ['krbtgt', REALM],
    till: T0 + 36_000_000,
    nonce: 0x12345678,
    options: KdcOption.RENEWABLE | KdcOption.FORWARDABLE,
    padata: [],
  }
  const messages: [string, unknown][] = [
    ['HS_INIT', { v, t: MsgType.HS_INIT, e: seq(32, 0x20) }],
    ['AS_REQ without padata', asReq],
    ['AS_REQ with rtill', { ...asReq, rtill: T0 + 7 * 86_400_000 }],
    [
      'KRB_ERROR PREAUTH_REQUIRED with edata (stime > 2^32)',
      {
        v,
        t: MsgType.KRB_ERROR,
        code: ErrorCode.KDC_ERR_PREAUTH_REQUIRED,
        text: DAEMON_TEXTS.PREAUTH_REQUIRED,
        stime: T0,
        edata: { salt: `${REALM}alice`, kdf: { alg: 'scrypt', N: 32768, r: 8, p: 1 } },
      },
    ],
    ['KRB_ERROR SKEW', { v, t: MsgType.KRB_ERROR, code: ErrorCode.KRB_AP_ERR_SKEW, text: DAEMON_TEXTS.SKEW, stime: 2 ** 53 - 1 }],
    ['TIME_REQ', { v, t: MsgType.TIME_REQ, nonce: seq(32, 0x50) }],
  ]
  // Encodings Tessera never sends but a receiver must accept, with the value they decode to.
  const skewText = DAEMON_TEXTS.SKEW
  const canonicalSkew = hex(encode({ v, t: MsgType.KRB_ERROR, code: 37, text: skewText, stime: T0 }))
  const skewTextFix = hex(encode(skewText))
  const skewTextStr8 = `d9${skewText.length.toString(16).padStart(2, '0')}${skewTextFix.slice(2)}`
  const stimeI64 = `d3${hex(u64be(T0))}`
  const stimeU64 = `cf${hex(u64be(T0))}`
  const skewValue = { v, t: MsgType.KRB_ERROR, code: 37, text: skewText, stime: T0 }
  const accepted: [string, string, unknown][] = [
    ['stime as uint64 (0xcf) instead of int64', canonicalSkew.replace(stimeI64, stimeU64), skewValue],
    ['code as uint32 (0xce) instead of fixint', canonicalSkew.replace('a4636f646525', 'a4636f6465ce00000025'), skewValue],
    ['text as str8 (0xd9) instead of fixstr', canonicalSkew.replace(skewTextFix, skewTextStr8), skewValue],
    ['map16 header for 5 entries', canonicalSkew.replace(/^85/, 'de0005'), skewValue],
    [
      'fields in another order',
      hex(encode({ stime: T0, text: skewText, code: 37, t: MsgType.KRB_ERROR, v })),
      skewValue,
    ],
  ]
  // Accepted although senders MUST NOT produce them (see PROTOCOL.md §4). None today.
  const lenient: [string, string, unknown][] = []
  const hsInit = hex(encode({ v, t: MsgType.HS_INIT, e: seq(32, 0x20) }))
  const rejected: [string, string, string][] = [
    ['empty body', '', 'TESSERA_DECODE'],
    ['code as float64 37.0 (no float is allowed)', canonicalSkew.replace('a4636f646525', 'a4636f6465cb4042800000000000'), 'TESSERA_DECODE'],
    ['float32 value', '81a178ca3fc00000', 'TESSERA_DECODE'],
    ['"__proto__" map key', '81a95f5f70726f746f5f5f01', 'TESSERA_DECODE'],
    ['truncated map', hsInit.slice(0, -2), 'TESSERA_DECODE'],
    ['trailing byte after the value', `${hsInit}c0`, 'TESSERA_DECODE'],
    ['extension type fixext1 (0xd4)', '81a178d40001', 'TESSERA_DECODE'],
    ['fixext1 of type 0x72 at top level', 'd47200', 'TESSERA_DECODE'],
    ['timestamp extension (0xd6 -1)', '81a178d6ff00000000', 'TESSERA_DECODE'],
    ['reserved byte 0xc1', 'c1', 'TESSERA_DECODE'],
    ['integer map key', '8101c0', 'TESSERA_DECODE'],
    ['uint64 2^53 (beyond 2^53-1)', `81a178cf${hex(u64be(2 ** 53))}`, 'TESSERA_DECODE'],
    ['uint64 2^64-1', '81a178cfffffffffffffffff', 'TESSERA_DECODE'],
    ['nesting 17 deep', `${'91'.repeat(17)}c0`, 'TESSERA_DECODE'],
    ['array of 1025 entries', `dc0401${'c0'.repeat(1025)}`, 'TESSERA_DECODE'],
    ['array header announcing more than the body holds', 'dd7fffffff', 'TESSERA_DECODE'],
    ['int64 -2^53 (beyond -(2^53-1))', `81a178d3${'ffe0000000000000'}`, 'TESSERA_DECODE'],
    ['duplicate map key', '82a17801a17802', 'TESSERA_DECODE'],
    ['duplicate map key spelled fixstr then str8', '82a17801d9017802', 'TESSERA_DECODE'],
    ['string that is not valid UTF-8', '81a178a2c328', 'TESSERA_DECODE'],
    ['not a map', '93010203', 'TESSERA_VALIDATION'],
    ['unknown message type 99', '82a17601a17463', 'TESSERA_VALIDATION'],
    ['wrong protocol version 2', hsInit.replace(/^83a17601/, '83a17602'), 'TESSERA_VALIDATION'],
    ['missing field (HS_INIT without e)', '82a17601a17401', 'TESSERA_VALIDATION'],
    ['extra field', `84${hsInit.slice(2)}a178c0`, 'TESSERA_VALIDATION'],
    ['__proto__ key', `84${hsInit.slice(2)}a95f5f70726f746f5f5f80`, 'TESSERA_DECODE'],
    ['str where bin is expected (HS_INIT.e)', `83a17601a17401a165d920${'61'.repeat(32)}`, 'TESSERA_VALIDATION'],
    ['bin of 31 bytes where 32 are required', `83a17601a17401a165c41f${'00'.repeat(31)}`, 'TESSERA_VALIDATION'],
    ['nil for an absent optional field', hex(encode({ ...asReq, rtill: null })), 'TESSERA_VALIDATION'],
    ['negative integer', hex(encode({ ...asReq, nonce: -1 })), 'TESSERA_VALIDATION'],
    ['non-integer number', hex(encode({ ...asReq, nonce: 1.5 })), 'TESSERA_DECODE'],
  ]
  return {
    description:
      'Plain MessagePack. `values`/`messages`: value -> exact bytes Tessera emits (smallest encoding for integers up ' +
      'to 2^32-1, int64 0xd3 above; fixstr/str8/str16/str32 and bin8/bin16/bin32 by length; map keys in the order ' +
      'given). `accepted`: other valid encodings a receiver must decode to the same value. `lenient`: accepted by ' +
      'this implementation although senders must not produce them. `rejected`: bodies a receiver must refuse, with ' +
      "Tessera's local error code (both are answered on the wire with TSR_ERR_MALFORMED 100).",
    values: values.map(([name, value]) => ({ name, value: toJsonValue(value), msgpack: hex(encode(value)) })),
    messages: messages.map(([name, value]) => ({ name, value: toJsonValue(value), msgpack: hex(encode(value)) })),
    accepted: accepted.map(([name, msgpack, value]) => ({ name, msgpack, value: toJsonValue(value) })),
    lenient: lenient.map(([name, msgpack, value]) => ({ name, msgpack, value: toJsonValue(value) })),
    rejected: rejected.map(([name, msgpack, error]) => ({ name, msgpack, error })),
  }
}

function usageKeys(): VectorFile {
  const key = seq(32)
  return {
    description: 'Per-usage subkey: subkey = HMAC-SHA256(key, "tessera/usage/v1" || uint32be(usage)).',
    vectors: [
      ...Object.entries(KeyUsage).map(([name, usage]) => ({ name, key: hex(key), usage, subkey: hex(usageKey(key, usage)) })),
      { name: 'usage 0, key of 0xff', key: hex(new Uint8Array(32).fill(0xff)), usage: 0, subkey: hex(usageKey(new Uint8Array(32).fill(0xff), 0)) },
      { name: 'usage 2^32-1', key: hex(key), usage: 0xffffffff, subkey: hex(usageKey(key, 0xffffffff)) },
    ],
  }
}

function sealing(): VectorFile {
  const cases: [string, Uint8Array, number, Uint8Array, Uint8Array][] = [
    ['empty plaintext, usage 1', seq(32), KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, seq(24, 0x80), new Uint8Array(0)],
    ['one byte, usage 2', seq(32), KeyUsage.KDC_REP_TICKET, seq(24, 0x90), unhex('2a')],
    ['"hello tessera", usage 3', seq(32, 0x10), KeyUsage.AS_REP_ENCPART, seq(24, 0xa0), ascii('hello tessera')],
    ['32 bytes, usage 7', seq(32, 0x20), KeyUsage.TGS_REQ_AUTH, seq(24, 0xb0), seq(32, 0xf0)],
    ['100 bytes, usage 1024', seq(32, 0x30), KeyUsage.ADMIN_REQ_BODY, new Uint8Array(24), seq(100, 0x55)],
    ['same key and nonce as the first, usage 2: different bytes', seq(32), KeyUsage.KDC_REP_TICKET, seq(24, 0x80), new Uint8Array(0)],
  ]
  return {
    description:
      'seal(key, usage, plaintext) = nonce(24) || secretbox(plaintext, nonce, usageKey(key, usage)), where NaCl ' +
      'secretbox (XSalsa20-Poly1305) outputs tag(16) || ciphertext. open is the inverse and fails with ' +
      'KRB_AP_ERR_BAD_INTEGRITY (31) under any other key or usage.',
    vectors: cases.map(([name, key, usage, nonce, plaintext]) => ({
      name,
      key: hex(key),
      usage,
      subkey: hex(usageKey(key, usage)),
      nonce: hex(nonce),
      plaintext: hex(plaintext),
      sealed: hex(seal(key, usage, plaintext, nonce)),
    })),
  }
}

async function passwordKeys(): Promise<VectorFile> {
  const nfd = 'pa\u0308sswo\u0308rd' // "pässwörd" with combining diaeresis (NFD)
  const cases: [string, string, string, string, { alg: 'scrypt'; N: number; r: number; p: number }][] = [
    ['ASCII password, small params', 'password', REALM, 'alice', SMALL_KDF],
    ['two-component principal, small params', 'correct horse battery staple', REALM, 'host/db.example.com', SMALL_KDF],
    ['non-ASCII password given in NFD (normalised to NFC first)', nfd, REALM, 'alice', SMALL_KDF],
    ['non-ASCII password given in NFC: same key as the NFD one', nfd.normalize('NFC'), REALM, 'alice', SMALL_KDF],
    ['empty password, p=2', '', 'R', 'bob', { alg: 'scrypt', N: 1024, r: 8, p: 2 }],
    ['default parameters N=32768 r=8 p=1', 'password', REALM, 'alice', { alg: 'scrypt', N: 32768, r: 8, p: 1 }],
  ]
  const vectors = []
  for (const [name, password, realm, principal, kdf] of cases) {
    const salt = defaultSalt(realm, principal)
    vectors.push({
      name,
      password,
      passwordNfcUtf8: hex(new Uint8Array(Buffer.from(password.normalize('NFC'), 'utf8'))),
      realm,
      principal,
      salt,
      saltUtf8: hex(new Uint8Array(Buffer.from(salt, 'utf8'))),
      kdf,
      key: hex(await passwordToKey(password, salt, kdf)),
    })
  }
  return {
    description:
      'Password -> key: scrypt(P = UTF-8(NFC(password)), S = UTF-8(realm || principal), N, r, p, dkLen = 32). ' +
      'principal is the canonical name, components joined by "/".',
    vectors,
  }
}

function x25519Vectors(): VectorFile {
  const alice = unhex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')
  const bob = unhex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb')
  const rfcScalar = unhex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4')
  const rfcU = unhex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c')
  const kdc = seq(32, 0x01)
  const pub = (sk: Uint8Array) => backend().x25519Base(sk)
  return {
    description:
      'X25519 (RFC 7748). `publicKeys`: secret -> X25519(secret, 9). `shared`: X25519(secret, public). ' +
      '`lowOrder`: public keys every implementation must refuse (all-zero shared secret), RFC 7748 §6.1 / §7; ' +
      'with and without the top bit set, which X25519 ignores.',
    publicKeys: [
      { name: 'RFC 7748 §6.1 Alice', secretKey: hex(alice), publicKey: hex(pub(alice)) },
      { name: 'RFC 7748 §6.1 Bob', secretKey: hex(bob), publicKey: hex(pub(bob)) },
      { name: 'Tessera fixed KDC static key 01..20', secretKey: hex(kdc), publicKey: hex(pub(kdc)) },
    ],
    shared: [
      { name: 'RFC 7748 §6.1 Alice x Bob', secretKey: hex(alice), publicKey: hex(pub(bob)), shared: hex(x25519(alice, pub(bob))) },
      { name: 'RFC 7748 §6.1 Bob x Alice', secretKey: hex(bob), publicKey: hex(pub(alice)), shared: hex(x25519(bob, pub(alice))) },
      { name: 'RFC 7748 §5.2 first scalar-multiplication vector', secretKey: hex(rfcScalar), publicKey: hex(rfcU), shared: hex(x25519(rfcScalar, rfcU)) },
    ],
    lowOrder: LOW_ORDER_POINTS.map(([name, p]) => ({ name, publicKey: p })),
  }
}

/** Curve25519 points of small order (and their encodings with the ignored top bit set). */
export const LOW_ORDER_POINTS: readonly (readonly [string, string])[] = (() => {
  const base: [string, string][] = [
    ['u = 0 (the all-zero point)', '0000000000000000000000000000000000000000000000000000000000000000'],
    ['u = 1', '0100000000000000000000000000000000000000000000000000000000000000'],
    ['order-8 point (a)', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'],
    ['order-8 point (b)', '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157'],
    ['u = p-1', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
    ['u = p (non-canonical 0)', 'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
    ['u = p+1 (non-canonical 1)', 'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f'],
  ]
  const out: [string, string][] = []
  for (const [name, h] of base) {
    out.push([name, h])
    const b = unhex(h)
    b[31] = b[31]! | 0x80
    out.push([`${name}, top bit set`, hex(b)])
  }
  return out
})()

function ed25519Vectors(): VectorFile {
  const cases: [string, Uint8Array, Uint8Array][] = [
    ['RFC 8032 §7.1 TEST 1 (empty message)', unhex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'), new Uint8Array(0)],
    ['RFC 8032 §7.1 TEST 2 (one byte)', unhex('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb'), unhex('72')],
    ['RFC 8032 §7.1 TEST 3 (two bytes)', unhex('c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7'), unhex('af82')],
    ['Tessera fixed KDC signing seed 33..52, ASCII message', seq(32, 0x33), ascii('tessera')],
  ]
  return {
    description: 'Ed25519 (RFC 8032): 32-byte seed -> public key; detached 64-byte signature of message.',
    vectors: cases.map(([name, seed, message]) => ({
      name,
      seed: hex(seed),
      publicKey: hex(backend().ed25519PublicKey(seed)),
      message: hex(message),
      signature: hex(sign(message, seed)),
    })),
  }
}

/** The fixed key pairs of the handshake vector. */
export const HANDSHAKE_SECRETS = {
  serverStatic: seq(32, 0x01),
  clientEphemeral: seq(32, 0x21),
  serverEphemeral: seq(32, 0x41),
}

/** The fixed inputs of the resumption vectors (PROTOCOL.md §3.6); every other value is derived. */
export const RESUMPTION_INPUTS = {
  /** The ticket handed out in HS_RESP of handshake.json (opaque to the client; Tessera's own are 84 bytes too). */
  ticket: seq(84, 0x81),
  /** The ticket handed out in HS_RESUMED of resumption.json. */
  nextTicket: seq(84, 0x11),
  /** Ticket lifetime told to the client, seconds (Tessera's default). */
  lifetimeS: 3600,
  /** Client random of HS_RESUME. */
  cr: seq(32, 0x61),
  /** Ticket age stated in HS_RESUME, ms. */
  ageMs: 2500,
  /** Server random of HS_RESUMED. */
  ns: seq(32, 0xe0),
}

/** The ticket box and its plaintext, checked against openTicketBox. */
function ticketBox(kRes: Uint8Array, lifetimeS: number, tk: Uint8Array) {
  const plaintext = concat(u32be(lifetimeS), tk)
  const box = sealTicketBox(new Uint8Array(kRes), lifetimeS, tk)
  if (hex(box) !== hex(backend().secretbox(plaintext, new Uint8Array(24), kRes))) throw new Error('ticket box: sealTicketBox disagrees')
  const opened = openTicketBox(new Uint8Array(kRes), box)
  if (!opened || opened.lifetimeS !== lifetimeS || hex(opened.tk) !== hex(tk)) throw new Error('ticket box: does not open back')
  return { lifetime_s: lifetimeS, tk: hex(tk), plaintext: hex(plaintext), box: hex(box) }
}

/** {message, msgpack, frame} of a message sent in clear. */
const clearMessage = (m: object) => ({ message: toJsonValue(m), msgpack: hex(encode(m)), frame: hex(frame(encode(m))) })

/** A sealed transport frame entry of the vectors. */
function sealedFrameEntry(direction: 'c2s' | 's2c', key: Uint8Array, counter: number, msg: object, extra: Record<string, unknown> = {}) {
  const body = encode(msg)
  const sealed = sealFrame(key, counter, body)
  return {
    direction,
    ...extra,
    counter,
    nonce: hex(counterNonce(counter)),
    message: toJsonValue(msg),
    msgpack: hex(body),
    sealed: hex(sealed),
    frame: hex(frame(sealed)),
  }
}

/** The AS_REQ the client sends first in the handshake vector (and after resuming). */
function exampleAsReq() {
  return {
    v,
    t: MsgType.AS_REQ,
    cname: ['alice'],
    realm: REALM,
    sname: ['krbtgt', REALM],
    till: T0 + 36_000_000,
    nonce: 0x12345678,
    options: 0,
    padata: [],
  }
}

/** The full handshake's keys, with the fixed secrets. */
function handshakeKeys() {
  const kp = (sk: Uint8Array) => ({ secretKey: new Uint8Array(sk), publicKey: backend().x25519Base(sk) })
  const S = kp(HANDSHAKE_SECRETS.serverStatic)
  const Ec = kp(HANDSHAKE_SECRETS.clientEphemeral)
  const Es = kp(HANDSHAKE_SECRETS.serverEphemeral)
  const srv = serverHandshake({ ...S, secretKey: new Uint8Array(S.secretKey) }, Ec.publicKey, kp(Es.secretKey))
  const cli = clientHandshakeFinish(S.publicKey, kp(Ec.secretKey), srv.e, srv.confirm)
  if (!cli) throw new Error('handshake vector: client could not finish')
  const h = transcriptHash(S.publicKey, Ec.publicKey, Es.publicKey)
  const es = x25519(Ec.secretKey, S.publicKey)
  const ee = x25519(Ec.secretKey, Es.publicKey)
  const ikm = concat(es, ee)
  const okm = hkdf(ikm, h, 'tessera-nk-v1 keys', 160)
  const [kRes, rms] = [okm.slice(96, 128), okm.slice(128, 160)]
  for (const [name, a, b] of [
    ['k_c2s', cli.c2s, okm.subarray(0, 32)],
    ['k_s2c', cli.s2c, okm.subarray(32, 64)],
    ['k_res', cli.res!, kRes],
    ['rms', cli.rms!, rms],
    ['server k_res', srv.keys.res!, kRes],
    ['server rms', srv.keys.rms!, rms],
  ] as const)
    if (hex(a) !== hex(b)) throw new Error(`handshake vector: ${name} of the key schedule disagrees with the HKDF output`)
  return { S, Ec, Es, srv, cli, h, es, ee, ikm, okm, kConfirm: okm.slice(64, 96), kRes, rms }
}

function handshakeVector(): VectorFile {
  const { S, Ec, Es, srv, cli, h, es, ee, ikm, okm, kConfirm, kRes, rms } = handshakeKeys()
  const hsInit = { v, t: MsgType.HS_INIT, e: Ec.publicKey }
  // Key ids (§3.7): computed here from the definition, checked against the implementation.
  const kidOf = (pub: Uint8Array) => sha256(ascii('tessera-key-id-v1'), pub).slice(0, 8)
  const transportKid = kidOf(S.publicKey)
  const signingKid = kidOf(backend().ed25519PublicKey(SIGNING_SEED))
  if (hex(transportKid) !== hex(identityKeyId(S.publicKey))) throw new Error('handshake vector: key id disagrees with identityKeyId')
  const hsInitWithKeyId = { ...hsInit, k: transportKid }
  const hsResp = { v, t: MsgType.HS_RESP, e: srv.e, confirm: srv.confirm }
  const nt = ticketBox(kRes, RESUMPTION_INPUTS.lifetimeS, RESUMPTION_INPUTS.ticket)
  const hsRespWithNt = { ...hsResp, nt: unhex(nt.box) }

  const c2sMsgs = [exampleAsReq(), { v, t: MsgType.TIME_REQ, nonce: seq(32, 0x50) }]
  const s2cMsgs = [
    {
      v,
      t: MsgType.KRB_ERROR,
      code: ErrorCode.KDC_ERR_PREAUTH_REQUIRED,
      text: DAEMON_TEXTS.PREAUTH_REQUIRED,
      stime: T0,
      edata: { salt: `${REALM}alice`, kdf: SMALL_KDF },
    },
    timeRep().message,
  ]
  const frames = []
  for (const [direction, key, msgs] of [
    ['c2s', cli.c2s, c2sMsgs],
    ['s2c', cli.s2c, s2cMsgs],
  ] as const) {
    for (let counter = 0; counter < msgs.length; counter++) frames.push(sealedFrameEntry(direction, key, counter, msgs[counter]!))
  }
  return {
    description:
      'Transport handshake (PROTOCOL.md §3) with fixed keys, then the first two sealed frames in each direction. ' +
      'h = SHA-256("tessera-nk-v1" || S_pub || Ec_pub || Es_pub); es = X25519(Ec, S_pub); ee = X25519(Ec, Es_pub); ' +
      'okm = HKDF-SHA256(ikm = es || ee, salt = h, info = "tessera-nk-v1 keys", L = 160) = k_c2s || k_s2c || k_confirm || k_res || rms ' +
      '(its first 96 bytes are the same with L = 96); ' +
      'confirm = secretbox(h, 24 zero bytes, k_confirm). Frame n of a direction: ' +
      'uint32be(len) || secretbox(msgpack(message), uint64be(n) || 16 zero bytes, k_dir). ' +
      '`hsResp` is HS_RESP without a ticket; `nt` is a resumption ticket box (§3.6) for the fixed example ticket `nt.tk`: ' +
      'nt.box = secretbox(nt.plaintext = uint32be(lifetime_s) || tk, 24 zero bytes, k_res), sent in `hsRespWithNt`. ' +
      'resumption.json continues from `rms` and `nt.tk`. ' +
      'Key ids (§3.7): transport_kid = SHA-256("tessera-key-id-v1" || S_pub)[0:8], signing_kid the same of ' +
      "time-signature.json's signingKey; `hsInitWithKeyId` is HS_INIT naming S_pub by `k` (the keys and h are the same).",
    serverStatic: { secretKey: hex(S.secretKey), publicKey: hex(S.publicKey) },
    clientEphemeral: { secretKey: hex(Ec.secretKey), publicKey: hex(Ec.publicKey) },
    serverEphemeral: { secretKey: hex(Es.secretKey), publicKey: hex(Es.publicKey) },
    hsInit: clearMessage(hsInit),
    transport_kid: hex(transportKid),
    signing_kid: hex(signingKid),
    hsInitWithKeyId: clearMessage(hsInitWithKeyId),
    h: hex(h),
    es: hex(es),
    ee: hex(ee),
    ikm: hex(ikm),
    okm: hex(okm),
    k_c2s: hex(cli.c2s),
    k_s2c: hex(cli.s2c),
    k_confirm: hex(kConfirm),
    k_res: hex(kRes),
    rms: hex(rms),
    confirm: hex(srv.confirm),
    hsResp: clearMessage(hsResp),
    nt,
    hsRespWithNt: clearMessage(hsRespWithNt),
    frames,
  }
}

function resumptionVector(): VectorFile {
  const { S, rms } = handshakeKeys()
  const { ticket: tk, nextTicket, lifetimeS, cr, ageMs, ns } = RESUMPTION_INPUTS
  const ageBytes = new Uint8Array(4)
  new DataView(ageBytes.buffer).setUint32(0, ageMs)
  const hInput = concat(ascii('tessera-resume-v1'), S.publicKey, cr, ageBytes, tk)
  const h = sha256(hInput)
  const kEarly = hkdf(rms, h, 'tessera-resume-v1 early', 32)
  const early = resumeEarly(S.publicKey, cr, ageMs, tk, rms)
  if (hex(early.h) !== hex(h) || hex(early.earlyKey) !== hex(kEarly)) throw new Error('resumption vector: resumeEarly disagrees')

  const earlyReq = { v, t: MsgType.TIME_REQ, nonce: seq(32, 0x50) }
  const x = sealEarly(kEarly, encode(earlyReq))
  if (hex(openEarly(kEarly, x)!) !== hex(encode(earlyReq))) throw new Error('resumption vector: x does not open')
  const hsResume = { v, t: MsgType.HS_RESUME, tk, cr, age: ageMs, x }

  // x is bound into h2: stripping or adding early data on the way fails the key confirmation.
  const xhInput = concat(ascii('tessera-resume-v1 x'), Uint8Array.of(1), x)
  const xh = sha256(xhInput)
  if (hex(earlyDataHash(x)) !== hex(xh)) throw new Error('resumption vector: earlyDataHash disagrees')
  const h2 = sha256(h, xh, ns)
  const okm = hkdf(rms, h2, 'tessera-resume-v1 keys', 160)
  const [kC2s, kS2c, kConfirm, kRes, rmsNext] = [0, 1, 2, 3, 4].map((i) => okm.slice(32 * i, 32 * i + 32)) as [
    Uint8Array,
    Uint8Array,
    Uint8Array,
    Uint8Array,
    Uint8Array,
  ]
  const { confirmKey, keys } = resumeKeys(h, x, ns, rms)
  for (const [name, a, b] of [
    ['h2', keys.h, h2],
    ['k_c2s', keys.c2s, kC2s],
    ['k_s2c', keys.s2c, kS2c],
    ['k_confirm', confirmKey, kConfirm],
    ['k_res', keys.res!, kRes],
    ['rms', keys.rms!, rmsNext],
  ] as const)
    if (hex(a) !== hex(b)) throw new Error(`resumption vector: resumeKeys disagrees on ${name}`)
  const confirm = confirmBox(confirmKey, h2)
  if (!checkConfirm(new Uint8Array(kConfirm), h2, confirm)) throw new Error('resumption vector: confirm does not check')
  const nt = ticketBox(kRes, lifetimeS, nextTicket)
  const hsResumed = { v, t: MsgType.HS_RESUMED, n: ns, confirm, nt: unhex(nt.box) }

  // The same resumption without early data (HS_RESUME without x, same ns).
  const xhInputNone = concat(ascii('tessera-resume-v1 x'), Uint8Array.of(0))
  const xhNone = sha256(xhInputNone)
  if (hex(earlyDataHash(undefined)) !== hex(xhNone)) throw new Error('resumption vector: earlyDataHash disagrees without x')
  const h2None = sha256(h, xhNone, ns)
  const okmNone = hkdf(rms, h2None, 'tessera-resume-v1 keys', 160)
  const none = resumeKeys(h, undefined, ns, rms)
  if (hex(none.keys.h) !== hex(h2None) || hex(none.keys.c2s) !== hex(okmNone.subarray(0, 32)))
    throw new Error('resumption vector: resumeKeys disagrees without x')
  const confirmNone = confirmBox(none.confirmKey, h2None)

  return {
    description:
      'Transport resumption (PROTOCOL.md §3.6), continuing handshake.json: the client holds that connection\'s `rms` ' +
      'and the ticket `tk` from its `nt` (lifetime 3600 s). h = SHA-256(h_input = "tessera-resume-v1" || S_pub || cr || uint32be(age) || tk); ' +
      'k_early = HKDF-SHA256(IKM = rms, salt = h, info = "tessera-resume-v1 early", L = 32); ' +
      'x = secretbox(msgpack(early request), 24 zero bytes, k_early), sent in HS_RESUME with `age` in ms. ' +
      'xh = SHA-256(xh_input = "tessera-resume-v1 x" || 0x01 || x) binds x (as sent) into the keys; ' +
      'the server picks ns; h2 = SHA-256(h || xh || ns); okm = HKDF-SHA256(IKM = rms, salt = h2, info = "tessera-resume-v1 keys", ' +
      'L = 160) = k_c2s || k_s2c || k_confirm || k_res || rms_next; confirm = secretbox(h2, 24 zero bytes, k_confirm); ' +
      'nt.box = secretbox(uint32be(lifetime_s) || nt.tk, 24 zero bytes, k_res) carries the next ticket (for rms_next) in ' +
      'HS_RESUMED. Then sealed frames as after a full handshake, counters from 0 (x does not count): s2c 0 is the reply ' +
      'to the early request, c2s 0 is the client\'s next request. A client then resumes with (nt.tk, rms_next). ' +
      '`withoutEarlyData` is the same resumption with no x in HS_RESUME: xh = SHA-256("tessera-resume-v1 x" || 0x00), ' +
      'and h2, okm and confirm follow from it as above.',
    serverStaticPublicKey: hex(S.publicKey),
    rms: hex(rms),
    tk: hex(tk),
    lifetime_s: lifetimeS,
    cr: hex(cr),
    age: ageMs,
    early: { message: toJsonValue(earlyReq), msgpack: hex(encode(earlyReq)) },
    h_input: hex(hInput),
    h: hex(h),
    k_early: hex(kEarly),
    x: hex(x),
    hsResume: clearMessage(hsResume),
    xh_input: hex(xhInput),
    xh: hex(xh),
    ns: hex(ns),
    h2: hex(h2),
    okm: hex(okm),
    k_c2s: hex(kC2s),
    k_s2c: hex(kS2c),
    k_confirm: hex(kConfirm),
    k_res: hex(kRes),
    rms_next: hex(rmsNext),
    confirm: hex(confirm),
    nt,
    hsResumed: clearMessage(hsResumed),
    withoutEarlyData: {
      xh_input: hex(xhInputNone),
      xh: hex(xhNone),
      h2: hex(h2None),
      okm: hex(okmNone),
      confirm: hex(confirmNone),
    },
    frames: [
      sealedFrameEntry('s2c', kS2c, 0, timeRep().message, { role: 'reply to the early request' }),
      sealedFrameEntry('c2s', kC2s, 0, exampleAsReq(), { role: "the client's first sealed frame" }),
    ],
  }
}

/** Context string that starts the signed input of a TIME_REP. */
export const TIME_SIG_CONTEXT = 'tessera-time-v1'

/** The signed input of a TIME_REP: "tessera-time-v1" || nonce(32) || uint64be(recv) || uint64be(xmit) || uint32be(radius). */
export function timeSignatureInput(nonce: Uint8Array, recv: number, xmit: number, radius: number): Uint8Array {
  if (nonce.length !== 32) throw new RangeError('time nonce must be 32 bytes')
  return concat(ascii(TIME_SIG_CONTEXT), nonce, u64be(recv), u64be(xmit), u32be(radius))
}

/** The fixed Ed25519 seed of the realm signing key in the vectors. */
export const SIGNING_SEED = seq(32, 0x33)
/** The fixed Ed25519 seed of the client's proof-of-possession key in the JWT exchange vectors. */
export const JWT_CLIENT_SEED = seq(32, 0x60)

function timeRep() {
  const nonce = seq(32, 0x50)
  const recv = T0 * 1000 + 250
  const xmit = recv + 37
  const radius = 1000
  const input = timeSignatureInput(nonce, recv, xmit, radius)
  const sig = sign(input, SIGNING_SEED)
  return { nonce, recv, xmit, radius, input, sig, message: { v, t: MsgType.TIME_REP, nonce, recv, xmit, radius, sig } }
}

function timeSignature(): VectorFile {
  const r = timeRep()
  return {
    description:
      'TIME_REP signature (contract for the time service): sig = Ed25519(signing seed, "tessera-time-v1" || nonce(32) || ' +
      'uint64be(recv) || uint64be(xmit) || uint32be(radius)); recv/xmit in microseconds since the epoch, radius in ' +
      'microseconds. Verified with realm.json signingKey.',
    signingSeed: hex(SIGNING_SEED),
    signingKey: hex(backend().ed25519PublicKey(SIGNING_SEED)),
    context: TIME_SIG_CONTEXT,
    nonce: hex(r.nonce),
    recv: r.recv,
    xmit: r.xmit,
    radius: r.radius,
    input: hex(r.input),
    sig: hex(r.sig),
    timeRep: { message: toJsonValue(r.message), msgpack: hex(encode(r.message)) },
  }
}

async function exchanges(): Promise<VectorFile> {
  KEYS.client = await passwordToKey('password', defaultSalt(REALM, 'alice'), SMALL_KDF)
  const steps: Record<string, unknown>[] = []
  const sealedStep = (name: string, schema: string, keyName: keyof typeof KEYS, usage: number, nonce: Uint8Array, inner: unknown) => {
    const msgpack = encode(inner)
    const sealed = seal(KEYS[keyName], usage, msgpack, nonce)
    steps.push({
      name,
      kind: 'sealed',
      schema,
      key: keyName,
      usage,
      nonce: hex(nonce),
      inner: toJsonValue(inner),
      msgpack: hex(msgpack),
      sealed: hex(sealed),
    })
    return sealed
  }
  const messageStep = (name: string, message: object) => {
    steps.push({ name, kind: 'message', message: toJsonValue(message), msgpack: hex(encode(message)) })
  }
  const alice = ['alice']
  const krbtgt = ['krbtgt', REALM]
  const svc = ['host', 'db.example.com']
  const kadmin = ['kadmin', 'admin']
  const till = T0 + 36_000_000
  const initialFlags = TicketFlag.INITIAL | TicketFlag.PRE_AUTHENT | TicketFlag.RENEWABLE

  // AS
  const asReq0 = { v, t: MsgType.AS_REQ, cname: alice, realm: REALM, sname: krbtgt, till, nonce: 0x01020304, options: KdcOption.RENEWABLE, padata: [] as unknown[] }
  messageStep('AS_REQ without padata', asReq0)
  messageStep('KRB_ERROR KDC_ERR_PREAUTH_REQUIRED with pre-auth hints', {
    v,
    t: MsgType.KRB_ERROR,
    code: ErrorCode.KDC_ERR_PREAUTH_REQUIRED,
    text: DAEMON_TEXTS.PREAUTH_REQUIRED,
    stime: T0,
    edata: { salt: defaultSalt(REALM, 'alice'), kdf: SMALL_KDF },
  })
  const paTs = sealedStep('PA-ENC-TIMESTAMP value', 'PaEncTs', 'client', KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, seq(24, 0x11), { ts: T0 + 1000, us: 500 })
  messageStep('AS_REQ with PA-ENC-TIMESTAMP', { ...asReq0, padata: [{ type: PaType.PA_ENC_TIMESTAMP, value: paTs }] })
  const tgtEnc = sealedStep('TGT EncTicketPart', 'EncTicketPart', 'krbtgt', KeyUsage.KDC_REP_TICKET, seq(24, 0x12), {
    flags: initialFlags,
    key: KEYS.tgtSession,
    crealm: REALM,
    cname: alice,
    authtime: T0 + 1000,
    starttime: T0 + 1000,
    endtime: till,
    renewTill: T0 + 7 * 86_400_000,
  })
  const tgt = { realm: REALM, sname: krbtgt, kvno: 1, enc: tgtEnc }
  const asEnc = sealedStep('AS_REP EncKdcRepPart', 'EncKdcRepPart', 'client', KeyUsage.AS_REP_ENCPART, seq(24, 0x13), {
    key: KEYS.tgtSession,
    nonce: asReq0.nonce,
    flags: initialFlags,
    authtime: T0 + 1000,
    starttime: T0 + 1000,
    endtime: till,
    renewTill: T0 + 7 * 86_400_000,
    srealm: REALM,
    sname: krbtgt,
  })
  // alice's key is password-derived, so the AS_REP repeats its salt and kdf (§6).
  messageStep('AS_REP', {
    v,
    t: MsgType.AS_REP,
    crealm: REALM,
    cname: alice,
    kvno: 1,
    salt: defaultSalt(REALM, 'alice'),
    kdf: SMALL_KDF,
    ticket: tgt,
    enc: asEnc,
  })

  // TGS
  const tgsAuth = sealedStep('TGS_REQ TgsAuthenticator', 'TgsAuthenticator', 'tgtSession', KeyUsage.TGS_REQ_AUTH, seq(24, 0x14), {
    crealm: REALM,
    cname: alice,
    ctime: T0 + 2000,
    cusec: 7,
    sname: svc,
    till,
    nonce: 0x0a0b0c0d,
    options: 0,
  })
  messageStep('TGS_REQ', { v, t: MsgType.TGS_REQ, ticket: tgt, auth: tgsAuth })
  const svcEnc = sealedStep('service ticket EncTicketPart', 'EncTicketPart', 'service', KeyUsage.KDC_REP_TICKET, seq(24, 0x15), {
    flags: TicketFlag.PRE_AUTHENT,
    key: KEYS.serviceSession,
    crealm: REALM,
    cname: alice,
    authtime: T0 + 1000,
    starttime: T0 + 2000,
    endtime: till,
  })
  const svcTicket = { realm: REALM, sname: svc, kvno: 3, enc: svcEnc }
  const tgsEnc = sealedStep('TGS_REP EncKdcRepPart', 'EncKdcRepPart', 'tgtSession', KeyUsage.TGS_REP_ENCPART_SESSKEY, seq(24, 0x16), {
    key: KEYS.serviceSession,
    nonce: 0x0a0b0c0d,
    flags: TicketFlag.PRE_AUTHENT,
    authtime: T0 + 1000,
    starttime: T0 + 2000,
    endtime: till,
    srealm: REALM,
    sname: svc,
  })
  messageStep('TGS_REP', { v, t: MsgType.TGS_REP, crealm: REALM, cname: alice, ticket: svcTicket, enc: tgsEnc })

  // TGS with a JWT (§15): the same request plus jwtKey, the same reply plus jwt.
  const jwtKey = backend().ed25519PublicKey(JWT_CLIENT_SEED)
  const jwtAuth = sealedStep('TGS_REQ TgsAuthenticator with jwtKey', 'TgsAuthenticator', 'tgtSession', KeyUsage.TGS_REQ_AUTH, seq(24, 0x1c), {
    crealm: REALM,
    cname: alice,
    ctime: T0 + 2000,
    cusec: 8,
    sname: svc,
    till,
    nonce: 0x0a0b0c0d,
    options: 0,
    jwtKey,
  })
  messageStep('TGS_REQ with jwtKey', { v, t: MsgType.TGS_REQ, ticket: tgt, auth: jwtAuth })
  const token = await signServiceToken(
    { secretKey: SIGNING_SEED, publicKey: backend().ed25519PublicKey(SIGNING_SEED) },
    serviceTokenClaims({
      issuer: `tessera:${REALM}`,
      client: `alice@${REALM}`,
      audience: `host/db.example.com@${REALM}`,
      now: T0 + 2000,
      endtime: till,
      maxLifeMs: 300_000,
      flags: TicketFlag.PRE_AUTHENT,
      jkt: await clientKeyThumbprint(jwtKey),
      jti: Buffer.from(seq(16, 0x00)).toString('base64url'),
    }),
  )
  const jwtEnc = sealedStep('TGS_REP EncJwtPart', 'EncJwtPart', 'tgtSession', KeyUsage.TGS_REP_JWT, seq(24, 0x1d), { token })
  messageStep('TGS_REP with jwt', { v, t: MsgType.TGS_REP, crealm: REALM, cname: alice, ticket: svcTicket, enc: tgsEnc, jwt: jwtEnc })

  // AP
  const apAuth = sealedStep('AP_REQ ApAuthenticator', 'ApAuthenticator', 'serviceSession', KeyUsage.AP_REQ_AUTH, seq(24, 0x17), {
    crealm: REALM,
    cname: alice,
    ctime: T0 + 3000,
    cusec: 42,
    subkey: seq(32, 0x99),
    seq: 1000,
  })
  messageStep('AP_REQ', { v, t: MsgType.AP_REQ, ticket: svcTicket, auth: apAuth, mutual: true })
  const apEnc = sealedStep('AP_REP EncApRepPart', 'EncApRepPart', 'serviceSession', KeyUsage.AP_REP_ENCPART, seq(24, 0x18), {
    ctime: T0 + 3000,
    cusec: 42,
    seq: 2000,
  })
  messageStep('AP_REP', { v, t: MsgType.AP_REP, enc: apEnc })

  // Admin (§8.5): alice, without any ACL line, asks for bob's record and is refused (107)
  // inside the sealed AdminResult; then the realm's admin adds a service with a random key.
  const kadminEnc = sealedStep('kadmin ticket EncTicketPart', 'EncTicketPart', 'kadmin', KeyUsage.KDC_REP_TICKET, seq(24, 0x19), {
    flags: TicketFlag.INITIAL | TicketFlag.PRE_AUTHENT,
    key: KEYS.adminSession,
    crealm: REALM,
    cname: alice,
    authtime: T0 + 4000,
    starttime: T0 + 4000,
    endtime: T0 + 304_000,
  })
  const kadminTicket = { realm: REALM, sname: kadmin, kvno: 1, enc: kadminEnc }
  const adminAuth = sealedStep('ADMIN_REQ AdminBody', 'AdminBody', 'adminSession', KeyUsage.ADMIN_REQ_BODY, seq(24, 0x1a), {
    crealm: REALM,
    cname: alice,
    ctime: T0 + 5000,
    cusec: 0,
    op: 'getprinc',
    args: { name: 'bob' },
  })
  messageStep('ADMIN_REQ', { v, t: MsgType.ADMIN_REQ, ticket: kadminTicket, auth: adminAuth })
  const adminEnc = sealedStep('ADMIN_REP AdminResult', 'AdminResult', 'adminSession', KeyUsage.ADMIN_REP_BODY, seq(24, 0x1b), {
    ok: false,
    ctime: T0 + 5000,
    cusec: 0,
    code: ErrorCode.TSR_ERR_NOT_AUTHORIZED,
    text: DAEMON_TEXTS.GETPRINC_REFUSED,
  })
  messageStep('ADMIN_REP', { v, t: MsgType.ADMIN_REP, enc: adminEnc })
  const admin = ['admin']
  const kadminEnc2 = sealedStep('kadmin ticket EncTicketPart (admin)', 'EncTicketPart', 'kadmin', KeyUsage.KDC_REP_TICKET, seq(24, 0x1c), {
    flags: TicketFlag.INITIAL | TicketFlag.PRE_AUTHENT,
    key: KEYS.adminSession2,
    crealm: REALM,
    cname: admin,
    authtime: T0 + 6000,
    starttime: T0 + 6000,
    endtime: T0 + 306_000,
  })
  const kadminTicket2 = { realm: REALM, sname: kadmin, kvno: 1, enc: kadminEnc2 }
  const addAuth = sealedStep('ADMIN_REQ AdminBody addprinc randkey', 'AdminBody', 'adminSession2', KeyUsage.ADMIN_REQ_BODY, seq(24, 0x1d), {
    crealm: REALM,
    cname: admin,
    ctime: T0 + 7000,
    cusec: 1,
    op: 'addprinc',
    args: { name: 'host/db.example.com', randkey: true },
  })
  messageStep('ADMIN_REQ addprinc randkey', { v, t: MsgType.ADMIN_REQ, ticket: kadminTicket2, auth: addAuth })
  const addEnc = sealedStep('ADMIN_REP AdminResult addprinc randkey', 'AdminResult', 'adminSession2', KeyUsage.ADMIN_REP_BODY, seq(24, 0x1e), {
    ok: true,
    ctime: T0 + 7000,
    cusec: 1,
    result: {
      name: 'host/db.example.com@EXAMPLE.COM',
      kvno: 1,
      keys: [{ realm: REALM, name: ['host', 'db.example.com'], kvno: 1, key: KEYS.newServiceKey, createdAt: T0 + 7000 }],
    },
  })
  messageStep('ADMIN_REP addprinc randkey', { v, t: MsgType.ADMIN_REP, enc: addEnc })

  const keys: Record<string, string> = {}
  for (const [k, val] of Object.entries(KEYS)) keys[k] = hex(val)
  return {
    description:
      'Worked exchanges (AS, TGS, AP, admin) with fixed keys and seal nonces. `keys.client` is passwordToKey("password", ' +
      '"EXAMPLE.COMalice", scrypt N=1024 r=8 p=1). A `sealed` step is seal(keys[key], usage, msgpack(inner), nonce); ' +
      'a `message` step is the msgpack of a top-level message embedding earlier sealed bytes. These are the bodies ' +
      'before transport sealing. The TGS exchange with a JWT (PROTOCOL.md §15): `jwtKey` is the Ed25519 public key of ' +
      `seed ${hex(JWT_CLIENT_SEED)}; the token in EncJwtPart is signed with time-signature.json's signingSeed (Ed25519 ` +
      'signatures are deterministic, so it is reproducible byte for byte).',
    keys,
    steps,
  }
}

/** Every vector file: name -> content. */
export async function generateAll(): Promise<Record<string, VectorFile>> {
  return {
    'framing.json': framing(),
    'codec.json': codec(),
    'usage-keys.json': usageKeys(),
    'seal.json': sealing(),
    'password-keys.json': await passwordKeys(),
    'x25519.json': x25519Vectors(),
    'ed25519.json': ed25519Vectors(),
    'handshake.json': handshakeVector(),
    'resumption.json': resumptionVector(),
    'time-signature.json': timeSignature(),
    'exchanges.json': await exchanges(),
  }
}

/** Exact file text of a vector file. */
export function renderVectorFile(content: VectorFile): string {
  return `${JSON.stringify({ ...content, generator: 'proto/vectors/generate.ts' }, null, 2)}\n`
}

/** The folder holding the vector files. */
export const VECTORS_DIR = dirname(fileURLToPath(import.meta.url)).replace(/[\\/]dist[\\/]proto[\\/]vectors$/, '/proto/vectors')

if (isMain(import.meta.url)) {
  const check = process.argv.includes('--check')
  const files = await generateAll()
  let stale = 0
  for (const [name, content] of Object.entries(files)) {
    const path = join(VECTORS_DIR, name)
    const text = renderVectorFile(content)
    if (check) {
      let old = ''
      try {
        old = readFileSync(path, 'utf8')
      } catch {}
      if (old !== text) {
        stale++
        process.stderr.write(`stale: ${path}\n`)
      }
    } else {
      writeFileSync(path, text)
      process.stderr.write(`wrote ${path}\n`)
    }
  }
  if (stale) process.exit(1)
}
