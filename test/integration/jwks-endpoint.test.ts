/** The realm's JWKS and discovery document on the HTTP ops listener (issue 14): standard JWT code can be pointed at a realm. */
import { expect } from 'chai'
import { createRemoteJWKSet, jwtVerify } from 'jose'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('JWKS on the ops listener (integration)', function () {
  this.timeout(20_000)
  useProcessGuards()
  let kdc: RunningKdc
  let kc: KdcClient
  let base: string

  before(async () => {
    kdc = await startKdc({ realm: REALM, adminPassword: ADMIN_PASSWORD, config: { ...FAST_CONFIG, http: { port: 0 } } })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    base = `http://127.0.0.1:${kdc.opsAddress!.port}`
  })
  after(async () => {
    kc.close()
    await kdc.close()
  })

  it('serves exactly the public signing key (no private part) and a discovery document pointing at it', async () => {
    const r = await fetch(`${base}/.well-known/jwks.json`)
    expect(r.status).to.equal(200)
    expect(r.headers.get('content-type')).to.equal('application/jwk-set+json')
    const jwks = (await r.json()) as { keys: Record<string, string>[] }
    expect(jwks.keys).to.have.length(1)
    const k = jwks.keys[0]!
    expect(Object.keys(k).sort()).to.deep.equal(['alg', 'crv', 'kid', 'kty', 'use', 'x'])
    expect(k).to.include({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' })
    expect(Buffer.from(k.x!, 'base64url')).to.deep.equal(Buffer.from(kdc.realmFile.signingKey))
    const d = (await (await fetch(`${base}/.well-known/openid-configuration`)).json()) as { issuer: string; jwks_uri: string }
    expect(d.issuer).to.equal(`tessera:${REALM}`)
    expect(d.jwks_uri).to.equal(`${base}/.well-known/jwks.json`)
    expect((await fetch(`${base}/.well-known/jwks.json`, { method: 'POST' })).status).to.equal(405)
  })

  it('lets jose’s jwtVerify with createRemoteJWKSet, pointed at the realm’s JWKS URL, accept a Tessera token', async () => {
    const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.addPrincipal({ name: 'HTTP/api.example.test', randkey: true, attributes: { allowJwt: true } })
    await admin.addPrincipal({ name: 'gina', password: 'amber-Forest-62' })
    const tgt = await kc.login('gina', 'amber-Forest-62')
    const t = await kc.getServiceToken(tgt, 'HTTP/api.example.test')
    const d = (await (await fetch(`${base}/.well-known/openid-configuration`)).json()) as { issuer: string; jwks_uri: string }
    const { payload, protectedHeader } = await jwtVerify(t.token, createRemoteJWKSet(new URL(d.jwks_uri)), {
      issuer: d.issuer,
      audience: `HTTP/api.example.test@${REALM}`,
      algorithms: ['EdDSA'],
      typ: 'at+jwt',
    })
    expect(payload.sub).to.equal(`gina@${REALM}`)
    expect(protectedHeader.alg).to.equal('EdDSA')
  })
})
