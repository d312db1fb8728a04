import { expect } from 'chai'
import { LruCache } from '../../src/db/lru.js'

describe('LruCache', () => {
  it('evicts the least recently used entry beyond capacity', () => {
    const c = new LruCache<string, number>(2)
    c.set('a', 1)
    c.set('b', 2)
    expect(c.get('a')).to.equal(1) // a is now the most recent
    c.set('c', 3)
    expect(c.get('b')).to.equal(undefined)
    expect(c.get('a')).to.equal(1)
    expect(c.get('c')).to.equal(3)
    expect(c.size).to.equal(2)
  })

  it('replaces a value without growing', () => {
    const c = new LruCache<string, number>(2)
    c.set('a', 1)
    c.set('a', 2)
    expect(c.size).to.equal(1)
    expect(c.get('a')).to.equal(2)
  })

  it('stores nothing with capacity 0', () => {
    const c = new LruCache<string, number>(0)
    c.set('a', 1)
    expect(c.get('a')).to.equal(undefined)
  })

  it('refuses a negative or fractional capacity with RangeError', () => {
    expect(() => new LruCache(-1)).to.throw(RangeError)
    expect(() => new LruCache(1.5)).to.throw(RangeError)
  })
})

describe('LruCache (byte bound)', () => {
  it('evicts the least recently used entries until the sizes fit in maxBytes', () => {
    const c = new LruCache<string, number>(100, 10)
    c.set('a', 1, 4)
    c.set('b', 2, 4)
    expect(c.get('a')).to.equal(1) // a is now the most recent (past half of maxBytes)
    c.set('c', 3, 4)
    expect(c.get('b')).to.equal(undefined)
    expect([c.get('a'), c.get('c')]).to.deep.equal([1, 3])
    expect(c.bytes).to.equal(8)
    c.set('d', 4, 9)
    expect([c.get('a'), c.get('c'), c.get('d')]).to.deep.equal([undefined, undefined, 4])
    expect(c.bytes).to.equal(9)
  })

  it('counts a replaced or deleted entry once and never stores one above maxBytes', () => {
    const c = new LruCache<string, number>(100, 10)
    c.set('a', 1, 3)
    c.set('a', 2, 5)
    expect([c.size, c.bytes, c.bytesOf('a')]).to.deep.equal([1, 5, 5])
    c.set('a', 3, 11)
    expect([c.get('a'), c.size, c.bytes]).to.deep.equal([undefined, 0, 0])
    c.set('b', 1, 6)
    c.delete('b')
    c.delete('b')
    expect(c.bytes).to.equal(0)
    c.set('c', 1, 2)
    c.clear()
    expect([c.size, c.bytes]).to.deep.equal([0, 0])
  })

  it('keeps the entry bound as well', () => {
    const c = new LruCache<string, number>(2, 1000)
    for (const k of ['a', 'b', 'c']) c.set(k, 1, 1)
    expect([c.size, c.bytes, c.get('a')]).to.deep.equal([2, 2, undefined])
  })
})

describe('LruCache (against a reference model)', () => {
  /** The obvious LRU: an array, most recent last. */
  class Model {
    entries: { k: number; v: number; b: number }[] = []
    constructor(
      readonly capacity: number,
      readonly maxBytes: number,
    ) {}
    get(k: number): number | undefined {
      const i = this.entries.findIndex((e) => e.k === k)
      if (i < 0) return undefined
      const [e] = this.entries.splice(i, 1)
      this.entries.push(e!)
      return e!.v
    }
    set(k: number, v: number, b: number): void {
      this.delete(k)
      if (this.capacity === 0 || b > this.maxBytes) return
      this.entries.push({ k, v, b })
      while (this.entries.length > this.capacity || this.bytes > this.maxBytes) this.entries.shift()
    }
    delete(k: number): void {
      this.entries = this.entries.filter((e) => e.k !== k)
    }
    get bytes(): number {
      return this.entries.reduce((n, e) => n + e.b, 0)
    }
  }

  it('agrees with the model on 20,000 random gets, sets and deletes (hot keys hit again and again)', () => {
    let seed = 12345
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % n
    }
    for (const [capacity, maxBytes] of [
      [8, Number.POSITIVE_INFINITY],
      [50, 400],
      [1000, 60],
    ] as const) {
      const c = new LruCache<number, number>(capacity, maxBytes)
      const m = new Model(capacity, maxBytes)
      for (let i = 0; i < 20_000; i++) {
        const op = rnd(10)
        // A few hot keys and a long tail, as the KDC sees krbtgt and its services.
        const k = rnd(4) === 0 ? rnd(3) : rnd(200)
        if (op < 6) expect(c.get(k), `get ${k} at ${i}`).to.equal(m.get(k))
        else if (op < 9) {
          const b = rnd(12)
          c.set(k, i, b)
          m.set(k, i, b)
        } else {
          c.delete(k)
          m.delete(k)
        }
        expect(c.size, `size at ${i}`).to.equal(m.entries.length)
        expect(c.bytes, `bytes at ${i}`).to.equal(m.bytes)
      }
    }
  })
})
