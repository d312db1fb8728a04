/** A bounded least-recently-used map (Map keeps insertion order; a hit re-inserts the entry). */

/** LRU cache of at most `capacity` entries; capacity 0 stores nothing. */
export class LruCache<K, V> {
  readonly #map = new Map<K, V>()

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 0) throw new RangeError('cache capacity must be a non-negative integer')
  }

  /** The value for `key`, now the most recently used, or undefined. */
  get(key: K): V | undefined {
    const v = this.#map.get(key)
    // Recency only matters once evictions can happen: below capacity a hit is one lookup.
    if (v !== undefined && this.#map.size >= this.capacity) {
      this.#map.delete(key)
      this.#map.set(key, v)
    }
    return v
  }

  /** Store `value` as the most recently used, evicting the least recently used beyond capacity. */
  set(key: K, value: V): void {
    if (this.capacity === 0) return
    this.#map.delete(key)
    this.#map.set(key, value)
    if (this.#map.size > this.capacity) {
      const oldest = this.#map.keys().next()
      if (!oldest.done) this.#map.delete(oldest.value)
    }
  }

  delete(key: K): void {
    this.#map.delete(key)
  }

  clear(): void {
    this.#map.clear()
  }

  get size(): number {
    return this.#map.size
  }
}
