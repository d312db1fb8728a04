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

/** Walk one MessagePack value at `pos`; returns the position after it. Throws TESSERA_DECODE. */
function scan(b: Uint8Array, pos: number, depth: number, o: Required<DecodeOptions>, mapKey: boolean): number {
  if (pos >= b.length) fail('truncated')
  const need = (n: number) => {
    if (pos + n > b.length) fail('truncated')
  }
  const u16 = (at: number) => (b[at]! << 8) | b[at + 1]!
  const u32 = (at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0
  const c = b[pos]!
  pos++
  const container = (n: number, perEntry: number): number => {
    if (depth >= o.maxDepth) fail('nesting too deep')
    if (n > o.maxEntries) fail('container too large')
    // Duplicate keys are refused: decoders disagree on which one wins, so a second `t`
    // could mean one thing to us and another to a peer written in another language.
    const keys = perEntry === 2 && n > 1 ? new Set<string>() : undefined
    for (let i = 0; i < n; i++) {
      if (perEntry === 2) {
        const start = pos
        pos = scan(b, pos, depth + 1, o, true)
        if (keys) {
          // Compare the key's bytes without its header: fixstr "t" and str8 "t" are one key.
          const c0 = b[start]!
          const head = c0 <= 0xbf ? 1 : c0 === 0xd9 ? 2 : c0 === 0xda ? 3 : 5
          const k = Buffer.from(b.buffer, b.byteOffset + start + head, pos - start - head).toString('latin1')
          if (keys.has(k)) fail('duplicate map key')
          keys.add(k)
        }
      }
      pos = scan(b, pos, depth + 1, o, false)
    }
    return pos
  }
  const bytes = (n: number) => {
    need(n)
    return pos + n
  }
  // Strings must be valid UTF-8: lenient decoders map different byte strings to the
  // same text (U+FFFD), which would let two wire names alias one principal.
  const str = (n: number) => {
    need(n)
    if (!isUtf8(b.subarray(pos, pos + n))) fail('string is not valid UTF-8')
    return pos + n
  }
  if (mapKey && !((c >= 0xa0 && c <= 0xbf) || c === 0xd9 || c === 0xda || c === 0xdb)) fail('map key is not a string')
  if (c <= 0x7f || c >= 0xe0) return pos // fixint
  if (c >= 0x80 && c <= 0x8f) return container(c & 0x0f, 2)
  if (c >= 0x90 && c <= 0x9f) return container(c & 0x0f, 1)
  if (c >= 0xa0 && c <= 0xbf) return str(c & 0x1f)
  switch (c) {
    case 0xc0: // nil
    case 0xc2: // false
    case 0xc3: // true
      return pos
    case 0xc4: // bin8
      need(1)
      pos += 1
      return bytes(b[pos - 1]!)
    case 0xc5: // bin16
      need(2)
      pos += 2
      return bytes(u16(pos - 2))
    case 0xc6: // bin32
      need(4)
      pos += 4
      return bytes(u32(pos - 4))
    case 0xd9: // str8
      need(1)
      pos += 1
      return str(b[pos - 1]!)
    case 0xda: // str16
      need(2)
      pos += 2
      return str(u16(pos - 2))
    case 0xdb: // str32
      need(4)
      pos += 4
      return str(u32(pos - 4))
    case 0xca: // float32
      need(4)
      return pos + 4
    case 0xcb: // float64
      need(8)
      return pos + 8
    case 0xcc:
    case 0xd0:
      need(1)
      return pos + 1
    case 0xcd:
    case 0xd1:
      need(2)
      return pos + 2
    case 0xce:
    case 0xd2:
      need(4)
      return pos + 4
    case 0xcf: // uint64: must fit in 2^53-1
      need(8)
      if (u32(pos) > 0x1fffff) fail('integer beyond 2^53-1')
      return pos + 8
    case 0xd3: {
      // int64: must fit in ±(2^53-1). -2^53 (hi = -0x200000, lo = 0) is one past the end.
      need(8)
      const hi = u32(pos) | 0
      if (hi > 0x1fffff || hi < -0x200000 || (hi === -0x200000 && u32(pos + 4) === 0)) fail('integer beyond 2^53-1')
      return pos + 8
    }
    case 0xdc:
      need(2)
      pos += 2
      return container(u16(pos - 2), 1)
    case 0xdd:
      need(4)
      pos += 4
      return container(u32(pos - 4), 1)
    case 0xde:
      need(2)
      pos += 2
      return container(u16(pos - 2), 2)
    case 0xdf:
      need(4)
      pos += 4
      return container(u32(pos - 4), 2)
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
    // Plain assignment of "__proto__" would set out's prototype and drop the field.
    Object.defineProperty(out, wellFormed(k), { value: widen(x), enumerable: true, writable: true, configurable: true })
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
