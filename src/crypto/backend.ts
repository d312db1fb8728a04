/**
 * NaCl primitive backends behind one interface: sodium-native (libsodium, the
 * fastest that installs here), node:crypto (OpenSSL) and tweetnacl (pure JS, the
 * fallback). All give byte-identical results; proto/vectors proves it in tests.
 * This folder is the only place that imports a NaCl implementation.
 */
import * as nodeCrypto from 'node:crypto'
import { createRequire } from 'node:module'
import nacl from 'tweetnacl'

/** The primitives Tessera builds on. Keys and outputs are raw bytes. */
export interface NaclBackend {
  readonly name: 'sodium-native' | 'node' | 'tweetnacl'
  /** XSalsa20-Poly1305 (NaCl crypto_secretbox). Output = 16-byte tag || ciphertext. */
  secretbox(msg: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array
  /** {@link secretbox} written into `out` (exactly msg.length + 16 bytes; must not overlap msg). */
  secretboxInto(out: Uint8Array, msg: Uint8Array, nonce: Uint8Array, key: Uint8Array): void
  /** Inverse of secretbox; null when the tag does not verify. */
  secretboxOpen(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null
  /** X25519 (RFC 7748) scalar multiplication. Throws on an all-zero shared secret. */
  x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array
  /** X25519 public key of a 32-byte secret. */
  x25519Base(secretKey: Uint8Array): Uint8Array
  /** Ed25519 (RFC 8032) public key from a 32-byte seed. */
  ed25519PublicKey(seed: Uint8Array): Uint8Array
  /** Ed25519 signature (64 bytes) of msg with the 32-byte seed. */
  ed25519Sign(msg: Uint8Array, seed: Uint8Array): Uint8Array
  /** Ed25519 verification. */
  ed25519Verify(msg: Uint8Array, sig: Uint8Array, publicKey: Uint8Array): boolean
  /** SHA-256 of one byte string. */
  sha256(data: Uint8Array): Uint8Array
  /** {@link sha256} written into `out` (exactly 32 bytes; may not overlap data). Only where it saves an allocation. */
  sha256Into?(out: Uint8Array, data: Uint8Array): void
}

const nodeSha256 = (data: Uint8Array): Uint8Array => new Uint8Array(nodeCrypto.createHash('sha256').update(data).digest())

function isAllZero(b: Uint8Array): boolean {
  let acc = 0
  for (const x of b) acc |= x
  return acc === 0
}

function need(name: string, b: Uint8Array, n: number): void {
  if (!(b instanceof Uint8Array) || b.length !== n) throw new RangeError(`${name} must be ${n} bytes`)
}

function checkShared(s: Uint8Array): Uint8Array {
  // RFC 7748 §6.1: reject low-order points (all-zero output).
  if (isAllZero(s)) throw new RangeError('X25519 produced an all-zero shared secret (low-order point)')
  return s
}

/** Pure JS, always available. */
export const tweetnaclBackend: NaclBackend = {
  name: 'tweetnacl',
  secretbox: (msg, nonce, key) => nacl.secretbox(msg, nonce, key),
  secretboxInto: (out, msg, nonce, key) => {
    if (out.length !== msg.length + 16) throw new RangeError('secretbox output must be 16 bytes longer than the message')
    out.set(nacl.secretbox(msg, nonce, key))
  },
  secretboxOpen: (box, nonce, key) => nacl.secretbox.open(box, nonce, key),
  x25519: (sk, pk) => {
    need('X25519 secret key', sk, 32)
    need('X25519 public key', pk, 32)
    return checkShared(nacl.scalarMult(sk, pk))
  },
  x25519Base: (sk) => {
    need('X25519 secret key', sk, 32)
    return nacl.scalarMult.base(sk)
  },
  ed25519PublicKey: (seed) => {
    need('Ed25519 seed', seed, 32)
    return nacl.sign.keyPair.fromSeed(seed).publicKey
  },
  ed25519Sign: (msg, seed) => {
    need('Ed25519 seed', seed, 32)
    return nacl.sign.detached(msg, nacl.sign.keyPair.fromSeed(seed).secretKey)
  },
  ed25519Verify: (msg, sig, pk) => sig.length === 64 && pk.length === 32 && nacl.sign.detached.verify(msg, sig, pk),
  sha256: nodeSha256,
}

// DER prefixes that wrap raw 32-byte keys for node:crypto's KeyObject API.
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex')
const X25519_SPKI = Buffer.from('302a300506032b656e032100', 'hex')
const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex')
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex')

function privKey(prefix: Buffer, raw: Uint8Array): nodeCrypto.KeyObject {
  return nodeCrypto.createPrivateKey({ key: Buffer.concat([prefix, raw]), format: 'der', type: 'pkcs8' })
}
function pubKey(prefix: Buffer, raw: Uint8Array): nodeCrypto.KeyObject {
  return nodeCrypto.createPublicKey({ key: Buffer.concat([prefix, raw]), format: 'der', type: 'spki' })
}
function rawPublic(k: nodeCrypto.KeyObject): Uint8Array {
  const der = k.export({ format: 'der', type: 'spki' })
  return new Uint8Array(der.subarray(der.length - 32))
}

/** OpenSSL through node:crypto for X25519/Ed25519; secretbox stays on tweetnacl (OpenSSL has no XSalsa20). */
export const nodeBackend: NaclBackend = {
  name: 'node',
  secretbox: tweetnaclBackend.secretbox,
  secretboxInto: tweetnaclBackend.secretboxInto,
  secretboxOpen: tweetnaclBackend.secretboxOpen,
  sha256: nodeSha256,
  x25519: (sk, pk) => {
    need('X25519 secret key', sk, 32)
    need('X25519 public key', pk, 32)
    let out: Buffer
    try {
      out = nodeCrypto.diffieHellman({ privateKey: privKey(X25519_PKCS8, sk), publicKey: pubKey(X25519_SPKI, pk) })
    } catch (err) {
      // OpenSSL refuses low-order points itself.
      throw new RangeError('X25519 produced an all-zero shared secret (low-order point)', { cause: err })
    }
    return checkShared(new Uint8Array(out))
  },
  x25519Base: (sk) => {
    need('X25519 secret key', sk, 32)
    return rawPublic(nodeCrypto.createPublicKey(privKey(X25519_PKCS8, sk)))
  },
  ed25519PublicKey: (seed) => {
    need('Ed25519 seed', seed, 32)
    return rawPublic(nodeCrypto.createPublicKey(privKey(ED25519_PKCS8, seed)))
  },
  ed25519Sign: (msg, seed) => {
    need('Ed25519 seed', seed, 32)
    return new Uint8Array(nodeCrypto.sign(null, msg, privKey(ED25519_PKCS8, seed)))
  },
  ed25519Verify: (msg, sig, pk) => {
    if (sig.length !== 64 || pk.length !== 32) return false
    try {
      return nodeCrypto.verify(null, msg, pubKey(ED25519_SPKI, pk), sig)
    } catch {
      return false
    }
  },
}

interface Sodium {
  crypto_secretbox_easy(c: Uint8Array, m: Uint8Array, n: Uint8Array, k: Uint8Array): void
  crypto_secretbox_open_easy(m: Buffer, c: Uint8Array, n: Uint8Array, k: Uint8Array): boolean
  crypto_scalarmult(q: Buffer, n: Uint8Array, p: Uint8Array): void
  crypto_scalarmult_base(q: Buffer, n: Uint8Array): void
  crypto_sign_seed_keypair(pk: Buffer, sk: Buffer, seed: Uint8Array): void
  crypto_sign_detached(sig: Buffer, m: Uint8Array, sk: Uint8Array): void
  crypto_sign_verify_detached(sig: Uint8Array, m: Uint8Array, pk: Uint8Array): boolean
  crypto_hash_sha256(out: Buffer, m: Uint8Array): void
}

function makeSodiumBackend(s: Sodium): NaclBackend {
  // Ed25519 secret keys expanded from a seed, cached: the KDC signs with one key.
  const expanded = new Map<string, Buffer>()
  const expand = (seed: Uint8Array): Buffer => {
    need('Ed25519 seed', seed, 32)
    const id = Buffer.from(seed.buffer, seed.byteOffset, seed.length).toString('latin1')
    let sk = expanded.get(id)
    if (!sk) {
      const pk = Buffer.alloc(32)
      sk = Buffer.alloc(64)
      s.crypto_sign_seed_keypair(pk, sk, seed)
      if (expanded.size > 64) expanded.clear()
      expanded.set(id, sk)
    }
    return sk
  }
  return {
    name: 'sodium-native',
    sha256: (data) => {
      const out = Buffer.allocUnsafe(32)
      s.crypto_hash_sha256(out, data)
      return out
    },
    sha256Into: (out, data) => s.crypto_hash_sha256(out as Buffer, data),
    secretbox: (msg, nonce, key) => {
      const out = Buffer.allocUnsafe(msg.length + 16)
      s.crypto_secretbox_easy(out, msg, nonce, key)
      return out
    },
    secretboxInto: (out, msg, nonce, key) => s.crypto_secretbox_easy(out, msg, nonce, key),
    secretboxOpen: (box, nonce, key) => {
      if (box.length < 16 || nonce.length !== 24 || key.length !== 32) return null
      const out = Buffer.allocUnsafe(box.length - 16)
      return s.crypto_secretbox_open_easy(out, box, nonce, key) ? out : null
    },
    x25519: (sk, pk) => {
      if (pk.length !== 32 || sk.length !== 32) throw new RangeError('X25519 keys must be 32 bytes')
      const out = Buffer.alloc(32)
      try {
        s.crypto_scalarmult(out, sk, pk)
      } catch (err) {
        // libsodium refuses low-order points itself.
        throw new RangeError('X25519 produced an all-zero shared secret (low-order point)', { cause: err })
      }
      return checkShared(out)
    },
    x25519Base: (sk) => {
      need('X25519 secret key', sk, 32)
      const out = Buffer.alloc(32)
      s.crypto_scalarmult_base(out, sk)
      return out
    },
    ed25519PublicKey: (seed) => new Uint8Array(expand(seed).subarray(32)),
    ed25519Sign: (msg, seed) => {
      const sig = Buffer.alloc(64)
      s.crypto_sign_detached(sig, msg, expand(seed))
      return sig
    },
    ed25519Verify: (msg, sig, pk) => {
      if (sig.length !== 64 || pk.length !== 32) return false
      try {
        return s.crypto_sign_verify_detached(sig, msg, pk)
      } catch {
        return false
      }
    },
  }
}

function loadSodium(): NaclBackend | undefined {
  try {
    const require = createRequire(import.meta.url)
    return makeSodiumBackend(require('sodium-native') as Sodium)
  } catch {
    return undefined
  }
}

/** sodium-native when it loads, else null. */
export const sodiumBackend: NaclBackend | undefined = loadSodium()

/** Every backend available in this process (for tests and benchmarks). */
export const allBackends: readonly NaclBackend[] = [sodiumBackend, nodeBackend, tweetnaclBackend].filter(
  (b): b is NaclBackend => b !== undefined,
)

let active: NaclBackend = sodiumBackend ?? nodeBackend

/** The backend in use (sodium-native if it loads, else node:crypto + tweetnacl). */
export function backend(): NaclBackend {
  return active
}

/** Choose a backend by name (tests, benchmarks, or an operator who wants pure JS). */
export function useBackend(name: NaclBackend['name']): NaclBackend {
  const b = allBackends.find((x) => x.name === name)
  if (!b) throw new RangeError(`crypto backend ${name} is not available`)
  active = b
  return b
}
