/** src/krb/jwks.ts: the realm's JWKS holds exactly its public signing keys; the discovery document; a verifier's JWKS URL cache. */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import { base64url, calculateJwkThumbprint } from 'jose'
import { createDpopProof } from '../../src/client/dpop.js'
import { generateDpopKeyPair } from '../../src/client/jwt.js'
import { ed25519KeyPair } from '../../src/crypto/index.js'
import { TokenError } from '../../src/errors.js'
import { clientKeyThumbprint, serviceTokenClaims, signServiceToken } from '../../src/kdc/jwt.js'
import { discoveryDocument, realmJwks, signingKeyId } from '../../src/krb/jwks.js'
import { ServiceTokenVerifier } from '../../src/service/jwt-verifier.js'

describe('realmJwks', () => {
  it('lists exactly the public key of a realm record: kty, crv, x, kid, alg, use, and no private part', async () => {
    const pair = ed25519KeyPair()
    const record = { realm: 'R.TEST', createdAt: 0, transportKey: ed25519KeyPair(), signingKey: pair }
    const jwks = await realmJwks(record)
    expect(jwks.keys).to.have.length(1)
    const k = jwks.keys[0]!
    expect(Object.keys(k).sort()).to.deep.equal(['alg', 'crv', 'kid', 'kty', 'use', 'x'])
    expect(k).to.include({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig', x: base64url.encode(pair.publicKey) })
    const text = JSON.stringify(jwks)
    expect(text).to.not.include(base64url.encode(pair.secretKey))
    expect(text).to.not.include(base64url.encode(record.transportKey.publicKey))
  })

  it('names each key by its RFC 7638 thumbprint, so two keys (a rotation) never share a kid', async () => {
    const a = ed25519KeyPair().publicKey
    const b = ed25519KeyPair().publicKey
    const jwks = await realmJwks([a, b])
    expect(jwks.keys.map((k) => k.kid)).to.deep.equal([await signingKeyId(a), await signingKeyId(b)])
    expect(jwks.keys[0]!.kid).to.not.equal(jwks.keys[1]!.kid)
    expect(jwks.keys[0]!.kid).to.equal(await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: base64url.encode(a) }))
    expect((await realmJwks(a, 'v7')).keys[0]!.kid).to.equal('v7')
  })

  it('refuses a key that is not 32 bytes', async () => {
    let err: unknown
    try {
      await realmJwks(new Uint8Array(31))
    } catch (e) {
      err = e
    }
    expect(err).to.be.instanceOf(RangeError)
  })
})

describe('discoveryDocument', () => {
  it('gives issuer and jwks_uri', () => {
    const d = discoveryDocument('https://kdc.example.test', 'https://kdc.example.test/.well-known/jwks.json')
    expect(d).to.include({ issuer: 'https://kdc.example.test', jwks_uri: 'https://kdc.example.test/.well-known/jwks.json' })
    expect(() => discoveryDocument('x', 'not a url')).to.throw(TypeError)
  })
})

describe('ServiceTokenVerifier with a JWKS URL', () => {
  const REALM = 'R.TEST'
  const aud = `HTTP/api@${REALM}`
  let jwksBody = ''
  let fetches = 0
  let server: http.Server
  let url: string
  before(async () => {
    server = http.createServer((_req, res) => {
      fetches++
      res.writeHead(200, { 'content-type': 'application/json' }).end(jwksBody)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`
  })
  after(() => server.close())

  async function request(signing: { secretKey: Uint8Array; publicKey: Uint8Array }) {
    const kp = await generateDpopKeyPair()
    const now = Date.now()
    const token = await signServiceToken(
      signing,
      serviceTokenClaims({
        issuer: `tessera:${REALM}`,
        client: `alice@${REALM}`,
        audience: aud,
        now,
        endtime: now + 600_000,
        maxLifeMs: 300_000,
        flags: 0,
        jkt: await clientKeyThumbprint(base64url.decode(kp.publicJwk.x)),
        jti: base64url.encode(ed25519KeyPair().publicKey.subarray(0, 16)),
      }),
    )
    const u = 'https://api.example.test/x'
    return { method: 'GET', url: u, authorization: `DPoP ${token}`, dpop: await createDpopProof(kp, { method: 'GET', url: u, token }) }
  }

  it('fetches the set once, refetches on an unknown kid after the cool-down, and not before', async () => {
    const oldKey = ed25519KeyPair()
    const nextKey = ed25519KeyPair()
    jwksBody = JSON.stringify(await realmJwks([oldKey.publicKey]))
    fetches = 0
    const eager = new ServiceTokenVerifier({ jwksUri: url, issuer: `tessera:${REALM}`, audience: aud, jwksCooldownMs: 0 })
    const lazy = new ServiceTokenVerifier({ jwksUri: url, issuer: `tessera:${REALM}`, audience: aud, jwksCooldownMs: 600_000 })
    expect((await eager.verify(await request(oldKey))).principal).to.equal(`alice@${REALM}`)
    expect((await lazy.verify(await request(oldKey))).principal).to.equal(`alice@${REALM}`)
    await eager.verify(await request(oldKey))
    expect(fetches, 'cached').to.equal(2)
    // The next key is published (both listed): tokens it signs are accepted once the verifier refetches.
    jwksBody = JSON.stringify(await realmJwks([oldKey.publicKey, nextKey.publicKey]))
    expect((await eager.verify(await request(nextKey))).principal).to.equal(`alice@${REALM}`)
    expect(fetches).to.equal(3)
    // Within the cool-down an unknown kid does not trigger a fetch: refused.
    let err: unknown
    try {
      await lazy.verify(await request(nextKey))
    } catch (e) {
      err = e
    }
    expect(err).to.be.instanceOf(TokenError)
    expect((err as TokenError).reason).to.equal('TOKEN_UNKNOWN_KEY')
    expect(fetches).to.equal(3)
    // Old tokens stay valid while the old key is listed.
    expect((await eager.verify(await request(oldKey))).principal).to.equal(`alice@${REALM}`)
  })
})
