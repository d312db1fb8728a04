/**
 * KDC identity-key rotation over the real daemon (a realm directory, 127.0.0.1, port 0):
 * rotate-identity stages next keys published in realm.json, activate-identity makes them
 * current, retire-identity forgets the old ones. A client holding the realm.json from before
 * keeps working (AS, TGS, verified time, resumption refused then a full handshake) until
 * retire; clients with the staged or the new realm.json work at every step; JWTs of both
 * keys verify against the realm's JWKS during the overlap.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { decodeProtectedHeader } from 'jose'
import { ErrorCode } from '../../proto/error-codes.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { type Credentials, KdcClient } from '../../src/client/kdc-client.js'
import { syncTime } from '../../src/client/time-sync.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { realmJwks, signingKeyId } from '../../src/krb/jwks.js'
import { loadRealmFile, type RealmFile } from '../../src/krb/realm-file.js'
import { createDpopProof } from '../../src/client/dpop.js'
import type { ServiceToken } from '../../src/client/jwt.js'
import { ServiceTokenVerifier, verifyServiceToken } from '../../src/service/jwt-verifier.js'
import { ResumptionStore } from '../../src/wire/resumption.js'
import { asKrbError, RawPeer, resumeHello } from '../helpers/wire-raw.js'

const REALM = 'IDROT.TEST'
const API = 'HTTP/api.idrot.test'
const HOUR = 3600_000
const hex = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString('hex'))

/** One client's full round: AS, TGS, verified time. */
async function round(client: KdcClient): Promise<Credentials> {
  const tgt = await client.login('alice', 'alice password 1')
  const st = await client.getServiceTicket(tgt, 'host/app.idrot.test')
  expect(st.sname).to.deep.equal(['host', 'app.idrot.test'])
  const t = await syncTime(client, { samples: 1, apply: false })
  expect(t.verified).to.equal(true)
  return tgt
}

async function tokenRequest(t: ServiceToken) {
  const url = 'https://api.idrot.test/x'
  return { method: 'GET', url, authorization: `DPoP ${t.token}`, dpop: await createDpopProof(t.keyPair, { method: 'GET', url, token: t.token }) }
}

describe('KDC identity-key rotation (integration)', function () {
  this.timeout(60000)
  let dir: string
  let kdc: RunningKdc
  let admin: AdminClient
  let adminClient: KdcClient
  const clients: KdcClient[] = []
  const client = (rf: RealmFile, store?: ResumptionStore) => {
    const c = new KdcClient(rf, store ? { resumption: store } : {})
    clients.push(c)
    return c
  }
  const realmJson = () => loadRealmFile(path.join(dir, REALM_FILES.realmFile))

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-idrot-'))
    const config = { kdf: { N: 1024 }, ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false } }
    await initRealmDir({ dir, realm: REALM, adminPassword: 'admin password 1', config: { ...(await import('../../src/kdc/config.js')).resolveKdcConfig(config) } })
    kdc = await startKdc({ dir, config, log: false })
    await kdc.addPrincipal('alice', { password: 'alice password 1' })
    await kdc.addPrincipal('host/app.idrot.test')
    await kdc.addPrincipal(API)
    adminClient = new KdcClient(kdc.realmFile)
    admin = await AdminClient.login(adminClient, 'admin', 'admin password 1')
    await admin.call('modprinc', { name: API, attributes: { allowJwt: true } })
  })
  after(async () => {
    for (const c of clients) c.close()
    adminClient?.close()
    await kdc?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('keeps a client with the old realm.json working through the overlap, and every realm.json generation works at each step', async () => {
    const oldFile = await realmJson()
    expect(oldFile.nextTransportKey).to.equal(undefined)
    const oldStore = new ResumptionStore()
    const oldClient = client(oldFile, oldStore)
    const tgtBefore = await round(oldClient)
    const verifierOld = new ServiceTokenVerifier({ realm: oldFile, audience: `${API}@${REALM}` })
    const tokenOld = await oldClient.getServiceToken(tgtBefore, API)
    expect(decodeProtectedHeader(tokenOld.token).kid).to.equal(await signingKeyId(oldFile.signingKey))

    // 1. Stage: the next keys are published in realm.json before anything uses them.
    const staged = (await admin.call('rotate-identity', { which: 'both', stageAhead: HOUR })) as Record<string, unknown>
    expect(staged.transportKey).to.equal(hex(oldFile.transportKey))
    expect(staged.nextTransportKey).to.be.a('string').and.not.equal(staged.transportKey)
    expect(staged.nextSigningKey).to.be.a('string').and.not.equal(staged.signingKey)
    const stagedFile = await realmJson()
    expect(hex(stagedFile.transportKey)).to.equal(hex(oldFile.transportKey))
    expect(hex(stagedFile.nextTransportKey)).to.equal(staged.nextTransportKey)
    expect(hex(stagedFile.nextSigningKey)).to.equal(staged.nextSigningKey)
    expect(stagedFile.nextKeysActiveFrom).to.be.greaterThan(Date.now() + HOUR / 2)

    // Before activation: the old file, the staged file, and a file naming only the next keys
    // (a client that already took the keys of the next generation) all get in and verify time.
    await round(oldClient)
    await round(client(stagedFile))
    const nextOnly: RealmFile = { ...oldFile, transportKey: stagedFile.nextTransportKey!, signingKey: stagedFile.nextSigningKey! }
    await round(client(nextOnly))
    // JWTs are still signed by the current (old) key before activation.
    const t2 = await oldClient.getServiceToken(tgtBefore, API)
    expect(decodeProtectedHeader(t2.token).kid).to.equal(await signingKeyId(oldFile.signingKey))

    // 2. Activate: the new keys are current, the old ones still answered to.
    const resumedBefore = oldStore.resumed
    const ticket = oldStore.get(ResumptionStore.id(oldFile.kdcs[0]!.host, oldFile.kdcs[0]!.as, oldFile.transportKey))
    expect(ticket, 'the old client holds a resumption ticket from before the rotation').to.not.equal(undefined)
    const saved = { tk: Uint8Array.from(ticket!.tk), rms: Uint8Array.from(ticket!.rms) }
    const active = (await admin.call('activate-identity', { force: true })) as Record<string, unknown>
    expect(active.transportKey).to.equal(staged.nextTransportKey)
    expect(active.previousTransportKey).to.equal(hex(oldFile.transportKey))
    const newFile = await realmJson()
    expect(hex(newFile.transportKey)).to.equal(staged.nextTransportKey)
    expect(hex(newFile.signingKey)).to.equal(staged.nextSigningKey)
    expect(newFile.nextTransportKey).to.equal(undefined)

    // The old ticket is refused cleanly, in clear, with TSR_ERR_RESUME...
    const peer = await RawPeer.connect(oldFile.kdcs[0]!.as)
    await peer.send(resumeHello(oldFile.transportKey, saved).frame)
    expect(asKrbError(await peer.nextPlain()).code).to.equal(ErrorCode.TSR_ERR_RESUME)
    peer.destroy()
    // ...and the old client, whose own resumption is refused the same way, does a full handshake
    // with the old key and works (connections it already had open stay up: a new client object with the same tickets).
    const refusedBefore = oldStore.refused
    const oldAgain = client(oldFile, oldStore)
    const tgtOld = await round(oldAgain)
    expect(oldStore.refused).to.be.greaterThan(refusedBefore)
    expect(oldStore.resumed).to.be.at.least(resumedBefore)
    // A client with the new realm.json works, and so does one with the staged file (past activation it uses the next keys).
    const newClient = client(newFile)
    const tgtNew = await round(newClient)
    await round(client(stagedFile))

    // JWTs: the new key signs now; the one signed by the old key stays valid through the overlap.
    const tokenNew = await newClient.getServiceToken(tgtNew, API)
    expect(decodeProtectedHeader(tokenNew.token).kid).to.equal(await signingKeyId(newFile.signingKey))
    const jwks = await realmJwks(kdc.context.realm)
    expect(jwks.keys.map((k) => k.kid)).to.have.members([await signingKeyId(newFile.signingKey), await signingKeyId(oldFile.signingKey)])
    const verifier = new ServiceTokenVerifier({ jwks, issuer: `tessera:${REALM}`, audience: `${API}@${REALM}` })
    for (const t of [tokenOld, tokenNew, await oldAgain.getServiceToken(tgtOld, API)])
      expect((await verifyServiceToken(verifier, await tokenRequest(t))).claims.sub).to.equal(`alice@${REALM}`)
    // A service still configured from the old realm file keeps accepting old-key tokens.
    expect((await verifyServiceToken(verifierOld, await tokenRequest(tokenOld))).claims.sub).to.equal(`alice@${REALM}`)

    // 3. Retire: the old keys are gone; a client with the old file fails cleanly, the new one works.
    const retired = (await admin.call('retire-identity', {})) as Record<string, unknown>
    expect(retired.previousTransportKey).to.equal(undefined)
    const stale = client(oldFile, new ResumptionStore())
    const e = await stale.login('alice', 'alice password 1').then(
      () => undefined,
      (err: unknown) => err as { code?: string; cause?: { code?: string }; message: string },
    )
    // Every KDC address failed its key confirmation (TESSERA_HANDSHAKE): the stale realm file is named as the cause.
    expect(e?.code).to.equal('TESSERA_NETWORK')
    expect(e?.cause?.code).to.equal('TESSERA_HANDSHAKE')
    await round(client(newFile))
    expect((await realmJwks(kdc.context.realm)).keys).to.have.length(1)
  })

  it('refuses a second rotation while one is staged, and an early activation without force (114), and identity ops to a non-admin (107)', async () => {
    await admin.call('rotate-identity', { which: 'signing', stageAhead: HOUR })
    const inUse = await admin.call('rotate-identity', {}).then(
      () => undefined,
      (err: { code?: number }) => err,
    )
    expect(inUse?.code).to.equal(ErrorCode.ADM_ERR_IN_USE)
    const early = await admin.call('activate-identity', {}).then(
      () => undefined,
      (err: { code?: number }) => err,
    )
    expect(early?.code).to.equal(ErrorCode.ADM_ERR_IN_USE)
    const rf = await realmJson()
    expect(rf.nextSigningKey).to.not.equal(undefined)
    expect(rf.nextTransportKey).to.equal(undefined)
    await kdc.addPrincipal('bob', { password: 'bob password 1' })
    const bobClient = client(rf)
    const bob = await AdminClient.login(bobClient, 'bob', 'bob password 1')
    const denied = await bob.call('rotate-identity', {}).then(
      () => undefined,
      (err: { code?: number }) => err,
    )
    expect(denied?.code).to.equal(ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    await admin.call('activate-identity', { force: true })
    await admin.call('retire-identity', {})
    await round(client(await realmJson()))
  })
})
