/** Key derivation: password -> key (scrypt), one subkey per KeyUsage, HKDF, hashes. */
import { createHmac, hkdfSync, scrypt, timingSafeEqual } from 'node:crypto'
import { backend } from './backend.js'

/** Parameters of the password KDF, stored with every password-derived key so they can be raised later. */
export interface KdfParams {
  alg: 'scrypt'
  /** CPU/memory cost, a power of two. */
  N: number
  /** Block size. */
  r: number
  /** Parallelism. */
  p: number
}

/** Default password KDF: scrypt N=2^15, r=8, p=1 (32 MiB, tens of ms). */
export const DEFAULT_KDF_PARAMS: Readonly<KdfParams> = Object.freeze({ alg: 'scrypt', N: 32768, r: 8, p: 1 })

/** Bounds accepted for KDF parameters, from the wire or from the database. */
export const KDF_LIMITS = { minN: 1024, maxN: 1 << 20, maxR: 32, maxP: 16 } as const

/** Throws RangeError unless `k` is an acceptable scrypt parameter set. */
export function checkKdfParams(k: KdfParams): void {
  const powerOfTwo = Number.isInteger(k.N) && k.N > 1 && (k.N & (k.N - 1)) === 0
  if (k.alg !== 'scrypt' || !powerOfTwo || k.N < KDF_LIMITS.minN || k.N > KDF_LIMITS.maxN)
    throw new RangeError('KDF parameters out of range (N)')
  if (!Number.isInteger(k.r) || k.r < 1 || k.r > KDF_LIMITS.maxR) throw new RangeError('KDF parameters out of range (r)')
  if (!Number.isInteger(k.p) || k.p < 1 || k.p > KDF_LIMITS.maxP) throw new RangeError('KDF parameters out of range (p)')
}

/**
 * The salt for a principal's password key: UTF-8 of realm followed by the principal's
 * canonical name (`name/instance`), as Kerberos does (RFC 3961 §3, default salt).
 */
export function defaultSalt(realm: string, principal: string): string {
  return realm + principal
}

/**
 * Password -> 32-byte key with scrypt. The password is NFC-normalised first so the same
 * password typed on different systems gives the same key.
 */
export async function passwordToKey(password: string, salt: string, params: KdfParams = DEFAULT_KDF_PARAMS): Promise<Uint8Array> {
  checkKdfParams(params)
  const maxmem = 128 * params.N * params.r * params.p + 1024 * 1024 * 2
  return new Promise((resolve, reject) => {
    scrypt(
      Buffer.from(password.normalize('NFC'), 'utf8'),
      Buffer.from(salt, 'utf8'),
      32,
      { N: params.N, r: params.r, p: params.p, maxmem },
      (err, key) => (err ? reject(err) : resolve(new Uint8Array(key))),
    )
  })
}

const USAGE_LABEL = Buffer.from('tessera/usage/v1', 'ascii')

// Subkeys of long-lived keys (principal keys held by the database cache, keytab entries)
// are derived once per key object. Keyed by identity, so an entry dies with its key; a
// key's bytes must not change after its first use (wipe only when done with it).
const subkeys = new WeakMap<Uint8Array, Map<number, Uint8Array>>()

const IPAD = 0x36
const OPAD = 0x5c

/**
 * HMAC-SHA256 (RFC 2104) over the backend's SHA-256: with libsodium two hashes cost well
 * under a microsecond, where node's createHmac builds a key object per call.
 */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  const b = backend()
  if (b.name !== 'sodium-native') return new Uint8Array(createHmac('sha256', key).update(data).digest())
  const k = key.length > 64 ? b.sha256(key) : key
  const inner = Buffer.allocUnsafe(64 + data.length)
  const outer = Buffer.allocUnsafe(96)
  for (let i = 0; i < 64; i++) {
    const x = i < k.length ? k[i]! : 0
    inner[i] = x ^ IPAD
    outer[i] = x ^ OPAD
  }
  inner.set(data, 64)
  outer.set(b.sha256(inner), 64)
  inner.fill(0, 0, 64)
  const mac = b.sha256(outer)
  outer.fill(0, 0, 64)
  return mac
}

function deriveUsageKey(key: Uint8Array, usage: number): Uint8Array {
  const msg = Buffer.allocUnsafe(USAGE_LABEL.length + 4)
  USAGE_LABEL.copy(msg, 0)
  msg.writeUInt32BE(usage >>> 0, USAGE_LABEL.length)
  return hmacSha256(key, msg)
}

/** The subkey for one key usage: HMAC-SHA256(key, "tessera/usage/v1" || uint32be(usage)). */
export function usageKey(key: Uint8Array, usage: number): Uint8Array {
  let m = subkeys.get(key)
  let k = m?.get(usage)
  if (k) return k
  k = deriveUsageKey(key, usage)
  if (!m) {
    m = new Map()
    subkeys.set(key, m)
  }
  m.set(usage, k)
  return k
}

/** SHA-256 of the concatenation of parts. */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return backend().sha256(parts[0]!)
  return backend().sha256(Buffer.concat(parts))
}

/** HKDF-SHA256 (RFC 5869). */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): Uint8Array {
  if (backend().name !== 'sodium-native') return new Uint8Array(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'utf8'), length))
  if (length > 255 * 32) throw new RangeError('HKDF output too long')
  // RFC 5869 §2.2: no salt = HashLen zero bytes.
  const prk = hmacSha256(salt.length > 0 ? salt : new Uint8Array(32), ikm)
  const infoBytes = Buffer.from(info, 'utf8')
  const okm = new Uint8Array(length)
  let t: Uint8Array = new Uint8Array(0)
  for (let i = 1, pos = 0; pos < length; i++) {
    const msg = Buffer.allocUnsafe(t.length + infoBytes.length + 1)
    msg.set(t, 0)
    infoBytes.copy(msg, t.length)
    msg[msg.length - 1] = i
    t = hmacSha256(prk, msg)
    okm.set(t.subarray(0, Math.min(32, length - pos)), pos)
    pos += 32
  }
  prk.fill(0)
  t.fill(0)
  return okm
}

/** Constant-time equality of two byte strings (false on different lengths, without early exit on content). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  return timingSafeEqual(a, b)
}

/** Overwrite key material in place (best effort: JS may hold copies). */
export function wipe(...keys: (Uint8Array | undefined)[]): void {
  for (const k of keys) k?.fill(0)
}
