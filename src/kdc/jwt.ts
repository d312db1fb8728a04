/** JWT bridge, KDC side (PROTOCOL.md §15.1): check a token request, sign the token with jose, seal it into TGS_REP.jwt. */
import { base64url, calculateJwkThumbprint, type CryptoKey, importJWK, type JWTPayload, SignJWT } from 'jose'
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { EncJwtPart, EncKdcRepPart, type TgsRep } from '../../proto/messages.js'
import { randomBytes } from '../crypto/index.js'
import type { PrincipalRecord } from '../db/types.js'
import { KrbProtocolError } from '../errors.js'
import { ed25519PublicJwk, signingKeyId } from '../krb/jwks.js'
import { openPart, sealPart } from '../krb/parts.js'
import type { KdcConfig } from './config.js'

/** The JWS header of every token: pinned algorithm and type (RFC 8037, RFC 9068). */
const TOKEN_ALG = 'EdDSA'
const TOKEN_TYP = 'at+jwt'

/** The issuer a KDC names in its tokens: `jwtIssuer`, else `tessera:REALM`. */
export function jwtIssuerOf(config: Pick<KdcConfig, 'jwtIssuer'>, realm: string): string {
  return config.jwtIssuer ?? `tessera:${realm}`
}

/** The audience of tokens for `service`: its `jwtAudience` attribute, else its principal name. */
export function jwtAudienceOf(service: PrincipalRecord, serviceName: string): string {
  return service.attributes.jwtAudience ?? serviceName
}

/** Inputs of {@link serviceTokenClaims}: everything a token says, decided by the caller. */
export interface ServiceTokenInput {
  issuer: string
  /** The client principal, "name@REALM". */
  client: string
  audience: string
  /** KDC time, ms. */
  now: number
  /** The service ticket's end, ms: the token never outlives it. */
  endtime: number
  /** Longest token life, ms. */
  maxLifeMs: number
  /** The service ticket's TicketFlag bits. */
  flags: number
  /** RFC 7638 thumbprint of the client's key. */
  jkt: string
  /** Unique token id. */
  jti: string
}

/** The claims of a token (PROTOCOL.md §15.1), in the order they are serialized. Pure. */
export function serviceTokenClaims(o: ServiceTokenInput): JWTPayload {
  const iat = Math.floor(o.now / 1000)
  return {
    iss: o.issuer,
    sub: o.client,
    aud: o.audience,
    client_id: o.client,
    iat,
    nbf: iat,
    exp: Math.floor(Math.min(o.endtime, o.now + o.maxLifeMs) / 1000),
    jti: o.jti,
    tkt_flags: o.flags,
    cnf: { jkt: o.jkt },
  }
}

/** A realm signing key as jose uses it, with its kid. */
interface Signer {
  key: CryptoKey
  kid: string
}

// One import per key object: a rotated key is a new object, so it gets its own entry, and
// the imported private key is not extractable.
const signers = new WeakMap<Uint8Array, Promise<Signer>>()

function signerOf(pair: { secretKey: Uint8Array; publicKey: Uint8Array }): Promise<Signer> {
  let s = signers.get(pair.secretKey)
  if (s === undefined) {
    const jwk = { ...ed25519PublicJwk(pair.publicKey), d: base64url.encode(pair.secretKey) }
    s = Promise.all([importJWK(jwk, TOKEN_ALG), signingKeyId(pair.publicKey)]).then(([key, kid]) => ({ key: key as CryptoKey, kid }))
    signers.set(pair.secretKey, s)
  }
  return s
}

/** Sign `claims` with a realm signing key (secret = 32-byte seed): a JWS with alg EdDSA, typ at+jwt, kid = the key's thumbprint. */
export async function signServiceToken(pair: { secretKey: Uint8Array; publicKey: Uint8Array }, claims: JWTPayload): Promise<string> {
  const { key, kid } = await signerOf(pair)
  return new SignJWT(claims).setProtectedHeader({ alg: TOKEN_ALG, typ: TOKEN_TYP, kid }).sign(key)
}

/** The RFC 7638 thumbprint of a client's raw Ed25519 public key (the token's cnf.jkt). */
export function clientKeyThumbprint(jwtKey: Uint8Array): Promise<string> {
  return calculateJwkThumbprint(ed25519PublicJwk(jwtKey), 'sha256')
}

/** Refuse a token request the service does not allow (PROTOCOL.md §8.2 table). */
export function checkJwtRequest(service: PrincipalRecord, renew: boolean, serviceName: string): void {
  if (renew) throw new KrbProtocolError(ErrorCode.KDC_ERR_BADOPTION, 'BADOPTION', { message: 'a JWT is issued with a new service ticket, not with a renewal' })
  if (service.attributes.allowJwt !== true)
    throw new KrbProtocolError(ErrorCode.KDC_ERR_POLICY, 'JWT_NOT_ALLOWED', { message: `${serviceName} does not accept JWTs (its allowJwt attribute is off)` })
}

/** What the TGS knows of a request for a token. */
export interface JwtRequest {
  config: Pick<KdcConfig, 'jwtIssuer' | 'jwtMaxLifeMs'>
  realm: { realm: string; signingKey: { secretKey: Uint8Array; publicKey: Uint8Array } }
  now: number
  /** Session key of the presented ticket (seals the reply). */
  replyKey: Uint8Array
  jwtKey: Uint8Array
  clientName: string
  service: PrincipalRecord
  serviceName: string
}

/**
 * Add the token to an issued TGS_REP: read the new ticket's end and flags back from the
 * reply's sealed part (so the ticket path stays as it is), sign, seal under usage TGS_REP_JWT.
 */
export async function addServiceToken(r: JwtRequest, rep: TgsRep): Promise<TgsRep> {
  const part = openPart(r.replyKey, KeyUsage.TGS_REP_ENCPART_SESSKEY, EncKdcRepPart, rep.enc)
  const claims = serviceTokenClaims({
    issuer: jwtIssuerOf(r.config, r.realm.realm),
    client: r.clientName,
    audience: jwtAudienceOf(r.service, r.serviceName),
    now: r.now,
    endtime: part.endtime,
    maxLifeMs: r.config.jwtMaxLifeMs,
    flags: part.flags,
    jkt: await clientKeyThumbprint(r.jwtKey),
    jti: base64url.encode(randomBytes(16)),
  })
  part.key.fill(0)
  const token = await signServiceToken(r.realm.signingKey, claims)
  return { ...rep, jwt: sealPart(r.replyKey, KeyUsage.TGS_REP_JWT, EncJwtPart, { token }) }
}
