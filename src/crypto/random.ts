/** Randomness: the only caller of the CSPRNG (nonces, keys, session keys). */
import { randomFillSync } from 'node:crypto'

// Small requests (nonces, keys) are served from a pool refilled 4 KiB at a time:
// one CSPRNG call per ~100 nonces instead of one each. Bytes handed out are copied
// and wiped from the pool, so no two callers ever share them.
const POOL_BYTES = 4096
const pool = new Uint8Array(POOL_BYTES)
let poolPos = POOL_BYTES

/** n cryptographically random bytes. */
export function randomBytes(n: number): Uint8Array {
  if (n > 256) return randomFillSync(new Uint8Array(n))
  if (poolPos + n > POOL_BYTES) {
    randomFillSync(pool)
    poolPos = 0
  }
  const out = pool.slice(poolPos, poolPos + n)
  pool.fill(0, poolPos, poolPos + n)
  poolPos += n
  return out
}

/** Fill `target` with cryptographically random bytes (nonces written in place). */
export function randomFill(target: Uint8Array): void {
  const n = target.length
  if (n > 256) {
    randomFillSync(target)
    return
  }
  if (poolPos + n > POOL_BYTES) {
    randomFillSync(pool)
    poolPos = 0
  }
  target.set(pool.subarray(poolPos, poolPos + n))
  pool.fill(0, poolPos, poolPos + n)
  poolPos += n
}

/** A fresh 32-byte symmetric key. */
export function randomKey(): Uint8Array {
  return randomBytes(32)
}

/** A random unsigned 32-bit integer (request nonces). */
export function randomUint32(): number {
  const b = randomBytes(4)
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0
}
