/**
 * A bounded least-recently-used map: a Map from key to node, and the nodes in a doubly
 * linked list, most recent first. A hit moves its node to the front by relinking it; the
 * Map is written only when an entry is added or removed. (Re-inserting the hit key into the
 * Map, the usual Map-only LRU, is O(size) per hit in V8 once the Map is large: its hash
 * table keeps deleted entries in the bucket chains until the next rehash, so the chain of a
 * key deleted and re-added on every hit grows with every hit. At 42,000 entries that cost
 * 95 µs per hit, and a KDC whose principal cache was full spent a third of its time there.)
 */

interface Node<K, V> {
  key: K
  value: V
  bytes: number
  prev: Node<K, V> | undefined
  next: Node<K, V> | undefined
}

/**
 * LRU cache of at most `capacity` entries and, when `maxBytes` is given, at most `maxBytes`
 * of the sizes given to {@link set} (the caller's estimate of what an entry holds); capacity
 * 0 stores nothing.
 */
export class LruCache<K, V> {
  readonly #map = new Map<K, Node<K, V>>()
  /** Most recently used. */
  #head: Node<K, V> | undefined
  /** Least recently used: the next to go. */
  #tail: Node<K, V> | undefined
  #bytes = 0

  constructor(
    readonly capacity: number,
    readonly maxBytes: number = Number.POSITIVE_INFINITY,
  ) {
    if (!Number.isSafeInteger(capacity) || capacity < 0) throw new RangeError('cache capacity must be a non-negative integer')
    if (maxBytes !== Number.POSITIVE_INFINITY && (!Number.isSafeInteger(maxBytes) || maxBytes < 0))
      throw new RangeError('cache maxBytes must be a non-negative integer')
  }

  /** The value for `key`, now the most recently used, or undefined. */
  get(key: K): V | undefined {
    const n = this.#map.get(key)
    if (n === undefined) return undefined
    if (n !== this.#head) {
      this.#unlink(n)
      this.#pushFront(n)
    }
    return n.value
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
    const known = this.#map.get(key)
    if (known !== undefined) {
      known.value = value
      this.#bytes += bytes - known.bytes
      known.bytes = bytes
      if (known !== this.#head) {
        this.#unlink(known)
        this.#pushFront(known)
      }
    } else {
      const n: Node<K, V> = { key, value, bytes, prev: undefined, next: undefined }
      this.#map.set(key, n)
      this.#bytes += bytes
      this.#pushFront(n)
    }
    while (this.#map.size > this.capacity || this.#bytes > this.maxBytes) {
      const oldest = this.#tail
      if (oldest === undefined) break
      this.#remove(oldest)
    }
  }

  delete(key: K): void {
    const n = this.#map.get(key)
    if (n !== undefined) this.#remove(n)
  }

  /** The size `key` was stored with (0 without one), or undefined if absent. */
  bytesOf(key: K): number | undefined {
    return this.#map.get(key)?.bytes
  }

  clear(): void {
    this.#map.clear()
    this.#head = undefined
    this.#tail = undefined
    this.#bytes = 0
  }

  get size(): number {
    return this.#map.size
  }

  /** The sum of the sizes of the entries held. */
  get bytes(): number {
    return this.#bytes
  }

  #remove(n: Node<K, V>): void {
    this.#map.delete(n.key)
    this.#unlink(n)
    this.#bytes -= n.bytes
  }

  #unlink(n: Node<K, V>): void {
    if (n.prev !== undefined) n.prev.next = n.next
    else this.#head = n.next
    if (n.next !== undefined) n.next.prev = n.prev
    else this.#tail = n.prev
    n.prev = undefined
    n.next = undefined
  }

  #pushFront(n: Node<K, V>): void {
    n.next = this.#head
    if (this.#head !== undefined) this.#head.prev = n
    this.#head = n
    if (this.#tail === undefined) this.#tail = n
  }
}
