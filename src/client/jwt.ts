/** JWT bridge, client side (PROTOCOL.md §15): a proof-of-possession key pair, and a token bound to it from the TGS. */
import { base64url, calculateJwkThumbprint, type CryptoKey, decodeJwt, exportJWK, generateKeyPair, type JWTPayload } from 'jose'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import type { Credentials, KdcClient, TicketOptions } from './kdc-client.js'

/** An Ed25519 key pair a token is bound to (cnf.jkt), with its public JWK and thumbprint. */
export interface DpopKeyPair {
  /** Signs the DPoP proofs. Not extractable unless made with `extractable: true`. */
  privateKey: CryptoKey
  publicKey: CryptoKey
  /** The public key as a JWK (the proof's `jwk` header). */
  publicJwk: { kty: 'OKP'; crv: 'Ed25519'; x: string }
  /** RFC 7638 thumbprint of publicJwk: the token's cnf.jkt. */
  jkt: string
}

/** Options of getServiceToken. */
export interface ServiceTokenOptions extends TicketOptions {
  /** Bind the token to this key pair instead of a new one. */
  keyPair?: DpopKeyPair
  /** Make a new key pair's private key exportable (for `kauth token`). @default false */
  extractable?: boolean
}

/** A token for a service, and the key pair it is bound to. */
export interface ServiceToken {
  /** The JWS, for `Authorization: DPoP <token>`. */
  token: string
  /** The service asked for. */
  service: string
  /** The token's claims, as the KDC issued them (read from its sealed reply). */
  claims: JWTPayload
  /** When the token expires (its `exp`), ms since the epoch. */
  expiresAt: number
  keyPair: DpopKeyPair
  /** The service ticket issued with the token. */
  ticket: Credentials
}

/** A fresh Ed25519 key pair for DPoP proofs (jose generateKeyPair, alg pinned to EdDSA). */
export async function generateDpopKeyPair(opts: { extractable?: boolean } = {}): Promise<DpopKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: opts.extractable ?? false })
  const jwk = await exportJWK(publicKey)
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'the runtime made no Ed25519 key')
  const publicJwk = { kty: 'OKP', crv: 'Ed25519', x: jwk.x } as const
  return { privateKey, publicKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk, 'sha256') }
}

/** Get a token for `service` with a TGT: see KdcClient.getServiceToken. */
export async function getServiceToken(client: KdcClient, tgt: Credentials, service: string, opts: ServiceTokenOptions = {}): Promise<ServiceToken> {
  const { keyPair: given, extractable, ...ticketOpts } = opts
  const keyPair = given ?? (await generateDpopKeyPair(extractable !== undefined ? { extractable } : {}))
  const raw = base64url.decode(keyPair.publicJwk.x)
  const { creds, token } = await client.requestServiceToken(tgt, service, raw, ticketOpts)
  let claims: JWTPayload
  try {
    claims = decodeJwt(token)
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the KDC sent a token that is not a JWT', { cause: err })
  }
  const cnf = claims.cnf as { jkt?: unknown } | undefined
  if (cnf?.jkt !== keyPair.jkt || typeof claims.exp !== 'number')
    throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the KDC sent a token not bound to the key sent')
  return { token, service, claims, expiresAt: claims.exp * 1000, keyPair, ticket: creds }
}
