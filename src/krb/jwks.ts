/** The realm's JWKS (PROTOCOL.md §15.3): its public Ed25519 signing keys as JWKs, their key ids, the discovery document. */
import { base64url, calculateJwkThumbprint } from 'jose'

/** The JWS algorithms a Tessera token or DPoP proof may use: Ed25519 only (RFC 8037 name and RFC 9864 name). */
export const TOKEN_ALGORITHMS: readonly string[] = Object.freeze(['EdDSA', 'Ed25519'])

/** An Ed25519 public key as a JWK of the realm's JWKS. Never a private part. */
export interface RealmJwk {
  kty: 'OKP'
  crv: 'Ed25519'
  /** The 32-byte public key, base64url. */
  x: string
  kid: string
  alg: 'EdDSA'
  use: 'sig'
}

/** A JWK Set (RFC 7517 §5). */
export interface RealmJwks {
  keys: RealmJwk[]
}

/** A signing key to list: its public half, and the kid to list it under (default: its thumbprint). */
export interface PublicSigningKey {
  publicKey: Uint8Array
  kid?: string
}

function checkPublicKey(k: Uint8Array): void {
  if (!(k instanceof Uint8Array) || k.length !== 32) throw new RangeError('an Ed25519 public key is 32 bytes')
}

/** The public JWK members of an Ed25519 key (what RFC 7638 hashes). */
export function ed25519PublicJwk(publicKey: Uint8Array): { kty: 'OKP'; crv: 'Ed25519'; x: string } {
  checkPublicKey(publicKey)
  return { kty: 'OKP', crv: 'Ed25519', x: base64url.encode(publicKey) }
}

/**
 * The key id of a realm signing key: the RFC 7638 SHA-256 thumbprint of its public JWK.
 * Derived from the key alone, so every KDC and every JWKS names a key the same way, and a
 * rotated key gets a new kid without a counter to keep.
 */
export function signingKeyId(publicKey: Uint8Array): Promise<string> {
  return calculateJwkThumbprint(ed25519PublicJwk(publicKey), 'sha256')
}

/**
 * The JWKS of a realm: every key given (the current one, and during a rotation the next or
 * the previous one), public parts only. Accepts a realm record or realm file (its
 * `signingKey`), a public key, or a list of keys.
 */
export async function realmJwks(
  keys: { signingKey: Uint8Array | { publicKey: Uint8Array } } | Uint8Array | PublicSigningKey | readonly (Uint8Array | PublicSigningKey)[],
  kid?: string,
): Promise<RealmJwks> {
  let list: PublicSigningKey[]
  if (keys instanceof Uint8Array) list = [{ publicKey: keys }]
  else if (Array.isArray(keys)) list = keys.map((k: Uint8Array | PublicSigningKey) => (k instanceof Uint8Array ? { publicKey: k } : k))
  else if ('signingKey' in keys) {
    // A realm record or file: its current signing key and, during an identity rotation
    // (PROTOCOL.md §3.7), the next and previous ones. Of a record's pairs only the public half is read.
    type K = Uint8Array | { publicKey: Uint8Array } | undefined
    const r = keys as { signingKey: K; nextSigningKey?: K; previousSigningKey?: K }
    list = [r.signingKey, r.nextSigningKey, r.previousSigningKey]
      .filter((k): k is Uint8Array | { publicKey: Uint8Array } => k !== undefined)
      .map((k) => ({ publicKey: k instanceof Uint8Array ? k : k.publicKey }))
  } else list = [keys as PublicSigningKey]
  if (kid !== undefined) {
    if (list.length !== 1) throw new TypeError('a kid can be given only with a single key')
    list[0] = { ...list[0]!, kid }
  }
  const out: RealmJwk[] = []
  for (const k of list) {
    const pub = ed25519PublicJwk(k.publicKey)
    out.push({ ...pub, kid: k.kid ?? (await signingKeyId(k.publicKey)), alg: 'EdDSA', use: 'sig' })
  }
  return { keys: out }
}

/** The minimal discovery document (`/.well-known/openid-configuration`) that points JWT middleware at a realm. */
export function discoveryDocument(issuer: string, jwksUri: string): Record<string, unknown> {
  if (typeof issuer !== 'string' || issuer.length === 0) throw new TypeError('issuer must be a non-empty string')
  // Throws on a malformed URL: a discovery document with an unusable jwks_uri helps nobody.
  const uri = new URL(jwksUri).href
  return {
    issuer,
    jwks_uri: uri,
    dpop_signing_alg_values_supported: [...TOKEN_ALGORITHMS],
  }
}
