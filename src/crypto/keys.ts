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

// Scratch of the libsodium HMAC: [ipad block | message] and [opad block | inner hash].
// Wiped after every use (they hold key pads and, in HKDF, secret input).
let hmacInner = Buffer.alloc(64 + 256)
const hmacOuter = Buffer.alloc(96)

/**
 * HMAC-SHA256 of `data` under `key` written into `out` (32 bytes), over libsodium's SHA-256:
 * two hashes into preallocated scratch, no allocation for short messages.
 */
function sodiumHmacInto(sha256Into: (out: Uint8Array, data: Uint8Array) => void, out: Uint8Array, key: Uint8Array, data: Uint8Array): void {
  const k = key.length > 64 ? backend().sha256(key) : key
  const n = 64 + data.length
  if (hmacInner.length < n) hmacInner = Buffer.alloc(n)
  const inner = hmacInner
  const outer = hmacOuter
  const kl = k.length
  for (let i = 0; i < 64; i++) {
    const x = i < kl ? k[i]! : 0
    inner[i] = x ^ IPAD
    outer[i] = x ^ OPAD
  }
  inner.set(data, 64)
  sha256Into(outer.subarray(64, 96), inner.subarray(0, n))
  inner.fill(0, 0, n)
  sha256Into(out, outer)
  outer.fill(0)
}

/**
 * HMAC-SHA256 (RFC 2104). With libsodium, two hashes into scratch memory cost well under a
 * microsecond, where node's createHmac builds a key object per call.
 */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  const into = backend().sha256Into
  if (!into) return new Uint8Array(createHmac('sha256', key).update(data).digest())
  const mac = new Uint8Array(32)
  sodiumHmacInto(into, mac, key, data)
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

// Scratch of HKDF-Expand: T(i-1) || info || i, and the PRK.
let hkdfMsg = Buffer.alloc(32 + 64 + 1)
const hkdfPrk = Buffer.alloc(32)
const ZERO_SALT = new Uint8Array(32)

/** HKDF-SHA256 (RFC 5869). */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): Uint8Array {
  const into = backend().sha256Into
  if (!into) return new Uint8Array(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'utf8'), length))
  if (!Number.isInteger(length) || length < 0 || length > 255 * 32) throw new RangeError('HKDF output too long')
  // RFC 5869 §2.2: no salt = HashLen zero bytes.
  const prk = hkdfPrk
  sodiumHmacInto(into, prk, salt.length > 0 ? salt : ZERO_SALT, ikm)
  const infoLen = Buffer.byteLength(info, 'utf8')
  if (hkdfMsg.length < 32 + infoLen + 1) hkdfMsg = Buffer.alloc(32 + infoLen + 1)
  const msg = hkdfMsg
  // T(1) = HMAC(PRK, info || 0x01); T(i) = HMAC(PRK, T(i-1) || info || i), computed in place
  // at msg[0:32] so that T(i-1) is already where the next message wants it.
  msg.write(info, 32, 'utf8')
  const okm = new Uint8Array(length)
  for (let i = 1, pos = 0; pos < length; i++) {
    const first = i === 1
    const body = first ? msg.subarray(32, 32 + infoLen + 1) : msg.subarray(0, 32 + infoLen + 1)
    msg[32 + infoLen] = i
    const t = msg.subarray(0, 32)
    sodiumHmacInto(into, t, prk, body)
    const take = Math.min(32, length - pos)
    okm.set(take === 32 ? t : t.subarray(0, take), pos)
    pos += 32
  }
  prk.fill(0)
  msg.fill(0, 0, 32 + infoLen + 1)
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
