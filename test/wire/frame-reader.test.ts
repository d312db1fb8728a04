import { expect } from 'chai'
import fc from 'fast-check'
import { TesseraError } from '../../src/errors.js'
import { FrameReader, frame, HEADER_BYTES } from '../../src/wire/frame-reader.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const body = Buffer.from('hello, tessera!') // 15 bytes
const whole = frame(body)

/** Push `chunks` in order; returns the frames produced, as hex. */
function feed(r: FrameReader, ...chunks: Uint8Array[]): string[] {
  return chunks.flatMap((c) => r.push(c)).map((b) => b.toString('hex'))
}

function expectTooLarge(fn: () => unknown): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught).to.be.instanceOf(TesseraError)
  expect((caught as TesseraError).code).to.equal('TESSERA_FRAME_TOO_LARGE')
}

describe('frame', () => {
  useProcessGuards()

  it('prefixes the body with its length as uint32 big-endian', () => {
    expect(frame(Buffer.from('abc')).toString('hex')).to.equal('00000003616263')
    expect(frame(new Uint8Array(0)).toString('hex')).to.equal('00000000')
  })
})

describe('FrameReader', () => {
  useProcessGuards()

  it('parses a whole frame in one chunk', () => {
    const r = new FrameReader()
    expect(feed(r, whole)).to.deep.equal([body.toString('hex')])
    expect(r.pending).to.equal(0)
  })

  const splits: [string, number][] = [
    ['at byte 1', 1],
    ['inside the header', 2],
    ['right after the header', HEADER_BYTES],
    ['in the middle', Math.floor(whole.length / 2)],
    ['before the last byte', whole.length - 1],
  ]
  for (const [name, at] of splits) {
    it(`parses a frame split ${name}`, () => {
      const r = new FrameReader()
      expect(feed(r, whole.subarray(0, at))).to.deep.equal([])
      // The header is consumed once whole; what is held is the rest.
      expect(r.pending).to.equal(at >= HEADER_BYTES ? at - HEADER_BYTES : at)
      expect(feed(r, whole.subarray(at))).to.deep.equal([body.toString('hex')])
      expect(r.pending).to.equal(0)
    })
  }

  it('parses a frame fed one byte at a time', () => {
    const r = new FrameReader()
    const out: string[] = []
    for (let i = 0; i < whole.length; i++) out.push(...feed(r, whole.subarray(i, i + 1)))
    expect(out).to.deep.equal([body.toString('hex')])
  })

  it('parses two frames coalesced in one chunk', () => {
    const r = new FrameReader()
    const b2 = Buffer.from('second')
    expect(feed(r, Buffer.concat([whole, frame(b2)]))).to.deep.equal([body.toString('hex'), b2.toString('hex')])
    expect(r.pending).to.equal(0)
  })

  it('parses three frames coalesced with a fourth split across chunks', () => {
    const r = new FrameReader()
    const f = [Buffer.from('a'), Buffer.from('bb'), Buffer.from('ccc'), Buffer.from('dddd')].map(frame)
    const all = Buffer.concat(f)
    const cut = f[0]!.length + f[1]!.length + f[2]!.length + 3
    expect(feed(r, all.subarray(0, cut))).to.deep.equal(['61', '6262', '636363'])
    expect(r.pending).to.equal(3)
    expect(feed(r, all.subarray(cut))).to.deep.equal(['64646464'])
  })

  it('parses a zero-length body as an empty frame', () => {
    const r = new FrameReader()
    const out = r.push(Buffer.concat([frame(new Uint8Array(0)), whole]))
    expect(out.map((b) => b.length)).to.deep.equal([0, body.length])
  })

  it('ignores an empty chunk', () => {
    const r = new FrameReader()
    expect(r.push(new Uint8Array(0))).to.deep.equal([])
    expect(r.pending).to.equal(0)
  })

  it('accepts a frame of exactly maxFrameBytes', () => {
    const r = new FrameReader(8)
    expect(r.push(frame(new Uint8Array(8))).length).to.equal(1)
  })

  it('accepts Uint8Array views with an offset into a larger buffer', () => {
    const backing = new Uint8Array(64).fill(0xee)
    backing.set(whole, 10)
    const r = new FrameReader()
    expect(feed(r, backing.subarray(10, 10 + whole.length))).to.deep.equal([body.toString('hex')])
  })

  it('throws TESSERA_FRAME_TOO_LARGE as soon as a header above maxFrameBytes arrives', () => {
    const r = new FrameReader(8)
    expectTooLarge(() => r.push(frame(new Uint8Array(9)).subarray(0, HEADER_BYTES)))
    expect(r.pending).to.equal(0)
  })

  it('throws TESSERA_FRAME_TOO_LARGE for a header announcing 2^32-1 without buffering a body', () => {
    const r = new FrameReader()
    const before = process.memoryUsage().arrayBuffers
    expectTooLarge(() => r.push(Buffer.from('ffffffff', 'hex')))
    expect(r.pending).to.equal(0)
    // Nothing near 4 GiB (or even 1 MiB) was allocated for the announced body.
    expect(process.memoryUsage().arrayBuffers - before).to.be.lessThan(1 << 20)
  })

  it('throws TESSERA_FRAME_TOO_LARGE when the oversize header arrives split in two', () => {
    const r = new FrameReader(1024)
    expect(r.push(Buffer.from('0001', 'hex'))).to.deep.equal([])
    expectTooLarge(() => r.push(Buffer.from('0000', 'hex')))
    expect(r.pending).to.equal(0)
  })

  it('throws TESSERA_FRAME_TOO_LARGE for an oversize frame that follows a good one in the same chunk', () => {
    const r = new FrameReader(32)
    expectTooLarge(() => r.push(Buffer.concat([whole, Buffer.from('00000021', 'hex')])))
    expect(r.pending).to.equal(0)
  })

  it('holds no more than the header and what has arrived of the body', () => {
    const r = new FrameReader(1 << 20)
    r.push(Buffer.from('000fffff', 'hex'))
    r.push(new Uint8Array(100))
    expect(r.pending).to.equal(100)
  })

  it('drops everything buffered on reset()', () => {
    const r = new FrameReader()
    r.push(whole.subarray(0, 7))
    r.reset()
    expect(r.pending).to.equal(0)
    expect(feed(r, whole)).to.deep.equal([body.toString('hex')])
  })

  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 32, Number.POSITIVE_INFINITY]) {
    it(`rejects maxFrameBytes = ${bad} with RangeError`, () => {
      expect(() => new FrameReader(bad)).to.throw(RangeError)
    })
  }

  it('reassembles any split of any sequence of frames (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (bodies, cuts) => {
          const stream = Buffer.concat(bodies.map((b) => frame(b)))
          const points = [...new Set(cuts.map((c) => (stream.length ? c % stream.length : 0)))].sort((a, b) => a - b)
          const r = new FrameReader(64)
          const out: string[] = []
          let prev = 0
          for (const p of [...points, stream.length]) {
            out.push(...feed(r, stream.subarray(prev, p)))
            prev = p
          }
          expect(out).to.deep.equal(bodies.map((b) => Buffer.from(b).toString('hex')))
          expect(r.pending).to.equal(0)
        },
      ),
      { numRuns: 300 },
    )
  })

  it('only ever returns frames or throws TESSERA_FRAME_TOO_LARGE on random bytes (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
        const r = new FrameReader(128)
        for (const c of chunks) {
          try {
            for (const f of r.push(c)) expect(f.length).to.be.at.most(128)
          } catch (err) {
            expect(err).to.be.instanceOf(TesseraError)
            expect((err as TesseraError).code).to.equal('TESSERA_FRAME_TOO_LARGE')
          }
          expect(r.pending).to.be.at.most(128 + HEADER_BYTES + 64)
        }
      }),
      { numRuns: 500 },
    )
  })
})
