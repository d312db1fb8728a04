/** seal / open: XSalsa20-Poly1305 under a per-usage subkey, with a random 24-byte nonce. */
import { ErrorCode } from '../../proto/error-codes.js'
import { KrbProtocolError } from '../errors.js'
import { backend } from './backend.js'
import { usageKey } from './keys.js'
import { randomFill } from './random.js'

/** Nonce length of XSalsa20 (bytes). */
export const NONCE_BYTES = 24
/** Poly1305 tag length (bytes). */
export const TAG_BYTES = 16
/** Overhead of a sealed object: nonce + tag. */
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES

// Sealed objects are small (tickets, parts): they are cut from a shared chunk, as node's
// Buffer pool does, rather than each getting its own zeroed backing store (several times
// the cost of sealing 200 bytes). A chunk only ever holds sealed bytes, which are public.
const CHUNK_BYTES = 16 * 1024
let chunk = new ArrayBuffer(CHUNK_BYTES)
let chunkPos = 0

function sealedBytes(n: number): Uint8Array {
  if (n > CHUNK_BYTES / 8) return new Uint8Array(n)
  if (chunkPos + n > CHUNK_BYTES) {
    chunk = new ArrayBuffer(CHUNK_BYTES)
    chunkPos = 0
  }
  const out = new Uint8Array(chunk, chunkPos, n)
  chunkPos += (n + 7) & ~7
  return out
}

/**
 * Seal `plain` for `usage` under `key`. Output: nonce(24) || tag(16) || ciphertext.
 * `nonce` is only for test vectors; production callers let it be random.
 */
export function seal(key: Uint8Array, usage: number, plain: Uint8Array, nonce?: Uint8Array): Uint8Array {
  if (key.length !== 32) throw new RangeError('seal key must be 32 bytes')
  if (nonce !== undefined && nonce.length !== NONCE_BYTES) throw new RangeError('seal nonce must be 24 bytes')
  const out = sealedBytes(SEAL_OVERHEAD + plain.length)
  const n = out.subarray(0, NONCE_BYTES)
  if (nonce === undefined) randomFill(n)
  else n.set(nonce)
  backend().secretboxInto(out.subarray(NONCE_BYTES), plain, n, usageKey(key, usage))
  return out
}

/** Open a sealed object, or null if it is too short or does not verify under (key, usage). */
export function tryOpen(key: Uint8Array, usage: number, sealed: Uint8Array): Uint8Array | null {
  if (key.length !== 32 || sealed.length < SEAL_OVERHEAD) return null
  return backend().secretboxOpen(sealed.subarray(NONCE_BYTES), sealed.subarray(0, NONCE_BYTES), usageKey(key, usage))
}

/** Open a sealed object; throws KrbProtocolError(KRB_AP_ERR_BAD_INTEGRITY) if it does not verify. */
export function open(key: Uint8Array, usage: number, sealed: Uint8Array): Uint8Array {
  const plain = tryOpen(key, usage, sealed)
  if (plain === null) throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_BAD_INTEGRITY, 'BAD_INTEGRITY')
  return plain
}
