import { expect } from 'chai'
import fc from 'fast-check'
import { Packr } from 'msgpackr'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { TesseraError } from '../../src/errors.js'
import { decodeMessage } from '../../src/wire/channel.js'
import { decode, encode } from '../../src/wire/codec.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const unhex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

function codeOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect(err, 'error class').to.be.instanceOf(TesseraError)
    return (err as TesseraError).code
  }
  throw new Error('expected a throw, got a value')
}

/** One table line: `bytes` decode to TESSERA_DECODE. */
function rejects(name: string, bytes: Uint8Array | string): void {
  it(`rejects ${name} with TESSERA_DECODE`, () => {
    const b = typeof bytes === 'string' ? unhex(bytes) : bytes
    expect(codeOf(() => decode(b))).to.equal('TESSERA_DECODE')
  })
}

/** One table line: `value` encodes to exactly `wire` and decodes back to `value`. */
function roundTrip(name: string, value: unknown, wire: string): void {
  it(`round-trips ${name} as ${wire}`, () => {
    expect(hex(encode(value))).to.equal(wire.replace(/\s+/g, ''))
    expect(decode(unhex(wire))).to.deep.equal(value)
  })
}

/** `n` nested one-element arrays around 0. */
const nestedArrays = (n: number) => Buffer.concat([Buffer.alloc(n, 0x91), Buffer.from([0x00])])

/** A valid TIME_REQ body. */
const timeReqBytes = () => encode({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: new Uint8Array(32).fill(9) })

describe('codec', () => {
  useProcessGuards()

  describe('encode/decode round trips', () => {
    roundTrip('positive fixint 0', 0, '00')
    roundTrip('positive fixint 127', 127, '7f')
    roundTrip('uint8 128', 128, 'cc80')
    roundTrip('uint16 65535', 65535, 'cdffff')
    roundTrip('uint32 2^32-1', 2 ** 32 - 1, 'ce ffffffff')
    roundTrip('2^32 as a 64-bit integer, not float64', 2 ** 32, 'd3 00000001 00000000')
    roundTrip('2^53-1 as a 64-bit integer, not float64', 2 ** 53 - 1, 'd3 001fffff ffffffff')
    roundTrip('negative fixint -1', -1, 'ff')
    roundTrip('negative fixint -32', -32, 'e0')
    roundTrip('int8 -33', -33, 'd0df')
    roundTrip('int32 -2^31', -(2 ** 31), 'd2 80000000')
    roundTrip('-2^31-1 as int64', -(2 ** 31) - 1, 'd3 ffffffff 7fffffff')
    roundTrip('-(2^53-1) as int64', -(2 ** 53 - 1), 'd3 ffe00000 00000001')
    roundTrip('nil', null, 'c0')
    roundTrip('true and false', [true, false], '92 c3 c2')
    roundTrip('a UTF-8 string', 'héllo', 'a6 68c3a96c6c6f')
    roundTrip('a string of 32 bytes as str8', 'x'.repeat(32), `d920${'78'.repeat(32)}`)
    roundTrip('a nested map and array', { a: [1, { b: 'c' }], d: {} }, '82 a161 92 01 81 a162 a163 a164 80')

    it('round-trips a Uint8Array as bin8 and decodes it as a Uint8Array', () => {
      const b = new Uint8Array([1, 2, 3])
      expect(hex(encode(b))).to.equal('c403010203')
      const out = decode(unhex('c403010203'))
      expect(out).to.be.instanceOf(Uint8Array)
      expect(hex(out as Uint8Array)).to.equal('010203')
    })

    it('round-trips bin16 and bin32 sizes', () => {
      for (const n of [300, 70000]) {
        const b = new Uint8Array(n).fill(0xab)
        const wire = encode(b)
        expect(wire[0]).to.equal(n < 65536 ? 0xc5 : 0xc6)
        expect(hex(decode(wire) as Uint8Array)).to.equal(hex(b))
      }
    })

    it('omits undefined fields of a map', () => {
      expect(hex(encode({ a: undefined, b: 1 }))).to.equal('81a16201')
    })

    it('encodes undefined outside a map as nil (never as an extension)', () => {
      expect(hex(encode([undefined, 1]))).to.equal('92c001')
      expect(hex(encode(undefined))).to.equal('c0')
    })

    it('encodes an own "__proto__" field as a map entry instead of dropping it', () => {
      const o: Record<string, unknown> = {}
      Object.defineProperty(o, '__proto__', { value: 1, enumerable: true })
      expect(hex(encode(o))).to.equal(`81 a9 ${Buffer.from('__proto__').toString('hex')} 01`.replace(/\s/g, ''))
    })

    it('replaces a lone surrogate with U+FFFD so the output is valid UTF-8', () => {
      expect(decode(encode('a\ud800b'))).to.equal('a\ufffdb')
      expect(decode(encode({ 'k\udc00': 1 }))).to.deep.equal({ 'k\ufffd': 1 })
    })

    it('encodes integral doubles beyond 2^53-1 as float64, which the decoder refuses like every float', () => {
      const wire = encode(2 ** 60)
      expect(wire[0]).to.equal(0xcb)
      expect(codeOf(() => decode(wire))).to.equal('TESSERA_DECODE')
      expect(codeOf(() => decode(encode(1.5)))).to.equal('TESSERA_DECODE')
      expect(codeOf(() => decode(unhex('ca 3fc00000')))).to.equal('TESSERA_DECODE')
    })

    it('refuses a bigint beyond 2^53-1 with RangeError', () => {
      expect(() => encode(2n ** 53n)).to.throw(RangeError)
      expect(hex(encode(2n ** 40n))).to.equal('d30000010000000000')
    })

    it('never encodes a safe integer as a float (property)', () => {
      fc.assert(
        fc.property(fc.maxSafeInteger(), (n) => {
          const wire = encode(n)
          expect(wire[0]).to.not.be.oneOf([0xca, 0xcb])
          expect(decode(wire)).to.equal(n)
        }),
        { numRuns: 2000 },
      )
    })

    it('round-trips random JSON values (property)', () => {
      const norm = (v: unknown): unknown =>
        typeof v === 'number' ? (Object.is(v, -0) ? 0 : v) : Array.isArray(v) ? v.map(norm) : v && typeof v === 'object'
          ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]))
          : v
      fc.assert(
        fc.property(fc.jsonValue({ maxDepth: 10 }), (v) => {
          // "__proto__" keys and floats are refused by the decoder (see their own tests).
          fc.pre(!JSON.stringify(v).includes('"__proto__"'))
          fc.pre(!hasFloat(v))
          expect(decode(encode(v))).to.deep.equal(norm(v))
        }),
        { numRuns: 1000 },
      )
    })

    it('round-trips random values with bin, unicode strings and 64-bit integers (property)', () => {
      const key = fc.string({ unit: 'grapheme', maxLength: 8 }).filter((k) => k !== '__proto__')
      const leaf = fc.oneof(
        fc.constant(null),
        fc.boolean(),
        fc.maxSafeInteger(),
        fc.integer(),
        fc.string({ unit: 'grapheme', maxLength: 40 }),
        fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
      )
      const { value } = fc.letrec<{ value: unknown }>((tie) => ({
        value: fc.oneof(
          { maxDepth: 8, depthSize: 'small' },
          leaf,
          fc.array(tie('value'), { maxLength: 6 }),
          fc.dictionary(key, tie('value'), { maxKeys: 6, noNullPrototype: true }),
        ),
      }))
      fc.assert(
        fc.property(value, (v) => {
          expect(decode(encode(v))).to.deep.equal(v)
        }),
        { numRuns: 1000 },
      )
    })
  })

  describe('decode refuses', () => {
    it('every strict prefix of a valid message with TESSERA_DECODE', () => {
      const full = encode({ v: 1, t: 40, nonce: new Uint8Array(32), s: 'héllo', n: 2 ** 40, f: true, a: [1, -200, null] })
      expect(decode(full)).to.be.an('object')
      for (let i = 0; i < full.length; i++) expect(codeOf(() => decode(full.subarray(0, i))), `prefix ${i}`).to.equal('TESSERA_DECODE')
    })

    rejects('an empty body', '')
    rejects('trailing bytes after one value', '01 02')
    rejects('a valid message followed by one byte', Buffer.concat([timeReqBytes(), Buffer.from([0xc0])]))

    // Extension types: plain MessagePack only (DESIGN.md, Wire).
    rejects('fixext 1', 'd4 01 00')
    rejects('fixext 2', 'd5 01 0000')
    rejects('fixext 4 (the timestamp extension)', 'd6 ff 00000000')
    rejects('fixext 8', 'd7 01 0000000000000000')
    rejects('fixext 16', 'd8 01 00000000000000000000000000000000')
    rejects('ext 8', 'c7 01 05 00')
    rejects('ext 16', 'c8 0001 05 00')
    rejects('ext 32', 'c9 00000001 05 00')
    rejects('an extension nested in a map value', '81 a161 d4 01 00')
    rejects('the reserved byte 0xc1', 'c1')
    rejects('0xc1 inside an array', '92 01 c1')

    it('msgpackr record/structure encodings with TESSERA_DECODE', () => {
      const records = new Packr({ useRecords: true })
      const structured = new Packr({ structuredClone: true, moreTypes: true })
      const samples = [
        records.pack({ v: 1, t: 40 }),
        records.pack([{ a: 1 }, { a: 2 }]),
        structured.pack(new Map([[1, 2]])),
        structured.pack(new Set([1])),
        new Packr().pack(new Date(0)),
        new Packr({ bundleStrings: true }).pack({ s: 'a string long enough to bundle' }),
      ]
      for (const b of samples) expect(codeOf(() => decode(b)), hex(b)).to.equal('TESSERA_DECODE')
    })

    // Map keys must be strings.
    rejects('a map with an integer key', '81 01 02')
    rejects('a map with a nil key', '81 c0 02')
    rejects('a map with a bin key', '81 c40161 02')
    rejects('a map with an array key', '81 9101 02')
    rejects('a map with a map key', '81 81a16101 02')
    rejects('a map with a boolean key', '81 c3 02')
    rejects('a map with a float key', '81 cb3ff8000000000000 02')
    rejects('a map with the same key twice', '82 a174 01 a174 02')
    rejects('a map repeating a key in another string format', '82 a174 01 d90174 02')

    it('a map of 40 entries repeating its first key with TESSERA_DECODE (40 distinct keys are accepted)', () => {
      const map = (keys: string[]) =>
        Buffer.concat([Buffer.from([0xde, 0, keys.length]), ...keys.map((k) => Buffer.concat([Buffer.from(encode(k)), Buffer.from([1])]))])
      const keys = Array.from({ length: 40 }, (_, i) => `key${i}`)
      expect(Object.keys(decode(map(keys)) as object)).to.have.length(40)
      expect(codeOf(() => decode(map([...keys.slice(0, 39), 'key0'])))).to.equal('TESSERA_DECODE')
    })

    // Strings must be valid UTF-8.
    rejects('a string with an invalid byte', 'a2 fffe')
    rejects('a string with a truncated sequence', 'a2 61c3')
    rejects('a string with an overlong encoding', 'a2 c0af')
    rejects('a string with an encoded surrogate', 'a3 eda080')
    rejects('a map key that is not UTF-8', '81 a1ff 01')

    it('nesting deeper than 16 with TESSERA_DECODE (16 is accepted)', () => {
      expect(decode(nestedArrays(16))).to.be.an('array')
      expect(codeOf(() => decode(nestedArrays(17)))).to.equal('TESSERA_DECODE')
      // Maps count too.
      const maps = Buffer.concat([Buffer.from('81a161'.repeat(17), 'hex'), Buffer.from([0])])
      expect(codeOf(() => decode(maps))).to.equal('TESSERA_DECODE')
    })

    it('nesting of 100000 levels with TESSERA_DECODE, without a stack overflow', () => {
      expect(codeOf(() => decode(nestedArrays(100000)))).to.equal('TESSERA_DECODE')
    })

    it('a container of more than 1024 entries with TESSERA_DECODE (1024 is accepted)', () => {
      const arr = (n: number) => Buffer.concat([Buffer.from([0xdc, n >> 8, n & 0xff]), Buffer.alloc(n)])
      expect((decode(arr(1024)) as unknown[]).length).to.equal(1024)
      expect(codeOf(() => decode(arr(1025)))).to.equal('TESSERA_DECODE')
      const map = (n: number) => {
        const parts = [Buffer.from([0xde, n >> 8, n & 0xff])]
        for (let i = 0; i < n; i++) parts.push(Buffer.from(encode(`k${i}`)), Buffer.from([0]))
        return Buffer.concat(parts)
      }
      expect(Object.keys(decode(map(1024)) as object).length).to.equal(1024)
      expect(codeOf(() => decode(map(1025)))).to.equal('TESSERA_DECODE')
    })

    it('containers announcing 2^32-1 entries with TESSERA_DECODE, without allocating', () => {
      const before = process.memoryUsage().heapUsed
      const t0 = process.hrtime.bigint()
      for (const b of ['dd ffffffff', 'df ffffffff', 'dd ffffffff 00', 'c6 ffffffff', 'db ffffffff 61'])
        expect(codeOf(() => decode(unhex(b))), b).to.equal('TESSERA_DECODE')
      expect(Number(process.hrtime.bigint() - t0) / 1e6).to.be.lessThan(100)
      expect(process.memoryUsage().heapUsed - before).to.be.lessThan(16 << 20)
    })

    // Integers must fit in ±(2^53-1) so that every language reads the same number.
    rejects('uint64 2^53', 'cf 00200000 00000000')
    rejects('uint64 2^64-1', 'cf ffffffff ffffffff')
    rejects('int64 2^53', 'd3 00200000 00000000')
    rejects('int64 -2^53', 'd3 ffe00000 00000000')
    rejects('int64 -2^63', 'd3 80000000 00000000')

    it('accepts uint64 2^53-1 and int64 -(2^53-1) (the bounds)', () => {
      expect(decode(unhex('cf 001fffff ffffffff'))).to.equal(2 ** 53 - 1)
      expect(decode(unhex('d3 ffe00000 00000001'))).to.equal(-(2 ** 53 - 1))
    })

    it('only ever returns a value or throws TESSERA_DECODE on random bytes (property)', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
          try {
            decode(b)
          } catch (err) {
            expect(err).to.be.instanceOf(TesseraError)
            expect((err as TesseraError).code).to.equal('TESSERA_DECODE')
          }
        }),
        { numRuns: 2000 },
      )
    })

    it('only ever returns a value or throws TESSERA_DECODE on mutated valid messages (property)', () => {
      const base = encode({ v: 1, t: 40, nonce: new Uint8Array(32), list: [1, 'a', { x: 2 ** 40 }], f: 0.5 })
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), (edits) => {
          const b = Buffer.from(base)
          for (const [at, v] of edits) b[at] = v
          try {
            decode(b)
          } catch (err) {
            expect(err).to.be.instanceOf(TesseraError)
            expect((err as TesseraError).code).to.equal('TESSERA_DECODE')
          }
        }),
        { numRuns: 2000 },
      )
    })

    it('honours custom maxDepth and maxEntries', () => {
      expect(codeOf(() => decode(nestedArrays(3), { maxDepth: 2 }))).to.equal('TESSERA_DECODE')
      expect(codeOf(() => decode(unhex('93 01 02 03'), { maxEntries: 2 }))).to.equal('TESSERA_DECODE')
      expect(decode(unhex('92 01 02'), { maxEntries: 2 })).to.deep.equal([1, 2])
    })
  })

  describe('"__proto__" keys', () => {
    const protoKey = Buffer.from(`a9${Buffer.from('__proto__').toString('hex')}`, 'hex')

    afterEach(() => {
      expect(({} as Record<string, unknown>).polluted).to.equal(undefined)
      expect(Object.prototype).to.not.have.own.property('polluted')
    })

    it('are refused with TESSERA_DECODE and pollute nothing', () => {
      // { "__proto__": { "polluted": true } }
      const b = Buffer.concat([Buffer.from([0x81]), protoKey, Buffer.from(`81a8${Buffer.from('polluted').toString('hex')}c3`, 'hex')])
      expect(codeOf(() => decode(b))).to.equal('TESSERA_DECODE')
    })

    it('are refused when nested in an array of maps', () => {
      const inner = Buffer.concat([Buffer.from([0x81]), protoKey, Buffer.from(`81a8${Buffer.from('polluted').toString('hex')}01`, 'hex')])
      expect(codeOf(() => decode(Buffer.concat([Buffer.from([0x92]), inner, inner])))).to.equal('TESSERA_DECODE')
    })

    it('make decodeMessage fail with TESSERA_DECODE', () => {
      const msg: Record<string, unknown> = { v: 1, t: MsgType.TIME_REQ, nonce: new Uint8Array(32) }
      Object.defineProperty(msg, '__proto__', { value: { polluted: true }, enumerable: true })
      const wire = encode(msg)
      expect(Buffer.from(wire).includes(Buffer.from('__proto__'))).to.equal(true)
      expect(codeOf(() => decodeMessage(wire))).to.equal('TESSERA_DECODE')
    })
  })
})

function hasFloat(v: unknown): boolean {
  if (typeof v === 'number') return !Number.isInteger(v) || !Number.isSafeInteger(v)
  if (Array.isArray(v)) return v.some(hasFloat)
  if (v && typeof v === 'object') return Object.values(v).some(hasFloat)
  return false
}

const wellFormed = (s: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s)

describe('encode against msgpackr (reference)', () => {
  const reference = new Packr({ useRecords: false, variableMapSize: true })
  it('writes the same bytes as msgpackr for values both encode plainly (property)', () => {
    const key = fc.string({ maxLength: 40 }).filter((k) => k !== '__proto__' && wellFormed(k))
    const leaf = fc.oneof(
      fc.constant(null),
      fc.boolean(),
      fc.integer({ min: -0x80000000, max: 0xffffffff }),
      fc.string({ maxLength: 300 }).filter((s) => wellFormed(s)),
      fc.uint8Array({ maxLength: 300 }),
    )
    const value = fc.letrec((tie) => ({
      v: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('v'), { maxLength: 20 }), fc.dictionary(key, tie('v'), { maxKeys: 20 })),
    })).v
    fc.assert(
      fc.property(value, (v) => {
        expect(Buffer.from(encode(v)).toString('hex')).to.equal(Buffer.from(reference.pack(v)).toString('hex'))
      }),
      { numRuns: 1500 },
    )
  })
})

describe('decode against msgpackr (reference)', () => {
  // What the codec decoded with before it had its own builder: the values must not change.
  const reference = new Packr({ useRecords: false, variableMapSize: true, int64AsType: 'number', mapsAsObjects: true, bundleStrings: false })
  const key = fc.oneof(
    fc.constantFrom('v', 't', 'crealm', 'cname', 'ticket', 'enc', '1', '\ufeffk', 'é'),
    fc.string({ maxLength: 40 }).filter((k) => k !== '__proto__' && wellFormed(k)),
  )
  const leaf = fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.integer({ min: -0x80000000, max: 0xffffffff }),
    fc.constantFrom(2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 32, -(2 ** 32), -(2 ** 31) - 1, 1_764_000_000_000),
    fc.string({ maxLength: 300 }).filter((s) => wellFormed(s)),
    fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => wellFormed(s)),
    fc.constantFrom('\ufeffbom', '\ufeff', 'a\u0000b'),
    fc.uint8Array({ maxLength: 300 }),
  )
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('v'), { maxLength: 20 }), fc.dictionary(key, tie('v'), { maxKeys: 20 })),
  })).v
  const same = (body: Uint8Array) => {
    const ours = decode(body)
    const theirs = reference.unpack(body)
    expect(ours).to.deep.equal(theirs)
    // Same key order, and bins of the same class (views of the body, Buffer or Uint8Array as the body is).
    expect(JSON.stringify(ours, (_k, x) => (x instanceof Uint8Array ? `${x.constructor.name}:${hex(x)}` : x))).to.equal(
      JSON.stringify(theirs, (_k, x) => (x instanceof Uint8Array ? `${x.constructor.name}:${hex(x)}` : x)),
    )
  }

  it('builds the same values as msgpackr from Buffer and Uint8Array bodies (property)', () => {
    fc.assert(
      fc.property(value, (v) => {
        const body = Buffer.from(encode(v))
        same(body)
        same(new Uint8Array(body))
      }),
      { numRuns: 1500 },
    )
  })

  it('builds the same values as msgpackr from the longer encodings (str8 keys, map16, array16, int64 of small values)', () => {
    for (const wire of [
      'd9 01 61', // not a map: a str8 alone
      '81 d9 01 61 01', // {a: 1} with a str8 key
      '81 da 0001 61 02', // str16 key
      '81 db 00000001 61 03', // str32 key
      'de 0001 a1 61 04', // map16
      'df 00000001 a1 61 05', // map32
      'dc 0002 01 02', // array16
      'dd 00000002 01 02', // array32
      'd3 00000000 00000001', // int64 1
      'd3 ffffffff ffffffff', // int64 -1
      'cf 00000000 00000007', // uint64 7
      'd0 80', // int8 -128
      'd1 8000', // int16 -32768
      'd2 80000000', // int32 -2^31
      'c4 00', // empty bin8
      'c5 0001 ff', // bin16
      'c6 00000001 ff', // bin32
      'a3 efbbbf', // a lone BOM
      '82 a1 31 01 a1 30 02', // integer-like keys, in wire order
    ]) {
      const body = unhex(wire)
      same(body)
      same(new Uint8Array(body))
    }
  })

  it('keeps each map key string apart when bodies reuse the same buffer', () => {
    const body = Buffer.from(encode({ ab: 1 }))
    expect(decode(body)).to.deep.equal({ ab: 1 })
    body.set(Buffer.from('cd'), 2)
    expect(decode(body)).to.deep.equal({ cd: 1 })
  })
})
