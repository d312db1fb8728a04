/** Randomness: the only caller of the CSPRNG (nonces, keys, session keys). */
import { randomFillSync } from 'node:crypto'

/** n cryptographically random bytes. */
export function randomBytes(n: number): Uint8Array {
  return randomFillSync(new Uint8Array(n))
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
