/** `kauth token SERVICE`: a DPoP-bound JWT from the cached TGT, printed as headers or JSON; the proof it prints passes verifyServiceToken. */
import path from 'node:path'
import { writeFile } from 'node:fs/promises'
import { expect } from 'chai'
import { base64url, importJWK } from 'jose'
import { createDpopProof } from '../../src/client/dpop.js'
import type { DpopKeyPair } from '../../src/client/jwt.js'
import { Exit } from '../../src/cli/common.js'
import { CLI_REALM, type CliKdc, PASSWORDS, runKauth, startCliKdc } from '../helpers/cli-kdc.js'
import { ServiceTokenVerifier } from '../../src/service/jwt-verifier.js'

const SERVICE = 'HTTP/api.example.test'
const URL_ = 'https://api.example.test/items'

describe('kauth token', function () {
  this.timeout(20000)
  let k: CliKdc
  let env: NodeJS.ProcessEnv
  let verifier: ServiceTokenVerifier

  before(async () => {
    k = await startCliKdc()
    await k.kdc.addPrincipal(SERVICE, { attributes: { allowJwt: true } })
    await k.kdc.addPrincipal('HTTP/plain.example.test')
    env = k.env(path.join(k.dir, 'cc-token'))
    const pw = path.join(k.dir, 'alice.pw')
    await writeFile(pw, `${PASSWORDS.alice}\n`, { mode: 0o600 })
    const r = await runKauth(['login', 'alice', '--password-file', pw], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
    verifier = new ServiceTokenVerifier({ realm: k.kdc.realmFile, audience: `${SERVICE}@${CLI_REALM}` })
  })
  after(async () => {
    await k?.close()
  })

  it('prints the Authorization and DPoP headers for one request (curl -H @-), which the service accepts', async () => {
    const r = await runKauth(['token', SERVICE, '--proof', URL_, '--method', 'POST'], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
    const [auth, dpop, rest] = r.stdout.split('\n')
    expect(auth).to.match(/^Authorization: DPoP [\w-]+\.[\w-]+\.[\w-]+$/)
    expect(dpop).to.match(/^DPoP: [\w-]+\.[\w-]+\.[\w-]+$/)
    expect(rest).to.equal('')
    const v = await verifier.verify({ method: 'POST', url: URL_, authorization: auth!.slice('Authorization: '.length), dpop: dpop!.slice('DPoP: '.length) })
    expect(v.principal).to.equal(`alice@${CLI_REALM}`)
  })

  it('--json gives the token and its private key, with which a script signs its own proofs', async () => {
    const r = await runKauth(['token', SERVICE, '--json'], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
    const o = JSON.parse(r.stdout) as { token: string; jkt: string; expires: string; key: { kty: string; crv: string; x: string; d: string } }
    expect(o.key).to.include({ kty: 'OKP', crv: 'Ed25519' })
    expect(base64url.decode(o.key.d)).to.have.length(32)
    const kp = {
      privateKey: await importJWK(o.key, 'EdDSA'),
      publicJwk: { kty: 'OKP', crv: 'Ed25519', x: o.key.x },
      jkt: o.jkt,
    } as unknown as DpopKeyPair
    const dpop = await createDpopProof(kp, { method: 'GET', url: URL_, token: o.token })
    expect((await verifier.verify({ method: 'GET', url: URL_, authorization: `DPoP ${o.token}`, dpop })).principal).to.equal(`alice@${CLI_REALM}`)
  })

  it('fails with the KDC refusal for a service without allowJwt', async () => {
    const r = await runKauth(['token', 'HTTP/plain.example.test'], env)
    expect(r.code).to.equal(Exit.FAILURE)
    expect(r.stderr).to.match(/does not accept JWTs/)
    expect(r.stdout).to.equal('')
  })
})
