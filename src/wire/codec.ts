/**
 * The one MessagePack codec: plain MessagePack only (nil, bool, int, float, str, bin,
 * array, map). Before a value is built from a body, a linear scan rejects extension types,
 * truncation, trailing bytes, deep nesting, oversized containers, non-string or
 * duplicate map keys, strings that are not valid UTF-8 and integers beyond ±(2^53-1),
 * so every peer reads the same value. Values are built as msgpackr (mapsAsObjects,
 * int64AsType 'number') builds them, and tested against it; our own builder skips the
 * checks the scan already made.
 */
import { isUtf8 } from 'node:buffer'
import { Limits } from '../../proto/limits.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'

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

// The value builder runs only on bodies the scan accepted: every length, type, integer range
// and string in them is known good, so it reads without checking. It gives what msgpackr
// (mapsAsObjects, int64AsType 'number') gives: nil -> null, maps -> plain objects, bin ->
// a subarray (a view, as msgpackr's) of the body, integers -> numbers.

let rpos = 0

// Map keys (field names) repeat in every message: their strings are kept, found by their
// bytes, so that each is one string V8 has already internalized for property stores.
const KEY_SLOTS = 1024
const keyBytesAt: (Uint8Array | undefined)[] = new Array(KEY_SLOTS).fill(undefined)
const keyStrings: string[] = new Array(KEY_SLOTS).fill('')
const MAX_CACHED_KEY = 24

function readKey(b: Uint8Array): string {
  const c = b[rpos]!
  if (c < 0xa0 || c > 0xbf) {
    // str8/16/32 keys are rare (the encoder writes fixstr up to 31 bytes): no cache.
    rpos++
    return readStrBody(b, c === 0xd9 ? readLen(b, 1) : c === 0xda ? readLen(b, 2) : readLen(b, 4))
  }
  const n = c & 0x1f
  const start = rpos + 1
  if (n > MAX_CACHED_KEY) {
    rpos = start
    return readStrBody(b, n)
  }
  let h = n
  for (let i = 0; i < n; i++) h = (Math.imul(h, 31) + b[start + i]!) | 0
  const slot = h & (KEY_SLOTS - 1)
  const known = keyBytesAt[slot]
  if (known !== undefined && known.length === n) {
    let i = 0
    while (i < n && known[i] === b[start + i]) i++
    if (i === n) {
      rpos = start + n
      return keyStrings[slot]!
    }
  }
  rpos = start
  const k = readStrBody(b, n)
  // A copy: the body's buffer is reused or wiped after decoding.
  keyBytesAt[slot] = new Uint8Array(b.subarray(start, start + n))
  keyStrings[slot] = k
  return k
}

function readLen(b: Uint8Array, width: number): number {
  const n = width === 1 ? b[rpos]! : width === 2 ? u16(b, rpos) : u32(b, rpos)
  rpos += width
  return n
}

// Buffer's UTF-8 decoding, callable on any Uint8Array without making a Buffer view of it. It
// keeps a leading U+FEFF (TextDecoder would drop it by default).
const utf8Slice = (Buffer.prototype as unknown as { utf8Slice(this: Uint8Array, start: number, end: number): string }).utf8Slice

const fromCharCode = String.fromCharCode

/** The `n` bytes at rpos as a string (valid UTF-8: the scan checked it). */
function readStrBody(b: Uint8Array, n: number): string {
  const start = rpos
  rpos += n
  // Short ASCII (names, field names) without a call into C++.
  if (n <= 8) {
    const c0 = b[start]!
    const c1 = b[start + 1]!
    const c2 = b[start + 2]!
    const c3 = b[start + 3]!
    if (n <= 4) {
      switch (n) {
        case 0:
          return ''
        case 1:
          if (c0 < 0x80) return fromCharCode(c0)
          break
        case 2:
          if ((c0 | c1) < 0x80) return fromCharCode(c0, c1)
          break
        case 3:
          if ((c0 | c1 | c2) < 0x80) return fromCharCode(c0, c1, c2)
          break
        default:
          if ((c0 | c1 | c2 | c3) < 0x80) return fromCharCode(c0, c1, c2, c3)
      }
    } else {
      const c4 = b[start + 4]!
      const c5 = b[start + 5]!
      const c6 = b[start + 6]!
      const c7 = b[start + 7]!
      const low = c0 | c1 | c2 | c3 | c4
      switch (n) {
        case 5:
          if (low < 0x80) return fromCharCode(c0, c1, c2, c3, c4)
          break
        case 6:
          if ((low | c5) < 0x80) return fromCharCode(c0, c1, c2, c3, c4, c5)
          break
        case 7:
          if ((low | c5 | c6) < 0x80) return fromCharCode(c0, c1, c2, c3, c4, c5, c6)
          break
        default:
          if ((low | c5 | c6 | c7) < 0x80) return fromCharCode(c0, c1, c2, c3, c4, c5, c6, c7)
      }
    }
  }
  return utf8Slice.call(b, start, rpos)
}

function readValue(b: Uint8Array): unknown {
  const c = b[rpos++]!
  if (c <= 0x7f) return c // positive fixint
  if (c >= 0xe0) return c - 0x100 // negative fixint
  if (c <= 0x8f) return readMap(b, c & 0x0f)
  if (c <= 0x9f) return readArray(b, c & 0x0f)
  if (c <= 0xbf) return readStrBody(b, c & 0x1f)
  switch (c) {
    case 0xc0:
      return null
    case 0xc2:
      return false
    case 0xc3:
      return true
    case 0xc4:
      return readBin(b, readLen(b, 1))
    case 0xc5:
      return readBin(b, readLen(b, 2))
    case 0xc6:
      return readBin(b, readLen(b, 4))
    case 0xcc:
      return readLen(b, 1)
    case 0xcd:
      return readLen(b, 2)
    case 0xce:
      return readLen(b, 4)
    case 0xcf: {
      // Within 2^53-1 (the scan checked): exact as a double.
      const v = u32(b, rpos) * 0x100000000 + u32(b, rpos + 4)
      rpos += 8
      return v
    }
    case 0xd0:
      return (readLen(b, 1) << 24) >> 24
    case 0xd1:
      return (readLen(b, 2) << 16) >> 16
    case 0xd2:
      return readLen(b, 4) | 0
    case 0xd3: {
      const v = (u32(b, rpos) | 0) * 0x100000000 + u32(b, rpos + 4)
      rpos += 8
      return v
    }
    case 0xd9:
      return readStrBody(b, readLen(b, 1))
    case 0xda:
      return readStrBody(b, readLen(b, 2))
    case 0xdb:
      return readStrBody(b, readLen(b, 4))
    case 0xdc:
      return readArray(b, readLen(b, 2))
    case 0xdd:
      return readArray(b, readLen(b, 4))
    case 0xde:
      return readMap(b, readLen(b, 2))
    case 0xdf:
      return readMap(b, readLen(b, 4))
    default:
      // The scan refuses everything else: reaching here is a bug, not bad input.
      throw new Error(`MessagePack builder reached byte 0x${c.toString(16)}, which the scan refuses`)
  }
}

function readBin(b: Uint8Array, n: number): Uint8Array {
  const v = b.subarray(rpos, rpos + n)
  rpos += n
  return v
}

function readArray(b: Uint8Array, n: number): unknown[] {
  const a: unknown[] = []
  for (let i = 0; i < n; i++) a.push(readValue(b))
  return a
}

function readMap(b: Uint8Array, n: number): Record<string, unknown> {
  const o: Record<string, unknown> = {}
  // Keys are distinct strings and never "__proto__" (the scan refuses both).
  for (let i = 0; i < n; i++) {
    const k = readKey(b)
    o[k] = readValue(b)
  }
  return o
}

/** Decode exactly one plain MessagePack value filling `body`. Throws TesseraError(TESSERA_DECODE). */
export function decode(body: Uint8Array, opts?: DecodeOptions): unknown {
  const o = opts ? { ...DEFAULT_DECODE, ...opts } : DEFAULT_DECODE
  const end = scan(body, 0, 0, o, false)
  if (end !== body.length) fail('trailing bytes after the value')
  rpos = 0
  return readValue(body)
}

// The encoder is our own: msgpackr writes safe integers beyond 32 bits as float64 and
// lone surrogates as CESU bytes, so it needed a copying pre-pass; writing plain MessagePack
// directly is simpler and faster. Output: the smallest encoding of each integer up to
// 2^32-1, int64 (0xd3) beyond (never a float), float64 for non-integers, str/bin/array/map
// by length, map entries in key order, undefined fields omitted (undefined elsewhere: nil).
// Strings are UTF-8 with lone surrogates replaced by U+FFFD, as TextEncoder does.

let out = Buffer.allocUnsafe(16 * 1024)
let at = 0

function room(n: number): void {
  if (at + n <= out.length) return
  const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, at + n))
  out.copy(bigger, 0, 0, at)
  // What was written so far may be a sealed part's plaintext (keys): wipe the old scratch.
  out.fill(0, 0, at)
  out = bigger
}

// Short non-ASCII strings (names) repeat: their encodings are kept, up to a bound.
const keyCache = new Map<string, Buffer>()
const SHORT_STRING = 48

function keyBytes(k: string): Buffer {
  let b = keyCache.get(k)
  if (b === undefined) {
    const save = out
    const savedAt = at
    out = Buffer.allocUnsafe(8 + 3 * k.length)
    at = 0
    writeString(k)
    b = Buffer.from(out.subarray(0, at))
    out = save
    at = savedAt
    if (keyCache.size < 4096) keyCache.set(k, b)
  }
  return b
}

/** Append `b` (room already made): a loop for the few bytes of a name, a block copy beyond. */
function copyIn(b: Uint8Array): void {
  const n = b.length
  if (n > 32) out.set(b, at)
  else for (let i = 0; i < n; i++) out[at + i] = b[i]!
  at += n
}

/**
 * A string: ASCII up to 31 characters (field names, realm and principal names) written in
 * place, which costs less than looking its encoding up; other short strings through the
 * cache of encodings; long ones encoded each time.
 */
function writeShortString(s: string): void {
  const n = s.length
  if (n < 32) {
    room(1 + n)
    let i = 0
    for (; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c >= 0x80) break
      out[at + 1 + i] = c
    }
    if (i === n) {
      out[at] = 0xa0 | n
      at += 1 + n
      return
    }
  }
  if (n <= SHORT_STRING) {
    const b = keyBytes(s)
    room(b.length)
    copyIn(b)
  } else writeString(s)
}

function writeString(s: string): void {
  // UTF-8 is at most 3 bytes per UTF-16 unit: reserve the largest header, write, then fix it.
  const max = 3 * s.length
  room(5 + max)
  if (max < 32) {
    const n = out.write(s, at + 1, 'utf8')
    out[at] = 0xa0 | n
    at += 1 + n
  } else if (max < 256) {
    const n = out.write(s, at + 2, 'utf8')
    if (n < 32) {
      out.copyWithin(at + 1, at + 2, at + 2 + n)
      out[at] = 0xa0 | n
      at += 1 + n
    } else {
      out[at] = 0xd9
      out[at + 1] = n
      at += 2 + n
    }
  } else {
    const n = Buffer.byteLength(s, 'utf8')
    if (n < 32) out[at++] = 0xa0 | n
    else writeLength(n, 0xd9)
    at += out.write(s, at, 'utf8')
  }
}

/** A str8/16/32 or bin8/16/32 header: `c8` and the two codes after it (room already made). */
function writeLength(n: number, c8: number): void {
  if (n < 0x100) {
    out[at] = c8
    out[at + 1] = n
    at += 2
  } else if (n < 0x10000) {
    out[at] = c8 + 1
    out.writeUInt16BE(n, at + 1)
    at += 3
  } else {
    out[at] = c8 + 2
    out.writeUInt32BE(n, at + 1)
    at += 5
  }
}

function writeInt64(v: bigint): void {
  room(9)
  out[at] = 0xd3
  out.writeBigInt64BE(v, at + 1)
  at += 9
}

/** int64 (0xd3) of a safe integer, without a BigInt (times in ms/µs take this path). */
function writeSafeInt64(v: number): void {
  room(9)
  const hi = Math.floor(v / 0x100000000)
  out[at] = 0xd3
  out.writeInt32BE(hi, at + 1)
  out.writeUInt32BE(v - hi * 0x100000000, at + 5)
  at += 9
}

function writeNumber(v: number): void {
  room(9)
  if (Number.isInteger(v)) {
    if (v >= 0) {
      if (v < 0x80) {
        out[at++] = v
        return
      }
      if (v < 0x100) {
        out[at] = 0xcc
        out[at + 1] = v
        at += 2
        return
      }
      if (v < 0x10000) {
        out[at] = 0xcd
        out.writeUInt16BE(v, at + 1)
        at += 3
        return
      }
      if (v <= 0xffffffff) {
        out[at] = 0xce
        out.writeUInt32BE(v, at + 1)
        at += 5
        return
      }
      if (v <= Number.MAX_SAFE_INTEGER) {
        writeSafeInt64(v)
        return
      }
    } else {
      if (v >= -0x20) {
        out[at++] = v & 0xff
        return
      }
      if (v >= -0x80) {
        out[at] = 0xd0
        out.writeInt8(v, at + 1)
        at += 2
        return
      }
      if (v >= -0x8000) {
        out[at] = 0xd1
        out.writeInt16BE(v, at + 1)
        at += 3
        return
      }
      if (v >= -0x80000000) {
        out[at] = 0xd2
        out.writeInt32BE(v, at + 1)
        at += 5
        return
      }
      if (v >= -Number.MAX_SAFE_INTEGER) {
        writeSafeInt64(v)
        return
      }
    }
  }
  // Not an integer on this wire (fractions, integral doubles beyond 2^53-1): float64.
  out[at] = 0xcb
  out.writeDoubleBE(v, at + 1)
  at += 9
}

function writeHeader(n: number, fix: number, fixMax: number, c16: number, c32: number): void {
  room(5)
  if (n < fixMax) out[at++] = fix | n
  else if (n < 0x10000) {
    out[at] = c16
    out.writeUInt16BE(n, at + 1)
    at += 3
  } else {
    out[at] = c32
    out.writeUInt32BE(n, at + 1)
    at += 5
  }
}

function writeValue(v: unknown): void {
  switch (typeof v) {
    case 'number':
      writeNumber(v)
      return
    case 'string':
      writeShortString(v)
      return
    case 'boolean':
      room(1)
      out[at++] = v ? 0xc3 : 0xc2
      return
    case 'bigint':
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('integer beyond 2^53-1')
      writeInt64(v)
      return
    case 'undefined':
      room(1)
      out[at++] = 0xc0
      return
    case 'object':
      break
    default:
      throw new TypeError(`cannot encode a ${typeof v} as MessagePack`)
  }
  if (v === null) {
    room(1)
    out[at++] = 0xc0
    return
  }
  if (v instanceof Uint8Array) {
    const n = v.length
    room(5 + n)
    writeLength(n, 0xc4)
    copyIn(v)
    return
  }
  if (Array.isArray(v)) {
    writeHeader(v.length, 0x90, 16, 0xdc, 0xdd)
    for (const x of v) writeValue(x)
    return
  }
  const o = v as Record<string, unknown>
  const keys = Object.keys(o)
  if (keys.length < 16) {
    // At most 15 entries: a fixmap, whose count is known once the undefined fields are skipped.
    room(1)
    const header = at++
    let n = 0
    for (const k of keys) {
      const x = o[k]
      if (x === undefined) continue
      n++
      writeShortString(k)
      writeValue(x)
    }
    out[header] = 0x80 | n
    return
  }
  let n = 0
  for (const k of keys) if (o[k] !== undefined) n++
  writeHeader(n, 0x80, 16, 0xde, 0xdf)
  for (const k of keys) {
    const x = o[k]
    if (x === undefined) continue
    writeShortString(k)
    writeValue(x)
  }
}

// True while withEncoded() has lent the scratch buffer out.
let lent = false

/** Write `value` into the scratch buffer; returns its length. */
function writeScratch(value: unknown): number {
  if (lent) throw new Error('encode() called while withEncoded() holds the scratch buffer')
  at = 0
  try {
    writeValue(value)
  } catch (err) {
    out.fill(0, 0, at)
    at = 0
    throw err
  }
  return at
}

/** Wipe the first `n` bytes of the scratch buffer and drop it if one large message grew it. */
function releaseScratch(n: number): void {
  // Encoded parts hold keys (tickets, keytabs, keys at rest): leave no copy behind.
  out.fill(0, 0, n)
  // Do not keep a huge scratch buffer alive after one large message.
  if (out.length > 1024 * 1024) out = Buffer.allocUnsafe(16 * 1024)
}

/**
 * Encode one value as plain MessagePack. Uint8Array -> bin, objects -> maps, undefined
 * fields omitted (undefined elsewhere -> nil), safe integers beyond 32 bits -> int64.
 */
export function encode(value: unknown): Uint8Array {
  const n = writeScratch(value)
  const result = Buffer.allocUnsafe(n)
  out.copy(result, 0, 0, n)
  releaseScratch(n)
  return result
}

/**
 * {@link encode} `value` and pass the bytes to `use` without copying them out of the
 * encoder's scratch buffer (a part about to be sealed needs no copy of its own). The bytes
 * are wiped once `use` returns: it must not keep them, and must not encode.
 */
export function withEncoded<R>(value: unknown, use: (bytes: Uint8Array) => R): R {
  const n = writeScratch(value)
  lent = true
  try {
    return use(out.subarray(0, n))
  } finally {
    lent = false
    releaseScratch(n)
  }
}
