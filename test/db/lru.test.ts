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
