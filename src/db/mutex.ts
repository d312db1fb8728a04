/** A keyed async mutex: callers with the same key run one after another, in arrival order. */

/** Serializes async sections per key; keys with no waiter hold no memory. */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<void>>()

  /** Run `fn` once every earlier section for `key` has settled; resolves or rejects as `fn` does. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key)
    try {
      return await fn()
    } finally {
      release()
    }
  }

  /**
   * Wait for `key` as {@link run} does, and hold it until the returned release is called
   * (exactly once). For taking many keys one after another without nesting callbacks; take
   * them in one global order (sorted), as nested runs do, so two callers cannot wait on each other.
   */
  async acquire(key: string): Promise<() => void> {
    const prev = this.#tails.get(key)
    let release!: () => void
    const mine = new Promise<void>((resolve) => {
      release = resolve
    })
    // Tails only ever resolve, so a failed section never poisons the ones queued after it.
    const tail = prev ? prev.then(() => mine) : mine
    this.#tails.set(key, tail)
    if (prev) await prev
    return () => {
      release()
      if (this.#tails.get(key) === tail) this.#tails.delete(key)
    }
  }

  /** Number of keys with a section running or queued (for tests). */
  get size(): number {
    return this.#tails.size
  }
}
