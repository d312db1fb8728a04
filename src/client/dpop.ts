/**
 * DPoP for HTTP requests (RFC 9449, PROTOCOL.md §15.2): a proof signed per request with the
 * token's key, `Authorization: DPoP` and `DPoP` headers for fetch and http.request, the
 * token refreshed before it expires, one retry on a `use_dpop_nonce` challenge.
 */
import http from 'node:http'
import https from 'node:https'
import { base64url, SignJWT } from 'jose'
import { randomBytes, sha256 } from '../crypto/index.js'
import type { DpopKeyPair, ServiceToken } from './jwt.js'
import { generateDpopKeyPair } from './jwt.js'
import type { Credentials, KdcClient, TicketOptions } from './kdc-client.js'

/** The request URL as a proof names it (`htu`): without query and fragment (RFC 9449 §4.2). */
export function htuOf(url: string | URL): string {
  const u = new URL(url)
  u.search = ''
  u.hash = ''
  return u.href
}

/** base64url(SHA-256(token)): the proof's `ath` (RFC 9449 §4.2). */
export function accessTokenHash(token: string): string {
  return base64url.encode(sha256(new TextEncoder().encode(token)))
}

/** What one proof says. */
export interface DpopProofInput {
  method: string
  url: string | URL
  /** The access token it accompanies (sets `ath`). */
  token?: string
  /** The server's last DPoP-Nonce. */
  nonce?: string
  /** Time, ms. @default Date.now() */
  now?: number
}

/** Sign one DPoP proof: typ dpop+jwt, alg EdDSA, the public jwk; htm, htu, iat, jti, ath, nonce. */
export function createDpopProof(keyPair: DpopKeyPair, p: DpopProofInput): Promise<string> {
  const claims: Record<string, string | number> = {
    htm: p.method.toUpperCase(),
    htu: htuOf(p.url),
    iat: Math.floor((p.now ?? Date.now()) / 1000),
    jti: base64url.encode(randomBytes(16)),
  }
  if (p.token !== undefined) claims.ath = accessTokenHash(p.token)
  if (p.nonce !== undefined) claims.nonce = p.nonce
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'dpop+jwt', jwk: { ...keyPair.publicJwk } }).sign(keyPair.privateKey)
}

/** Options of a DpopSession: where its tokens come from, and when to refresh them. */
export type DpopSessionOptions = (
  | {
      client: KdcClient
      /** The TGT, or a function giving a valid one (e.g. renewing it). */
      tgt: Credentials | (() => Promise<Credentials>)
      service: string
      ticketOptions?: TicketOptions
    }
  | {
      /** Any source of tokens bound to `keyPair` (for tests, or tokens from elsewhere). */
      getToken: (keyPair: DpopKeyPair) => Promise<ServiceToken>
    }
) & {
  /** Get a new token when less than this is left of the current one, ms (at most half its life). @default 30000 */
  refreshBeforeMs?: number
  /** Clock, ms (proof `iat`, refresh). @default the KdcClient's corrected clock, else Date.now */
  now?: () => number
  /** The key pair to bind tokens to. @default one made for this session, not extractable */
  keyPair?: DpopKeyPair
}

/** A response read whole by {@link DpopSession.request}. */
export interface DpopResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

/** Whether a response is RFC 9449 §8's nonce challenge. */
function isNonceChallenge(status: number, wwwAuthenticate: string | null | undefined): boolean {
  return (status === 401 || status === 400) && typeof wwwAuthenticate === 'string' && /error="?use_dpop_nonce"?/.test(wwwAuthenticate)
}

/**
 * Makes DPoP-authenticated requests to one service: a token for it bound to this session's
 * key, refreshed before it expires, a fresh proof per request, the server's nonces
 * remembered per origin.
 */
export class DpopSession {
  private readonly o: DpopSessionOptions
  private keyPair: DpopKeyPair | undefined
  private current: ServiceToken | undefined
  private pending: Promise<ServiceToken> | undefined
  private readonly nonces = new Map<string, string>()
  private readonly now: () => number

  constructor(o: DpopSessionOptions) {
    this.o = o
    this.keyPair = o.keyPair
    const client = 'client' in o ? o.client : undefined
    this.now = o.now ?? (client ? () => client.now() : Date.now)
  }

  /** A token valid for at least the refresh margin: the current one, or a new one. */
  async token(): Promise<ServiceToken> {
    const t = this.current
    if (t !== undefined && !this.dueForRefresh(t)) return t
    this.pending ??= this.fetchToken().finally(() => {
      this.pending = undefined
    })
    return this.pending
  }

  private dueForRefresh(t: ServiceToken): boolean {
    const life = t.expiresAt - ((t.claims.iat as number | undefined) ?? 0) * 1000
    const margin = Math.min(this.o.refreshBeforeMs ?? 30_000, life / 2)
    return this.now() >= t.expiresAt - margin
  }

  private async fetchToken(): Promise<ServiceToken> {
    this.keyPair ??= await generateDpopKeyPair()
    let t: ServiceToken
    if ('getToken' in this.o) t = await this.o.getToken(this.keyPair)
    else {
      const tgt = typeof this.o.tgt === 'function' ? await this.o.tgt() : this.o.tgt
      t = await this.o.client.getServiceToken(tgt, this.o.service, { ...this.o.ticketOptions, keyPair: this.keyPair })
    }
    this.current = t
    return t
  }

  /** The two headers for one request: `authorization: DPoP <token>` and `dpop: <proof>`. */
  async headers(method: string, url: string | URL): Promise<{ authorization: string; dpop: string }> {
    const t = await this.token()
    const nonce = this.nonces.get(new URL(url).origin)
    const proof = await createDpopProof(t.keyPair, { method, url, token: t.token, now: this.now(), ...(nonce !== undefined ? { nonce } : {}) })
    return { authorization: `DPoP ${t.token}`, dpop: proof }
  }

  /** Remember a DPoP-Nonce the server sent (RFC 9449 §8), for the next proofs to its origin. */
  noteResponse(url: string | URL, nonce: string | null | undefined): void {
    if (typeof nonce === 'string' && nonce.length > 0) this.nonces.set(new URL(url).origin, nonce)
  }

  /**
   * fetch with DPoP. A `use_dpop_nonce` challenge is answered once with a new proof
   * carrying the nonce; a body that is a stream cannot be sent twice, so that one is not retried.
   */
  async fetch(input: string | URL, init: RequestInit = {}): Promise<Response> {
    const method = init.method ?? 'GET'
    const send = async () => {
      const h = new Headers(init.headers)
      const d = await this.headers(method, input)
      h.set('authorization', d.authorization)
      h.set('dpop', d.dpop)
      const res = await fetch(input, { ...init, method, headers: h })
      this.noteResponse(input, res.headers.get('dpop-nonce'))
      return res
    }
    const res = await send()
    const replayable = !(init.body instanceof ReadableStream)
    if (replayable && res.headers.get('dpop-nonce') && isNonceChallenge(res.status, res.headers.get('www-authenticate'))) {
      await res.body?.cancel()
      return send()
    }
    return res
  }

  /** http.request / https.request with DPoP, the response read whole; retried once on a nonce challenge. */
  async request(url: string | URL, opts: http.RequestOptions & { body?: string | Uint8Array } = {}): Promise<DpopResponse> {
    const { body, ...reqOpts } = opts
    const method = reqOpts.method ?? 'GET'
    const send = async (): Promise<DpopResponse> => {
      const d = await this.headers(method, url)
      const headers = { ...reqOpts.headers, authorization: d.authorization, dpop: d.dpop }
      const res = await rawRequest(url, { ...reqOpts, method, headers }, body)
      const n = res.headers['dpop-nonce']
      this.noteResponse(url, Array.isArray(n) ? n[0] : n)
      return res
    }
    const res = await send()
    if (res.headers['dpop-nonce'] && isNonceChallenge(res.status, res.headers['www-authenticate'])) return send()
    return res
  }
}

function rawRequest(url: string | URL, opts: http.RequestOptions, body: string | Uint8Array | undefined): Promise<DpopResponse> {
  const u = new URL(url)
  const mod = u.protocol === 'https:' ? https : http
  return new Promise((resolve, reject) => {
    const req = mod.request(u, opts, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}
