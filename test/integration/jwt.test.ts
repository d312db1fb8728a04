/**
 * JWT bridge over the real daemon (startKdc of src/admin/start.ts on 127.0.0.1, port 0):
 * tokens from the TGS, DPoP proofs, verifyServiceToken's refusals, and interoperability with
 * code that is not ours (jose jwtVerify + createRemoteJWKSet, the npm `dpop` package).
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import * as dpopLib from 'dpop'
import { base64url, createRemoteJWKSet, decodeProtectedHeader, exportJWK, importJWK, jwtVerify, SignJWT, UnsecuredJWT } from 'jose'
import { ErrorCode } from '../../proto/error-codes.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { createDpopProof, DpopSession } from '../../src/client/dpop.js'
import { type DpopKeyPair, generateDpopKeyPair, type ServiceToken } from '../../src/client/jwt.js'
import { type Credentials, KdcClient } from '../../src/client/kdc-client.js'
import { ed25519KeyPair } from '../../src/crypto/index.js'
import { KrbProtocolError, TokenError } from '../../src/errors.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { realmJwks, signingKeyId } from '../../src/krb/jwks.js'
import { ServiceTokenVerifier, type TokenRequest, tokenMiddleware, tokenOf } from '../../src/service/jwt-verifier.js'

const REALM = 'JWT.TEST'
const API = 'HTTP/api.example.test'
const OTHER = 'HTTP/other.example.test'
const URL_AUD = 'https://files.example.test/'
const ORIGIN = 'https://api.example.test'

/** A request for `url` carrying `t` and a proof made with `keyPair` (default: the token's). */
async function signed(t: ServiceToken, method: string, url: string, o: { keyPair?: DpopKeyPair; proofMethod?: string; proofUrl?: string; now?: number } = {}): Promise<TokenRequest> {
  const dpop = await createDpopProof(o.keyPair ?? t.keyPair, { method: o.proofMethod ?? method, url: o.proofUrl ?? url, token: t.token, ...(o.now !== undefined ? { now: o.now } : {}) })
  return { method, url, authorization: `DPoP ${t.token}`, dpop }
}

async function refusal(p: Promise<unknown>): Promise<TokenError> {
  try {
    await p
  } catch (err) {
    expect(err).to.be.instanceOf(TokenError)
    return err as TokenError
  }
  throw new Error('expected a refusal')
}

describe('JWT bridge (integration)', function () {
  this.timeout(20000)
  let kdc: RunningKdc
  let client: KdcClient
  let tgt: Credentials
  let verifier: ServiceTokenVerifier

  before(async () => {
    kdc = await startKdc({ realm: REALM, adminPassword: 'admin password 1', config: { kdf: { N: 1024 }, log: { console: false } } })
    await kdc.addPrincipal('alice', { password: 'alice password 1' })
    for (const s of [API, OTHER, 'HTTP/files.example.test', 'HTTP/nojwt.example.test']) await kdc.addPrincipal(s)
    client = new KdcClient(kdc.realmFile)
    // allowJwt and jwtAudience are set the way an administrator does: modprinc over the admin listener.
    const admin = await AdminClient.login(client, 'admin', 'admin password 1')
    for (const s of [API, OTHER]) await admin.call('modprinc', { name: s, attributes: { allowJwt: true } })
    await admin.call('modprinc', { name: 'HTTP/files.example.test', attributes: { allowJwt: true, jwtAudience: URL_AUD } })
    tgt = await client.login('alice', 'alice password 1')
    verifier = new ServiceTokenVerifier({ realm: kdc.realmFile, audience: `${API}@${REALM}` })
  })
  after(async () => {
    client?.close()
    await kdc?.close()
  })

  describe('issuing', () => {
    it('issues a token signed with the realm key: EdDSA, at+jwt, kid = the key thumbprint, claims bound to the client key', async () => {
      const t = await client.getServiceToken(tgt, API)
      const header = decodeProtectedHeader(t.token)
      expect(header).to.deep.equal({ alg: 'EdDSA', typ: 'at+jwt', kid: await signingKeyId(kdc.realmFile.signingKey) })
      const jwks = await realmJwks(kdc.realmFile)
      const { payload } = await jwtVerify(t.token, await importJWK(jwks.keys[0]!, 'EdDSA'), { algorithms: ['EdDSA'] })
      expect(payload.iss).to.equal(`tessera:${REALM}`)
      expect(payload.sub).to.equal(`alice@${REALM}`)
      expect(payload.aud).to.equal(`${API}@${REALM}`)
      expect(payload.cnf).to.deep.equal({ jkt: t.keyPair.jkt })
      expect(payload.jti).to.be.a('string').with.length.greaterThan(10)
      expect(payload.tkt_flags).to.equal(t.ticket.flags)
      expect(payload.nbf).to.equal(payload.iat)
      // short by default (5 min), never beyond the ticket
      expect(payload.exp! - payload.iat!).to.be.at.most(300)
      expect(payload.exp! * 1000).to.be.at.most(t.ticket.endtime)
      expect(t.keyPair.privateKey.extractable, 'the private key stays in the process').to.equal(false)
      // a ticket comes with it, as with getServiceTicket
      expect(t.ticket.sname).to.deep.equal(['HTTP', 'api.example.test'])
    })

    it('modprinc refuses a jwtAudience that is not a URL and an allowJwt that is not a boolean', async () => {
      const admin = await AdminClient.login(client, 'admin', 'admin password 1')
      for (const attributes of [{ jwtAudience: 'not a url' }, { allowJwt: 'yes' }]) {
        const err = await admin.call('modprinc', { name: OTHER, attributes }).catch((e: unknown) => e)
        expect(err, JSON.stringify(attributes)).to.be.instanceOf(Error)
        expect((err as Error).message).to.match(/attribute (jwtAudience must be a URL|allowJwt must be true or false)/)
      }
      const view = (await admin.call('getprinc', { name: OTHER })) as { attributes: Record<string, unknown> }
      expect(view.attributes.allowJwt).to.equal(true)
    })

    it("uses the service's jwtAudience attribute as aud", async () => {
      const t = await client.getServiceToken(tgt, 'HTTP/files.example.test')
      expect(t.claims.aud).to.equal(URL_AUD)
    })

    it('refuses a token for a service without allowJwt (KDC_ERR_POLICY), and still issues its tickets', async () => {
      const err = await client.getServiceToken(tgt, 'HTTP/nojwt.example.test').catch((e: unknown) => e)
      expect(err).to.be.instanceOf(KrbProtocolError)
      expect((err as KrbProtocolError).code).to.equal(ErrorCode.KDC_ERR_POLICY)
      const st = await client.getServiceTicket(tgt, 'HTTP/nojwt.example.test')
      expect(st.sname).to.deep.equal(['HTTP', 'nojwt.example.test'])
    })

    it('caps exp at jwtMaxLifeMs and at the ticket end, and names the configured issuer', async () => {
      const k = await startKdc({ realm: 'CAP.TEST', config: { kdf: { N: 1024 }, log: { console: false }, jwtIssuer: 'https://kdc.cap.test', jwtMaxLifeMs: 60_000 } })
      const c = new KdcClient(k.realmFile)
      try {
        await k.addPrincipal('bob', { password: 'bob password 1' })
        await k.addPrincipal('HTTP/x.cap.test', { attributes: { allowJwt: true } })
        const tg = await c.login('bob', 'bob password 1')
        const t = await c.getServiceToken(tg, 'HTTP/x.cap.test')
        expect(t.claims.iss).to.equal('https://kdc.cap.test')
        expect(t.claims.exp! - t.claims.iat!).to.equal(60)
        const shortTgt = await c.login('bob', 'bob password 1', { lifetimeMs: 70_000 })
        const t2 = await c.getServiceToken(shortTgt, 'HTTP/x.cap.test', { lifetimeMs: 30_000 })
        expect(t2.claims.exp).to.equal(Math.floor(t2.ticket.endtime / 1000))
        expect(t2.claims.exp! - t2.claims.iat!).to.be.at.most(31)
      } finally {
        c.close()
        await k.close()
      }
    })
  })

  describe('verifyServiceToken', () => {
    let t: ServiceToken
    before(async () => {
      t = await client.getServiceToken(tgt, API)
    })

    it('accepts the token with a proof for the request, and names the client', async () => {
      const v = await verifier.verify(await signed(t, 'GET', `${ORIGIN}/things?x=1`))
      expect(v.principal).to.equal(`alice@${REALM}`)
      expect(v.jkt).to.equal(t.keyPair.jkt)
    })

    it('refuses it at another service (audience)', async () => {
      const other = new ServiceTokenVerifier({ realm: kdc.realmFile, audience: `${OTHER}@${REALM}` })
      const err = await refusal(other.verify(await signed(t, 'GET', `${ORIGIN}/x`)))
      expect(err.reason).to.equal('TOKEN_AUDIENCE')
      expect(err.status).to.equal(401)
      expect(err.wwwAuthenticate).to.match(/^DPoP error="invalid_token"/)
      // and a token for the other service is refused here
      const t2 = await client.getServiceToken(tgt, OTHER)
      expect((await refusal(verifier.verify(await signed(t2, 'GET', `${ORIGIN}/x`)))).reason).to.equal('TOKEN_AUDIENCE')
    })

    it('refuses it after expiry (beyond the skew)', async () => {
      const late = Date.now() + 301_000 + 300_000
      const v = new ServiceTokenVerifier({ realm: kdc.realmFile, audience: `${API}@${REALM}`, now: () => late })
      const err = await refusal(v.verify(await signed(t, 'GET', `${ORIGIN}/x`, { now: late })))
      expect(err.reason).to.equal('TOKEN_EXPIRED')
      expect(err.error).to.equal('invalid_token')
    })

    it('refuses a token whose signature was tampered with', async () => {
      const [h, p, s] = t.token.split('.') as [string, string, string]
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'))
      claims.sub = `admin@${REALM}`
      const forged: ServiceToken = { ...t, token: `${h}.${base64url.encode(JSON.stringify(claims))}.${s}` }
      expect((await refusal(verifier.verify(await signed(forged, 'GET', `${ORIGIN}/x`)))).reason).to.equal('TOKEN_SIGNATURE')
    })

    it('refuses a token signed by a key the realm does not list', async () => {
      const rogue = ed25519KeyPair()
      const { privateKey } = await rogueKey(rogue)
      const token = await new SignJWT(t.claims)
        .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: await signingKeyId(rogue.publicKey) })
        .sign(privateKey)
      expect((await refusal(verifier.verify(await signed({ ...t, token }, 'GET', `${ORIGIN}/x`)))).reason).to.equal('TOKEN_UNKNOWN_KEY')
      // the same key claiming the realm key's kid: its signature fails
      const token2 = await new SignJWT(t.claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: decodeProtectedHeader(t.token).kid! }).sign(privateKey)
      expect((await refusal(verifier.verify(await signed({ ...t, token: token2 }, 'GET', `${ORIGIN}/x`)))).reason).to.equal('TOKEN_SIGNATURE')
    })

    it('refuses alg none and HS256 tokens', async () => {
      const none = new UnsecuredJWT(t.claims).encode()
      expect((await refusal(verifier.verify(await signed({ ...t, token: none }, 'GET', `${ORIGIN}/x`)))).reason).to.be.oneOf(['TOKEN_ALG', 'TOKEN_MALFORMED'])
      // HS256 keyed with the public key bytes: the classic algorithm-confusion forgery
      const hs = await new SignJWT(t.claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: decodeProtectedHeader(t.token).kid! }).sign(kdc.realmFile.signingKey)
      expect((await refusal(verifier.verify(await signed({ ...t, token: hs }, 'GET', `${ORIGIN}/x`)))).reason).to.equal('TOKEN_ALG')
    })

    it('refuses a replayed proof', async () => {
      const req = await signed(t, 'POST', `${ORIGIN}/pay`)
      await verifier.verify(req)
      const err = await refusal(verifier.verify(req))
      expect(err.reason).to.equal('PROOF_REPLAY')
      expect(err.wwwAuthenticate).to.match(/^DPoP error="invalid_dpop_proof"/)
    })

    it('refuses the token without a proof, and as a bearer token', async () => {
      const err = await refusal(verifier.verify({ method: 'GET', url: `${ORIGIN}/x`, authorization: `DPoP ${t.token}` }))
      expect(err.reason).to.equal('PROOF_MISSING')
      expect(err.status).to.equal(401)
      const bearer = await refusal(verifier.verify({ ...(await signed(t, 'GET', `${ORIGIN}/x`)), authorization: `Bearer ${t.token}` }))
      expect(bearer.reason).to.equal('NOT_DPOP')
      const none = await refusal(verifier.verify({ method: 'GET', url: `${ORIGIN}/x` }))
      expect(none.wwwAuthenticate).to.equal('DPoP algs="EdDSA Ed25519"')
    })

    it('refuses a proof for another method or another URL', async () => {
      expect((await refusal(verifier.verify(await signed(t, 'DELETE', `${ORIGIN}/x`, { proofMethod: 'GET' })))).reason).to.equal('PROOF_HTM')
      expect((await refusal(verifier.verify(await signed(t, 'GET', `${ORIGIN}/admin`, { proofUrl: `${ORIGIN}/x` })))).reason).to.equal('PROOF_HTU')
      expect((await refusal(verifier.verify(await signed(t, 'GET', 'https://evil.example.test/x', { proofUrl: `${ORIGIN}/x` })))).reason).to.equal('PROOF_HTU')
    })

    it('refuses a proof signed by a key other than the one cnf.jkt names', async () => {
      const thief = await generateDpopKeyPair()
      const err = await refusal(verifier.verify(await signed(t, 'GET', `${ORIGIN}/x`, { keyPair: thief })))
      expect(err.reason).to.equal('PROOF_KEY_MISMATCH')
    })

    it('refuses a proof for another token (ath) and a stale proof', async () => {
      const t2 = await client.getServiceToken(tgt, API, { keyPair: t.keyPair })
      const forT2 = await signed(t2, 'GET', `${ORIGIN}/x`)
      expect((await refusal(verifier.verify({ ...forT2, authorization: `DPoP ${t.token}` }))).reason).to.equal('PROOF_ATH')
      expect((await refusal(verifier.verify(await signed(t, 'GET', `${ORIGIN}/x`, { now: Date.now() - 120_000 })))).reason).to.equal('PROOF_IAT')
    })

    it('asks for a server nonce when it uses them, and accepts the proof that carries it', async () => {
      const nv = new ServiceTokenVerifier({ realm: kdc.realmFile, audience: `${API}@${REALM}`, nonces: true })
      const err = await refusal(nv.verify(await signed(t, 'GET', `${ORIGIN}/x`)))
      expect(err.error).to.equal('use_dpop_nonce')
      expect(err.nonce).to.be.a('string')
      const dpop = await createDpopProof(t.keyPair, { method: 'GET', url: `${ORIGIN}/x`, token: t.token, nonce: err.nonce! })
      const v = await nv.verify({ method: 'GET', url: `${ORIGIN}/x`, authorization: `DPoP ${t.token}`, dpop })
      expect(v.principal).to.equal(`alice@${REALM}`)
    })
  })

  describe('interoperability', () => {
    it("jose's jwtVerify with createRemoteJWKSet on the realm's JWKS URL accepts a Tessera token", async () => {
      const jwks = await realmJwks(kdc.realmFile)
      let fetches = 0
      // A stand-in for the operations listener's /.well-known/jwks.json (not merged yet).
      const server = http.createServer((req, res) => {
        fetches++
        if (req.url !== '/.well-known/jwks.json') return res.writeHead(404).end()
        res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify(jwks))
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      try {
        const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`)
        const t = await client.getServiceToken(tgt, API)
        const { payload, protectedHeader } = await jwtVerify(t.token, createRemoteJWKSet(url), {
          issuer: `tessera:${REALM}`,
          audience: `${API}@${REALM}`,
          typ: 'at+jwt',
          algorithms: ['EdDSA'],
        })
        expect(payload.sub).to.equal(`alice@${REALM}`)
        expect(protectedHeader.alg).to.equal('EdDSA')
        // and our verifier pointed at the same URL
        const v = new ServiceTokenVerifier({ jwksUri: url, issuer: `tessera:${REALM}`, audience: `${API}@${REALM}` })
        expect((await v.verify(await signed(t, 'GET', `${ORIGIN}/x`))).principal).to.equal(`alice@${REALM}`)
        expect(fetches).to.equal(2)
      } finally {
        server.close()
      }
    })

    it('accepts a DPoP proof made by the npm dpop package for a Tessera token', async () => {
      const kp = await dpopLib.generateKeyPair('Ed25519')
      const jwk = await exportJWK(kp.publicKey)
      const pub = base64url.decode(jwk.x!)
      const { token } = await client.requestServiceToken(tgt, API, pub)
      const proof = await dpopLib.generateProof(kp, `${ORIGIN}/orders`, 'PUT', undefined, token)
      expect(decodeProtectedHeader(proof).alg).to.equal('Ed25519')
      const v = await verifier.verify({ method: 'PUT', url: `${ORIGIN}/orders?id=7`, authorization: `DPoP ${token}`, dpop: proof })
      expect(v.principal).to.equal(`alice@${REALM}`)
      expect(v.jkt).to.equal(await dpopLib.calculateThumbprint(kp.publicKey))
    })
  })

  describe('DpopSession and the http middleware', () => {
    let server: http.Server
    let base: string
    const seen: string[] = []
    let nonceVerifier: ServiceTokenVerifier

    before(async () => {
      nonceVerifier = new ServiceTokenVerifier({ realm: kdc.realmFile, audience: `${API}@${REALM}`, nonces: true })
      const auth = tokenMiddleware(nonceVerifier)
      server = http.createServer((req, res) => {
        auth(req, res, (err) => {
          if (err) return res.writeHead(500).end()
          seen.push(`${req.method} ${req.url}`)
          res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello ${tokenOf(req)!.principal}`)
        })
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    })
    after(() => server?.close())

    it('calls the service with fetch: answers the nonce challenge once, then every request passes', async () => {
      const s = new DpopSession({ client, tgt, service: API })
      const r1 = await s.fetch(`${base}/a?q=1`)
      expect(r1.status).to.equal(200)
      expect(await r1.text()).to.equal(`hello alice@${REALM}`)
      const r2 = await s.fetch(`${base}/b`, { method: 'POST', body: 'x' })
      expect(r2.status).to.equal(200)
      expect(seen.slice(-2)).to.deep.equal(['GET /a?q=1', 'POST /b'])
    })

    it('calls the service with http.request', async () => {
      const s = new DpopSession({ client, tgt, service: API })
      const r = await s.request(`${base}/c`, { method: 'PUT', body: 'y' })
      expect(r.status).to.equal(200)
      expect(r.body.toString()).to.equal(`hello alice@${REALM}`)
    })

    it('answers 401 with WWW-Authenticate: DPoP without a proof', async () => {
      const t = await client.getServiceToken(tgt, API)
      const r = await fetch(`${base}/d`, { headers: { authorization: `DPoP ${t.token}` } })
      expect(r.status).to.equal(401)
      expect(r.headers.get('www-authenticate')).to.match(/^DPoP error="invalid_dpop_proof"/)
      const r0 = await fetch(`${base}/d`)
      expect(r0.status).to.equal(401)
      expect(r0.headers.get('www-authenticate')).to.equal('DPoP algs="EdDSA Ed25519"')
    })

    it('refreshes the token before it expires', async () => {
      let issued = 0
      let clock = Date.now()
      const s = new DpopSession({
        now: () => clock,
        getToken: async (kp) => {
          issued++
          return client.getServiceToken(tgt, API, { keyPair: kp })
        },
      })
      const a = await s.token()
      expect(await s.token()).to.equal(a)
      clock = a.expiresAt - 10_000
      const b = await s.token()
      expect(issued).to.equal(2)
      expect(b.token).to.not.equal(a.token)
      expect(b.keyPair.jkt).to.equal(a.keyPair.jkt)
    })
  })
})

/** A jose private key from a raw Ed25519 pair (secret = seed). */
async function rogueKey(pair: { secretKey: Uint8Array; publicKey: Uint8Array }) {
  const privateKey = await importJWK({ kty: 'OKP', crv: 'Ed25519', x: base64url.encode(pair.publicKey), d: base64url.encode(pair.secretKey) }, 'EdDSA')
  return { privateKey }
}

