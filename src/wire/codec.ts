/**
 * The one MessagePack codec: plain MessagePack only (nil, bool, int, float, str, bin,
 * array, map). Before msgpackr sees a body, a linear scan rejects extension types,
 * truncation, trailing bytes, deep nesting, oversized containers, non-string or
 * duplicate map keys, strings that are not valid UTF-8 and integers beyond ±(2^53-1),
 * so nothing msgpackr-specific can be smuggled in and every peer reads the same value.
 */
import { isUtf8 } from 'node:buffer'
import { Packr } from 'msgpackr'
import { Limits } from '../../proto/limits.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'

const packr = new Packr({
  useRecords: false,
  variableMapSize: true,
  int64AsType: 'number',
  mapsAsObjects: true,
  bundleStrings: false,
})

/** Options of the structural scan. */
export interface DecodeOptions {
  /** Deepest nesting. @default 16 */
  maxDepth?: number
  /** Most entries in one map or array. @default 1024 */
  maxEntries?: number
}

function fail(why: string): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_DECODE, `malformed MessagePack: ${why}`)
}

// The scan is written without closures: it runs on every frame, and under tsx (esbuild
// keepNames) each inner arrow would also cost an Object.defineProperty per call.

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0
}

/** Position after `n` bytes at `pos`, or TESSERA_DECODE if the body is shorter. */
function skip(b: Uint8Array, pos: number, n: number): number {
  if (pos + n > b.length) fail('truncated')
  return pos + n
}

// Strings must be valid UTF-8: lenient decoders map different byte strings to the
// same text (U+FFFD), which would let two wire names alias one principal.
function skipStr(b: Uint8Array, pos: number, n: number): number {
  const end = skip(b, pos, n)
  let i = pos
  while (i < end && b[i]! < 0x80) i++
  if (i < end && !isUtf8(b.subarray(i, end))) fail('string is not valid UTF-8')
  return end
}

/** Length of the header of the string starting at `at` (fixstr, str8, str16, str32). */
function strHeader(b: Uint8Array, at: number): number {
  const c = b[at]!
  return c <= 0xbf ? 1 : c === 0xd9 ? 2 : c === 0xda ? 3 : 5
}

function sameBytes(b: Uint8Array, a0: number, a1: number, b0: number, b1: number): boolean {
  if (a1 - a0 !== b1 - b0) return false
  for (let i = 0; i < a1 - a0; i++) if (b[a0 + i] !== b[b0 + i]) return false
  return true
}

function scanContainer(
  b: Uint8Array,
  pos: number,
  n: number,
  isMap: boolean,
  depth: number,
  o: Required<DecodeOptions>,
): number {
  if (depth >= o.maxDepth) fail('nesting too deep')
  if (n > o.maxEntries) fail('container too large')
  if (!isMap) {
    for (let i = 0; i < n; i++) pos = scan(b, pos, depth + 1, o, false)
    return pos
  }
  // Duplicate keys are refused: decoders disagree on which one wins, so a second `t`
  // could mean one thing to us and another to a peer written in another language.
  // Keys are compared without their headers: fixstr "t" and str8 "t" are one key.
  const small = n <= 32
  const ranges: number[] = []
  const seen = small ? undefined : new Set<string>()
  for (let i = 0; i < n; i++) {
    const start = pos
    pos = scan(b, pos, depth + 1, o, true)
    const k0 = start + strHeader(b, start)
    // msgpackr renames "__proto__" to "__proto_": refuse it rather than let a key change meaning.
    if (pos - k0 === 9 && sameAscii(b, k0, PROTO_KEY)) fail('"__proto__" is not allowed as a map key')
    if (seen) {
      const k = Buffer.from(b.buffer, b.byteOffset + k0, pos - k0).toString('latin1')
      if (seen.has(k)) fail('duplicate map key')
      seen.add(k)
    } else {
      for (let j = 0; j < ranges.length; j += 2) if (sameBytes(b, ranges[j]!, ranges[j + 1]!, k0, pos)) fail('duplicate map key')
      ranges.push(k0, pos)
    }
    pos = scan(b, pos, depth + 1, o, false)
  }
  return pos
}

const PROTO_KEY = Buffer.from('__proto__', 'ascii')

function sameAscii(b: Uint8Array, at: number, word: Uint8Array): boolean {
  for (let i = 0; i < word.length; i++) if (b[at + i] !== word[i]) return false
  return true
}

/** Walk one MessagePack value at `pos`; returns the position after it. Throws TESSERA_DECODE. */
function scan(b: Uint8Array, pos: number, depth: number, o: Required<DecodeOptions>, mapKey: boolean): number {
  if (pos >= b.length) fail('truncated')
  const c = b[pos]!
  pos++
  if (mapKey && !((c >= 0xa0 && c <= 0xbf) || c === 0xd9 || c === 0xda || c === 0xdb)) fail('map key is not a string')
  if (c <= 0x7f || c >= 0xe0) return pos // fixint
  if (c <= 0x8f) return scanContainer(b, pos, c & 0x0f, true, depth, o) // fixmap
  if (c <= 0x9f) return scanContainer(b, pos, c & 0x0f, false, depth, o) // fixarray
  if (c <= 0xbf) return skipStr(b, pos, c & 0x1f) // fixstr
  switch (c) {
    case 0xc0: // nil
    case 0xc2: // false
    case 0xc3: // true
      return pos
    case 0xc4: // bin8
      return skip(b, skip(b, pos, 1), b[pos]!)
    case 0xc5: // bin16
      return skip(b, skip(b, pos, 2), u16(b, pos))
    case 0xc6: // bin32
      return skip(b, skip(b, pos, 4), u32(b, pos))
    case 0xd9: // str8
      return skipStr(b, skip(b, pos, 1), b[pos]!)
    case 0xda: // str16
      return skipStr(b, skip(b, pos, 2), u16(b, pos))
    case 0xdb: // str32
      return skipStr(b, skip(b, pos, 4), u32(b, pos))
    case 0xca: // float32
    case 0xcb: // float64
      // No field of the protocol is a float: a float where an integer belongs would be
      // accepted as one (37.0), so every float is refused.
      return fail('floats are not allowed')
    case 0xcc: // uint8
    case 0xd0: // int8
      return skip(b, pos, 1)
    case 0xcd: // uint16
    case 0xd1: // int16
      return skip(b, pos, 2)
    case 0xce: // uint32
    case 0xd2: // int32
      return skip(b, pos, 4)
    case 0xcf: // uint64: must fit in 2^53-1
      skip(b, pos, 8)
      if (u32(b, pos) > 0x1fffff) fail('integer beyond 2^53-1')
      return pos + 8
    case 0xd3: {
      // int64: must fit in ±(2^53-1). -2^53 (hi = -0x200000, lo = 0) is one past the end.
      skip(b, pos, 8)
      const hi = u32(b, pos) | 0
      if (hi > 0x1fffff || hi < -0x200000 || (hi === -0x200000 && u32(b, pos + 4) === 0)) fail('integer beyond 2^53-1')
      return pos + 8
    }
    case 0xdc: // array16
      return scanContainer(b, skip(b, pos, 2), u16(b, pos), false, depth, o)
    case 0xdd: // array32
      return scanContainer(b, skip(b, pos, 4), u32(b, pos), false, depth, o)
    case 0xde: // map16
      return scanContainer(b, skip(b, pos, 2), u16(b, pos), true, depth, o)
    case 0xdf: // map32
      return scanContainer(b, skip(b, pos, 4), u32(b, pos), true, depth, o)
    default:
      // 0xc1 (never used), 0xc7-0xc9 and 0xd4-0xd8 (extension types)
      return fail(c === 0xc1 ? 'reserved byte 0xc1' : 'extension types are not allowed')
  }
}

const DEFAULT_DECODE: Required<DecodeOptions> = { maxDepth: Limits.MAX_DEPTH, maxEntries: Limits.MAX_CONTAINER_ENTRIES }

/** Decode exactly one plain MessagePack value filling `body`. Throws TesseraError(TESSERA_DECODE). */
export function decode(body: Uint8Array, opts?: DecodeOptions): unknown {
  const o = opts ? { ...DEFAULT_DECODE, ...opts } : DEFAULT_DECODE
  const end = scan(body, 0, 0, o, false)
  if (end !== body.length) fail('trailing bytes after the value')
  try {
    return packr.unpack(body)
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_DECODE, 'malformed MessagePack', { cause: err })
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

// msgpackr writes a lone surrogate as CESU bytes, which are not UTF-8 (and decode() refuses
// them): replace it with U+FFFD as TextEncoder does.
function wellFormed(s: string): string {
  return LONE_SURROGATE.test(s) ? Buffer.from(s, 'utf8').toString('utf8') : s
}

// Safe integers outside (u)int32 are passed to msgpackr as BigInt so they go out as
// int64 rather than float64 (msgpackr's default for large numbers). Integral doubles
// beyond 2^53-1 are not integers on this wire and stay float64, which round-trips exactly.
function widen(value: unknown): unknown {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && (value > 0xffffffff || value < -0x80000000)) return BigInt(value)
    return value
  }
  if (typeof value === 'string') return wellFormed(value)
  if (typeof value === 'bigint') {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER))
      throw new RangeError('integer beyond 2^53-1')
    return value
  }
  // A bare undefined (top level or in an array) has no plain MessagePack form: nil, as in JSON.
  if (value === undefined) return null
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value
  if (Array.isArray(value)) return value.map(widen)
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(value)) {
    const x = (value as Record<string, unknown>)[k]
    if (x === undefined) continue
    const key = wellFormed(k)
    // Plain assignment of "__proto__" would set out's prototype and drop the field.
    if (key === '__proto__') Object.defineProperty(out, key, { value: widen(x), enumerable: true, writable: true, configurable: true })
    else out[key] = widen(x)
  }
  return out
}

/**
 * Encode one value as plain MessagePack. Uint8Array -> bin, objects -> maps, undefined
 * fields omitted (undefined elsewhere -> nil), safe integers beyond 32 bits -> int64.
 */
export function encode(value: unknown): Uint8Array {
  return packr.pack(widen(value))
}
