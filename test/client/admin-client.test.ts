/** AdminClient's typed methods (what apps automate administration with) against a real KDC on port 0. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'
import { expectAdminError } from '../helpers/refusals.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('AdminClient typed operations', function () {
  this.timeout(20_000)
  useProcessGuards()
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient

  before(async () => {
    kdc = await startKdc({ realm: REALM, adminPassword: ADMIN_PASSWORD, config: FAST_CONFIG })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
  })
  after(async () => {
    kc.close()
    await kdc.close()
  })

  it('manages a principal from add to delete', async () => {
    expect(await admin.addPrincipal({ name: 'ann', password: 'Heron-Valley-31', maxLife: 3_600_000 })).to.deep.equal({
      name: `ann@${REALM}`,
      kvno: 1,
      keys: [],
    })
    const v = await admin.getPrincipal('ann')
    expect(v).to.include({ name: `ann@${REALM}`, kvno: 1, maxLife: 3_600_000 })
    expect(v.keys.map((k) => k.kind)).to.deep.equal(['password'])
    expect(await admin.listPrincipals('a*')).to.deep.equal([`admin@${REALM}`, `ann@${REALM}`])
    const m = await admin.modifyPrincipal({ name: 'ann', attributes: { allowRenewable: false }, unlock: true })
    expect(m.attributes.allowRenewable).to.equal(false)
    expect((await admin.changePassword('ann', 'Falcon-Ridge-62', { keepold: true })).kvno).to.equal(2)
    expect((await admin.getPrincipal('ann')).keys.map((k) => k.kvno)).to.deep.equal([1, 2])
    await kc.login('ann', 'Falcon-Ridge-62')
    await admin.renamePrincipal('ann', 'anne')
    await expectAdminError(admin.getPrincipal('ann'), ErrorCode.ADM_ERR_NOT_FOUND)
    await admin.deletePrincipal('anne')
    await expectAdminError(admin.getPrincipal('anne'), ErrorCode.ADM_ERR_NOT_FOUND)
  })

  it('returns random keys as owned copies and extracts without changing the key', async () => {
    const r = await admin.addPrincipal({ name: 'host/db.example.test', randkey: true })
    expect(r.keys).to.have.length(1)
    expect(r.keys[0]!.key).to.be.instanceOf(Uint8Array)
    expect(r.keys[0]!.key.byteOffset, 'a copy, not a view into the reply').to.equal(0)
    const x = await admin.extractKeys('host/db.example.test')
    expect(x.kvno).to.equal(1)
    expect(Buffer.from(x.keys[0]!.key).equals(Buffer.from(r.keys[0]!.key))).to.equal(true)
    const y = await admin.randomizeKey('host/db.example.test')
    expect(y.kvno).to.equal(2)
    expect((await admin.extractKeys('host/db.example.test')).keys.map((k) => k.kvno)).to.deep.equal([2])
  })

  it('manages policies, and a policy refusal carries its message', async () => {
    const p = await admin.addPolicy({ name: 'long', minLength: 16 })
    expect(p).to.include({ name: 'long', minLength: 16 })
    expect((await admin.modifyPolicy({ name: 'long', minClasses: 2 })).minClasses).to.equal(2)
    expect(await admin.getPolicy('long')).to.include({ minLength: 16, minClasses: 2 })
    expect(await admin.listPolicies()).to.include('long')
    const e = await expectAdminError(admin.addPrincipal({ name: 'ben', password: 'Short-Pass-1', policy: 'long' }), ErrorCode.ADM_ERR_PASSWORD_POLICY)
    expect(e.message).to.equal('Password is too short (policy long: at least 16 characters)')
    expect(e.codeName).to.equal('ADM_ERR_PASSWORD_POLICY')
    await admin.deletePolicy('long')
    await expectAdminError(admin.getPolicy('long'), ErrorCode.ADM_ERR_NOT_FOUND)
  })

  it('explains ACL decisions and reads and verifies the audit log', async () => {
    const yes = await admin.checkAcl({ actor: 'admin', op: 'addprinc', target: 'x' })
    expect(yes.allowed).to.equal(true)
    expect(yes.decisions[0]!.rule!.text).to.match(/^admin@EXAMPLE\.TEST\s+\*e$/)
    const no = await admin.checkAcl({ actor: 'nobody', op: 'delprinc', target: 'x' })
    expect(no.allowed).to.equal(false)
    expect(no.decisions[0]!.rule).to.equal(undefined)
    const a = await admin.readAudit({ limit: 5 })
    expect(a.records).to.have.length(5)
    expect(a.records[4]!.op).to.equal('aclcheck')
    const v = await admin.readAudit({ verify: true, limit: 0 })
    expect(v.verification).to.include({ ok: true })
    expect(v.records).to.deep.equal([])
  })
})
