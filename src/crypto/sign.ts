/** Identity keys: Ed25519 signatures (RFC 8032) and X25519 key pairs (RFC 7748). */
import { backend } from './backend.js'
import { randomBytes } from './random.js'

/** A key pair; `secretKey` is the 32-byte seed (Ed25519) or scalar (X25519). */
export interface KeyPair {
  publicKey: Uint8Array
  secretKey: Uint8Array
}

/** A fresh X25519 key pair. */
export function x25519KeyPair(secretKey: Uint8Array = randomBytes(32)): KeyPair {
  return { secretKey, publicKey: backend().x25519Base(secretKey) }
}

/** X25519 shared secret; throws RangeError on a low-order public key. */
export function x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return backend().x25519(secretKey, publicKey)
}

/** A fresh Ed25519 key pair (secretKey = 32-byte seed). */
export function ed25519KeyPair(seed: Uint8Array = randomBytes(32)): KeyPair {
  return { secretKey: seed, publicKey: backend().ed25519PublicKey(seed) }
}

/** Ed25519 signature (64 bytes). */
export function sign(msg: Uint8Array, seed: Uint8Array): Uint8Array {
  return backend().ed25519Sign(msg, seed)
}

/** Ed25519 verification; false on any malformed input. */
export function verify(msg: Uint8Array, sig: Uint8Array, publicKey: Uint8Array): boolean {
  return backend().ed25519Verify(msg, sig, publicKey)
}
