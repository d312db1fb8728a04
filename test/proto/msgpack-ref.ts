/**
 * A tiny independent MessagePack encoder for the tests: what any plain MessagePack
 * library produces, with the one choice Tessera makes (integers beyond 32 bits as
 * int64 0xd3). Used to show the vectors contain nothing msgpackr-specific.
 */

function int(n: number): Buffer {
  if (n >= 0) {
    if (n < 0x80) return Buffer.from([n])
    if (n <= 0xff) return Buffer.from([0xcc, n])
    if (n <= 0xffff) return Buffer.from([0xcd, n >> 8, n & 0xff])
    if (n <= 0xffffffff) {
      const b = Buffer.alloc(5)
      b[0] = 0xce
      b.writeUInt32BE(n, 1)
      return b
    }
  } else {
    if (n >= -32) return Buffer.from([n & 0xff])
    if (n >= -0x80) return Buffer.from([0xd0, n & 0xff])
    if (n >= -0x8000) {
      const b = Buffer.alloc(3)
      b[0] = 0xd1
      b.writeInt16BE(n, 1)
      return b
    }
    if (n >= -0x80000000) {
      const b = Buffer.alloc(5)
      b[0] = 0xd2
      b.writeInt32BE(n, 1)
      return b
    }
  }
  const b = Buffer.alloc(9)
  b[0] = 0xd3
  b.writeBigInt64BE(BigInt(n), 1)
  return b
}

function header(len: number, fix: number | undefined, fixMax: number, c8: number | undefined, c16: number, c32: number): Buffer {
  if (fix !== undefined && len < fixMax) return Buffer.from([fix | len])
  if (c8 !== undefined && len <= 0xff) return Buffer.from([c8, len])
  if (len <= 0xffff) return Buffer.from([c16, len >> 8, len & 0xff])
  const b = Buffer.alloc(5)
  b[0] = c32
  b.writeUInt32BE(len, 1)
  return b
}

/** Encode a JSON-like value (with Uint8Array for bin) as plain MessagePack. */
export function refEncode(v: unknown): Buffer {
  if (v === null) return Buffer.from([0xc0])
  if (v === true) return Buffer.from([0xc3])
  if (v === false) return Buffer.from([0xc2])
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return int(v)
    const b = Buffer.alloc(9)
    b[0] = 0xcb
    b.writeDoubleBE(v, 1)
    return b
  }
  if (typeof v === 'string') {
    const s = Buffer.from(v, 'utf8')
    return Buffer.concat([header(s.length, 0xa0, 32, 0xd9, 0xda, 0xdb), s])
  }
  if (v instanceof Uint8Array) return Buffer.concat([header(v.length, undefined, 0, 0xc4, 0xc5, 0xc6), v])
  if (Array.isArray(v)) return Buffer.concat([header(v.length, 0x90, 16, undefined, 0xdc, 0xdd), ...v.map(refEncode)])
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined)
    const parts = [header(entries.length, 0x80, 16, undefined, 0xde, 0xdf)]
    for (const [k, x] of entries) parts.push(refEncode(k), refEncode(x))
    return Buffer.concat(parts)
  }
  throw new TypeError(`cannot encode ${typeof v}`)
}
