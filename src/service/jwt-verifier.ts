/**
 * JWT bridge, service side (PROTOCOL.md §15.2): verify a Tessera token and its DPoP proof
 * (RFC 9449) with jose, against the realm's JWKS; a middleware for Node's http server.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import {
  base64url,
  calculateJwkThumbprint,
  createLocalJWKSet,
  createRemoteJWKSet,
  EmbeddedJWK,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose'
import { constantTimeEqual, hmacSha256, randomBytes, sha256 } from '../crypto/index.js'
import { TokenError, type TokenErrorName } from '../errors.js'
import { type RealmJwks, realmJwks, TOKEN_ALGORITHMS } from '../krb/jwks.js'

/** Where the realm's public signing keys come from. */
export interface TokenVerifierOptions {
  /**
   * The audience this service accepts: its principal name (`HTTP/api.example.com@REALM`), or
   * the URL set as its `jwtAudience` attribute. A token for another audience is refused.
   */
  audience: string | string[]
  /** The realm file: its `signingKey` (unless jwks or jwksUri is given), its name (default issuer) and skew. */
  realm?: { realm: string; signingKey: Uint8Array; nextSigningKey?: Uint8Array; maxClockSkewMs: number }
  /** A JWKS held locally (e.g. `kadmin jwks` output, or both keys during a rotation). */
  jwks?: RealmJwks
  /** The realm's JWKS URL (`/.well-known/jwks.json` of the KDC's operations listener), fetched with jose createRemoteJWKSet. */
  jwksUri?: string | URL
  /** How long fetched JWKS keys are used before a refetch, ms. @default 600000 */
  jwksCacheMaxAgeMs?: number
  /** After a fetch, an unknown `kid` triggers another only after this long, ms. @default 30000 */
  jwksCooldownMs?: number
  /** The issuer the KDC names (its `jwtIssuer`). @default "tessera:REALM" of `realm` */
  issuer?: string
  /** Clock skew tolerated on exp/nbf, ms. @default realm.maxClockSkewMs, else 300000 */
  maxClockSkewMs?: number
  /** A proof's `iat` may differ from the service's clock by at most this, ms. @default 60000 */
  proofWindowMs?: number
  /** Most proof ids remembered (replay cache); when full, new proofs are refused (503) rather than a replay let through. @default 100000 */
  replayCacheMaxEntries?: number
  /** Require server nonces in proofs (RFC 9449 §9): valid for one period and the next. @default false */
  nonces?: boolean | { periodMs?: number }
  /** Clock, ms. @default Date.now */
  now?: () => number
}

/** A request as the verifier sees it. */
export interface TokenRequest {
  method: string
  /** The absolute URL the client called (scheme, host, path; query ignored). */
  url: string | URL
  /** The Authorization header. */
  authorization?: string | undefined
  /** The DPoP header(s). */
  dpop?: string | string[] | undefined
}

/** The claims of a Tessera token. */
export interface ServiceTokenClaims extends JWTPayload {
  sub: string
  cnf: { jkt: string }
  tkt_flags?: number
  client_id?: string
}

/** A request accepted: who made it, and what its token says. */
export interface VerifiedToken {
  /** The client principal, "name@REALM" (the token's `sub`). */
  principal: string
  claims: ServiceTokenClaims
  /** The thumbprint of the key that signed the proof (= cnf.jkt). */
  jkt: string
}

const refuse = (error: TokenErrorName, reason: string, message: string, cause?: unknown): never => {
  throw new TokenError(error, reason, message, undefined, cause === undefined ? undefined : { cause })
}

/** The token check failures by jose error code. */
function tokenRefusal(err: unknown): never {
  const code = (err as { code?: string }).code
  const claim = (err as { claim?: string }).claim
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      refuse('invalid_token', 'TOKEN_EXPIRED', 'the token has expired', err)
      break
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'aud') refuse('invalid_token', 'TOKEN_AUDIENCE', 'the token is for another service', err)
      if (claim === 'iss') refuse('invalid_token', 'TOKEN_ISSUER', 'the token comes from another issuer', err)
      if (claim === 'nbf') refuse('invalid_token', 'TOKEN_NOT_YET_VALID', 'the token is not yet valid', err)
      if (claim === 'typ') refuse('invalid_token', 'TOKEN_TYP', 'the token is not an access token (typ at+jwt)', err)
      refuse('invalid_token', 'TOKEN_CLAIMS', `the token's ${claim ?? ''} claim is missing or invalid`, err)
      break
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      refuse('invalid_token', 'TOKEN_SIGNATURE', 'the token signature does not verify', err)
      break
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      refuse('invalid_token', 'TOKEN_UNKNOWN_KEY', 'the token is signed by a key the realm does not list', err)
      break
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      refuse('invalid_token', 'TOKEN_ALG', 'the token algorithm is not EdDSA', err)
      break
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      throw new TokenError(undefined, 'JWKS_UNAVAILABLE', 'the realm keys cannot be fetched', 503, { cause: err })
  }
  if (err instanceof TypeError || (err as { name?: string }).name === 'TypeError' || code === undefined)
    throw new TokenError(undefined, 'JWKS_UNAVAILABLE', 'the realm keys cannot be fetched', 503, { cause: err })
  return refuse('invalid_token', 'TOKEN_MALFORMED', 'the token is not a valid JWS', err)
}

/** Proof ids seen, each kept until its proof could no longer pass the iat check. Bounded; full = refuse. */
class ProofReplayCache {
  private readonly seen = new Map<string, number>()
  constructor(private readonly max: number) {}

  /** 'ok' (and remembered), 'replay', or 'full'. */
  check(id: string, keepUntil: number, now: number): 'ok' | 'replay' | 'full' {
    const until = this.seen.get(id)
    if (until !== undefined && until > now) return 'replay'
    if (this.seen.size >= this.max) {
      for (const [k, u] of this.seen) if (u <= now) this.seen.delete(k)
      if (this.seen.size >= this.max) return 'full'
    }
    this.seen.set(id, keepUntil)
    return 'ok'
  }
}

/** Server nonces (RFC 9449 §9) without state: HMAC(secret, period), valid in its period and the next. */
class NonceSource {
  private readonly secret = randomBytes(32)
  constructor(private readonly periodMs: number) {}

  private make(period: number): string {
    const p = new Uint8Array(8)
    new DataView(p.buffer).setBigUint64(0, BigInt(period))
    const mac = hmacSha256(this.secret, p).subarray(0, 16)
    return base64url.encode(Buffer.concat([p, mac]))
  }

  current(now: number): string {
    return this.make(Math.floor(now / this.periodMs))
  }

  valid(nonce: unknown, now: number): boolean {
    if (typeof nonce !== 'string' || nonce.length !== 32) return false
    let raw: Uint8Array
    try {
      raw = base64url.decode(nonce)
    } catch {
      return false
    }
    if (raw.length !== 24) return false
    const period = Number(new DataView(raw.buffer, raw.byteOffset, 8).getBigUint64(0))
    const cur = Math.floor(now / this.periodMs)
    if (period !== cur && period !== cur - 1) return false
    return constantTimeEqual(new TextEncoder().encode(this.make(period)), new TextEncoder().encode(nonce))
  }
}

const normUrl = (u: string | URL): string => {
  const x = new URL(u)
  x.search = ''
  x.hash = ''
  return x.href
}

/** Verifies Tessera tokens and their DPoP proofs for one service. Holds the JWKS cache, the replay cache and the nonces. */
export class ServiceTokenVerifier {
  private readonly audience: string[]
  private readonly issuer: string
  private readonly skewMs: number
  private readonly windowMs: number
  private readonly now: () => number
  private readonly replay: ProofReplayCache
  private readonly nonces: NonceSource | undefined
  private readonly keys: JWTVerifyGetKey | Promise<JWTVerifyGetKey>

  constructor(o: TokenVerifierOptions) {
    const aud = Array.isArray(o.audience) ? o.audience : [o.audience]
    if (aud.length === 0 || aud.some((a) => typeof a !== 'string' || a.length === 0)) throw new TypeError('audience must name this service')
    this.audience = [...aud]
    const issuer = o.issuer ?? (o.realm ? `tessera:${o.realm.realm}` : undefined)
    if (issuer === undefined) throw new TypeError('issuer is required without a realm file')
    this.issuer = issuer
    this.skewMs = o.maxClockSkewMs ?? o.realm?.maxClockSkewMs ?? 300_000
    this.windowMs = o.proofWindowMs ?? 60_000
    this.now = o.now ?? Date.now
    this.replay = new ProofReplayCache(o.replayCacheMaxEntries ?? 100_000)
    if (o.nonces) this.nonces = new NonceSource((typeof o.nonces === 'object' ? o.nonces.periodMs : undefined) ?? 300_000)
    if (o.jwksUri !== undefined)
      this.keys = createRemoteJWKSet(new URL(o.jwksUri), {
        cacheMaxAge: o.jwksCacheMaxAgeMs ?? 600_000,
        cooldownDuration: o.jwksCooldownMs ?? 30_000,
      })
    else if (o.jwks !== undefined) this.keys = createLocalJWKSet(o.jwks as unknown as { keys: JWK[] })
    // During an identity rotation the realm file also names the next signing key: tokens of either verify.
    else if (o.realm !== undefined) this.keys = realmJwks(o.realm).then((j) => createLocalJWKSet(j as unknown as { keys: JWK[] }))
    else throw new TypeError('give the realm file, a jwks or a jwksUri')
  }

  /** The nonce to send as DPoP-Nonce now, when this verifier uses nonces. */
  currentNonce(): string | undefined {
    return this.nonces?.current(this.now())
  }

  /** Verify a request's token and proof; a TokenError says why not. */
  async verify(req: TokenRequest): Promise<VerifiedToken> {
    const now = this.now()
    const { token, proof } = credentialsOf(req)
    const claims = await this.verifyToken(token, now)
    const jkt = await this.verifyProof(proof, token, claims, req, now)
    return { principal: claims.sub, claims, jkt }
  }

  private async verifyToken(token: string, now: number): Promise<ServiceTokenClaims> {
    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, await this.keys, {
        algorithms: [...TOKEN_ALGORITHMS],
        typ: 'at+jwt',
        issuer: this.issuer,
        audience: this.audience,
        clockTolerance: Math.ceil(this.skewMs / 1000),
        currentDate: new Date(now),
        requiredClaims: ['exp', 'iat', 'sub', 'jti'],
      }))
    } catch (err) {
      tokenRefusal(err)
    }
    const cnf = payload!.cnf as { jkt?: unknown } | undefined
    if (typeof cnf?.jkt !== 'string' || cnf.jkt.length === 0) refuse('invalid_token', 'TOKEN_NOT_BOUND', 'the token is not bound to a key (no cnf.jkt)')
    return payload! as ServiceTokenClaims
  }

  private async verifyProof(proof: string, token: string, claims: ServiceTokenClaims, req: TokenRequest, now: number): Promise<string> {
    let payload: JWTPayload
    let jwk: JWK
    try {
      const r = await jwtVerify(proof, EmbeddedJWK, { algorithms: [...TOKEN_ALGORITHMS], typ: 'dpop+jwt', currentDate: new Date(now) })
      payload = r.payload
      jwk = r.protectedHeader.jwk!
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'ERR_JOSE_ALG_NOT_ALLOWED' || code === 'ERR_JOSE_NOT_SUPPORTED') refuse('invalid_dpop_proof', 'PROOF_ALG', 'the proof algorithm is not EdDSA', err)
      if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') refuse('invalid_dpop_proof', 'PROOF_SIGNATURE', 'the proof signature does not verify under its jwk', err)
      if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && (err as { claim?: string }).claim === 'typ')
        refuse('invalid_dpop_proof', 'PROOF_TYP', 'the proof is not a DPoP proof (typ dpop+jwt)', err)
      refuse('invalid_dpop_proof', 'PROOF_MALFORMED', 'the proof is not a valid DPoP proof', err)
    }
    if ('d' in jwk!) refuse('invalid_dpop_proof', 'PROOF_JWK', 'the proof carries a private key')
    const jkt = await calculateJwkThumbprint(jwk!, 'sha256')
    if (!constantTimeEqual(Buffer.from(jkt), Buffer.from(claims.cnf.jkt)))
      refuse('invalid_dpop_proof', 'PROOF_KEY_MISMATCH', 'the proof is signed by another key than the token is bound to')
    const p = payload!
    if (typeof p.htm !== 'string' || p.htm !== req.method.toUpperCase()) refuse('invalid_dpop_proof', 'PROOF_HTM', 'the proof is for another method')
    let htu: string
    try {
      htu = normUrl(p.htu as string)
    } catch {
      return refuse('invalid_dpop_proof', 'PROOF_HTU', 'the proof names no valid URL')
    }
    if (htu !== normUrl(req.url)) refuse('invalid_dpop_proof', 'PROOF_HTU', 'the proof is for another URL')
    const ath = base64url.encode(sha256(new TextEncoder().encode(token)))
    if (typeof p.ath !== 'string' || p.ath !== ath) refuse('invalid_dpop_proof', 'PROOF_ATH', 'the proof is for another token (ath)')
    if (typeof p.iat !== 'number' || Math.abs(now - p.iat * 1000) > this.windowMs) refuse('invalid_dpop_proof', 'PROOF_IAT', 'the proof is too old or dated ahead')
    if (typeof p.jti !== 'string' || p.jti.length === 0 || p.jti.length > 256) refuse('invalid_dpop_proof', 'PROOF_MALFORMED', 'the proof has no valid jti')
    if (this.nonces !== undefined && !this.nonces.valid(p.nonce, now))
      throw new TokenError('use_dpop_nonce', 'PROOF_NONCE', 'the proof needs the server nonce', 401, { nonce: this.nonces.current(now) })
    // Only proofs that passed every other check take a place: junk cannot fill the cache.
    const verdict = this.replay.check(`${jkt}.${p.jti}`, p.iat! * 1000 + this.windowMs + 1000, now)
    if (verdict === 'replay') refuse('invalid_dpop_proof', 'PROOF_REPLAY', 'the proof was used before')
    if (verdict === 'full') throw new TokenError(undefined, 'REPLAY_FULL', 'the service is busy; retry later', 503)
    return jkt
  }
}

/** Split the Authorization and DPoP headers into the token and the proof. */
function credentialsOf(req: TokenRequest): { token: string; proof: string } {
  const auth = req.authorization
  if (auth === undefined || auth.length === 0) throw new TokenError(undefined, 'NO_CREDENTIALS', 'authentication required', 401)
  const m = /^(\S+) +(\S+)$/.exec(auth.trim())
  if (!m) refuse('invalid_request', 'BAD_AUTHORIZATION', 'the Authorization header is malformed')
  // RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused.
  if (m![1]!.toLowerCase() !== 'dpop') refuse('invalid_token', 'NOT_DPOP', 'the token must be sent with the DPoP scheme and a proof')
  const dpop = Array.isArray(req.dpop) ? req.dpop : req.dpop === undefined ? [] : [req.dpop]
  if (dpop.length > 1 || (dpop.length === 1 && dpop[0]!.includes(','))) refuse('invalid_request', 'PROOF_MULTIPLE', 'more than one DPoP header')
  if (dpop.length === 0 || dpop[0]!.length === 0) refuse('invalid_dpop_proof', 'PROOF_MISSING', 'the request carries no DPoP proof')
  return { token: m![2]!, proof: dpop[0]!.trim() }
}

/** Verify a request's Tessera token and DPoP proof (the function form of {@link ServiceTokenVerifier.verify}). */
export function verifyServiceToken(verifier: ServiceTokenVerifier, req: TokenRequest): Promise<VerifiedToken> {
  return verifier.verify(req)
}

/** Options of tokenMiddleware. */
export interface TokenMiddlewareOptions {
  /**
   * The origin clients call this service at (`https://api.example.com`), the base of the
   * `htu` proofs must name. Set it behind a proxy. @default http(s)://Host of the request
   */
  origin?: string
}

/** Node http middleware: `(req, res, next)` for Express-style stacks, `authenticate` for plain servers. */
export interface TokenMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void
  /** Verify; on failure answer the request (401/400/503 with WWW-Authenticate) and resolve undefined. */
  authenticate(req: IncomingMessage, res: ServerResponse): Promise<VerifiedToken | undefined>
}

const accepted = new WeakMap<IncomingMessage, VerifiedToken>()

/** What the middleware accepted for `req` (also set as `req.tessera`). */
export function tokenOf(req: IncomingMessage): VerifiedToken | undefined {
  return accepted.get(req)
}

/** The request as a TokenRequest: method, absolute URL, headers. */
export function tokenRequestOf(req: IncomingMessage, origin?: string): TokenRequest {
  const base = origin ?? `${(req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'}://${req.headers.host ?? 'localhost'}`
  return { method: req.method ?? 'GET', url: new URL(req.url ?? '/', base), authorization: req.headers.authorization, dpop: req.headers.dpop }
}

/** A middleware for Node's http server (usable from Express and Fastify without depending on them). */
export function tokenMiddleware(verifier: ServiceTokenVerifier, opts: TokenMiddlewareOptions = {}): TokenMiddleware {
  const authenticate = async (req: IncomingMessage, res: ServerResponse): Promise<VerifiedToken | undefined> => {
    const nonce = verifier.currentNonce()
    try {
      const v = await verifier.verify(tokenRequestOf(req, opts.origin))
      accepted.set(req, v)
      ;(req as IncomingMessage & { tessera?: VerifiedToken }).tessera = v
      if (nonce !== undefined) res.setHeader('DPoP-Nonce', nonce)
      return v
    } catch (err) {
      if (!(err instanceof TokenError)) throw err
      res.statusCode = err.status
      res.setHeader('WWW-Authenticate', err.wwwAuthenticate)
      if (err.nonce !== undefined || nonce !== undefined) res.setHeader('DPoP-Nonce', err.nonce ?? nonce!)
      res.setHeader('Cache-Control', 'no-store')
      res.setHeader('Content-Type', 'application/json')
      res.end(JSON.stringify(err.error ? { error: err.error, error_description: err.message } : { error: 'unauthorized' }))
      return undefined
    }
  }
  const mw = ((req, res, next) => {
    authenticate(req, res).then((v) => {
      if (v !== undefined) next()
    }, next)
  }) as TokenMiddleware
  mw.authenticate = authenticate
  return mw
}
