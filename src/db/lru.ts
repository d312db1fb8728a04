/** A bounded least-recently-used map (Map keeps insertion order; a hit re-inserts the entry). */

/**
 * LRU cache of at most `capacity` entries and, when `maxBytes` is given, at most `maxBytes`
 * of the sizes given to {@link set} (the caller's estimate of what an entry holds); capacity
 * 0 stores nothing.
 */
export class LruCache<K, V> {
  readonly #map = new Map<K, V>()
  /** Entry sizes, only with a byte bound. */
  readonly #sizes: Map<K, number> | undefined
  #bytes = 0

  constructor(
    readonly capacity: number,
    readonly maxBytes: number = Number.POSITIVE_INFINITY,
  ) {
    if (!Number.isSafeInteger(capacity) || capacity < 0) throw new RangeError('cache capacity must be a non-negative integer')
    if (maxBytes !== Number.POSITIVE_INFINITY && (!Number.isSafeInteger(maxBytes) || maxBytes < 0))
      throw new RangeError('cache maxBytes must be a non-negative integer')
    if (maxBytes !== Number.POSITIVE_INFINITY) this.#sizes = new Map()
  }

  /** The value for `key`, now the most recently used, or undefined. */
  get(key: K): V | undefined {
    const v = this.#map.get(key)
    // Recency only matters once evictions can happen: well below the bounds a hit is one lookup.
    if (v !== undefined && (this.#map.size >= this.capacity || this.#bytes * 2 >= this.maxBytes)) {
      this.#map.delete(key)
      this.#map.set(key, v)
    }
    return v
  }

  /**
   * Store `value` as the most recently used, evicting the least recently used beyond the
   * bounds. `bytes`: the entry's size, counted against maxBytes (an entry larger than maxBytes is not stored).
   */
  set(key: K, value: V, bytes = 0): void {
    if (this.capacity === 0 || bytes > this.maxBytes) {
      this.delete(key)
      return
    }
    this.#map.delete(key)
    this.#map.set(key, value)
    const sizes = this.#sizes
    if (sizes !== undefined) {
      this.#bytes += bytes - (sizes.get(key) ?? 0)
      sizes.set(key, bytes)
    }
    while (this.#map.size > this.capacity || this.#bytes > this.maxBytes) {
      const oldest = this.#map.keys().next()
      if (oldest.done) break
      this.delete(oldest.value)
    }
  }

  delete(key: K): void {
    this.#map.delete(key)
    const sizes = this.#sizes
    if (sizes !== undefined) {
      const b = sizes.get(key)
      if (b !== undefined) {
        this.#bytes -= b
        sizes.delete(key)
      }
    }
  }

  /** The size `key` was stored with (0 without a byte bound), or undefined if absent. */
  bytesOf(key: K): number | undefined {
    if (!this.#map.has(key)) return undefined
    return this.#sizes?.get(key) ?? 0
  }

  clear(): void {
    this.#map.clear()
    this.#sizes?.clear()
    this.#bytes = 0
  }

  get size(): number {
    return this.#map.size
  }

  /** The sum of the sizes of the entries held (0 without a byte bound). */
  get bytes(): number {
    return this.#bytes
  }
}
