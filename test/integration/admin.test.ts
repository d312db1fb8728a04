/**
 * The admin service over the wire (PROTOCOL.md §8.5): a real KDC on port 0 with its admin
 * listener, AdminClient logging in with a password (an initial kadmin ticket).
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { AdminBody, type AdminReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { sealPart } from '../../src/krb/parts.js'
import { connectChannel } from '../../src/wire/client.js'
import { ADMIN_PASSWORD, expectKrb, expectKrbError, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'
import { expectAdminError } from '../helpers/refusals.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('admin service (integration)', function () {
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

  it('adds, reads, lists and changes principals; the new user logs in', async () => {
    const added = (await admin.call('addprinc', { name: 'bob', password: 'tulip-Gravel-41' })) as { kvno: number; keys: unknown[] }
    expect(added.kvno).to.equal(1)
    expect(added.keys, 'no key material for a password principal').to.deep.equal([])
    const view = (await admin.call('getprinc', { name: 'bob' })) as { name: string; kvno: number; keys: { kind: string }[] }
    expect(view.name).to.equal(`bob@${REALM}`)
    expect(view.keys[0]!.kind).to.equal('password')
    expect(JSON.stringify(view)).to.not.match(/"key"/)
    const names = (await admin.call('listprincs', { glob: 'b*' })) as string[]
    expect(names).to.include(`bob@${REALM}`)
    await kc.login('bob', 'tulip-Gravel-41')
    const cpw = (await admin.call('cpw', { name: 'bob', password: 'otter-Lamp-77' })) as { kvno: number }
    expect(cpw.kvno).to.equal(2)
    await expectKrb(kc.login('bob', 'tulip-Gravel-41'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    await kc.login('bob', 'otter-Lamp-77')
  })

  it('extracts a service key (ktadd) only through the admin ticket, sealed in the reply', async () => {
    await admin.call('addprinc', { name: 'HTTP/www.example.test', randkey: true })
    const r = (await admin.call('ktadd', { name: 'HTTP/www.example.test' })) as { keys: { kvno: number; key: Uint8Array }[] }
    expect(r.keys).to.have.length(1)
    expect(r.keys[0]!.key).to.be.instanceOf(Uint8Array)
    expect(r.keys[0]!.key.length).to.equal(32)
  })

  it('lets a user change its own password through kadmin/changepw, and nothing else', async () => {
    await admin.call('addprinc', { name: 'carol', password: 'maple-Stone-12' })
    const self = await AdminClient.login(kc, 'carol', 'maple-Stone-12', 'kadmin/changepw')
    await self.call('cpw', { name: 'carol', password: 'cedar-River-90' })
    await kc.login('carol', 'cedar-River-90')
    await expectAdminError(self.call('cpw', { name: 'bob', password: 'hijacked password' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    await expectAdminError(self.call('addprinc', { name: 'mallory', password: 'grape-Moon-55' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
  })

  it('refuses a user without ACL rights before telling whether a principal exists', async () => {
    await admin.call('addprinc', { name: 'dave', password: 'quartz-Field-33' })
    const dave = await AdminClient.login(kc, 'dave', 'quartz-Field-33')
    const a = await expectAdminError(dave.call('getprinc', { name: 'bob' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    const b = await expectAdminError(dave.call('getprinc', { name: 'nobody-at-all' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    expect(a.message.replaceAll('bob', 'X')).to.equal(b.message.replaceAll('nobody-at-all', 'X'))
    await expectAdminError(dave.call('addprinc', { name: 'eve', randkey: true }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    // its own record it may read
    const own = (await dave.call('getprinc', { name: 'dave' })) as { name: string }
    expect(own.name).to.equal(`dave@${REALM}`)
    // and nothing changed
    await expectAdminError(admin.call('getprinc', { name: 'eve' }), ErrorCode.ADM_ERR_NOT_FOUND)
  })

  it('answers an unknown operation and bad arguments with ADM_ERR_BAD_REQUEST, and keeps serving', async () => {
    await expectAdminError(admin.call('format_disk', {}), ErrorCode.ADM_ERR_BAD_REQUEST)
    await expectAdminError(admin.call('getprinc', { name: 42 }), ErrorCode.ADM_ERR_BAD_REQUEST)
    await expectAdminError(admin.call('addprinc', { name: 'x', password: 'a long password', bogus: 1 }), ErrorCode.ADM_ERR_BAD_REQUEST)
    await expectAdminError(admin.call('addprinc', { name: 'x\u200b', randkey: true }), ErrorCode.ADM_ERR_BAD_REQUEST)
    expect(((await admin.call('getprinc', { name: 'admin' })) as { name: string }).name).to.equal(`admin@${REALM}`)
  })

  it('pages through the whole audit log with after + limit, every record once, in order', async () => {
    const seqs: number[] = []
    let after = 0
    for (let page = 0; page < 200; page++) {
      const r = (await admin.call('audit', { after, limit: 7 })) as { records: { seq: number }[] }
      if (r.records.length === 0) break
      expect(r.records.length).to.be.at.most(7)
      for (const x of r.records) seqs.push(x.seq)
      after = r.records[r.records.length - 1]!.seq
    }
    expect(seqs.length).to.be.greaterThan(10)
    expect(seqs).to.deep.equal(seqs.map((_, i) => seqs[0]! + i))
  })

  it('protects krbtgt and kadmin/* from deletion', async () => {
    await expectAdminError(admin.call('delprinc', { name: `krbtgt/${REALM}` }), ErrorCode.ADM_ERR_PROTECTED)
    await expectAdminError(admin.call('delprinc', { name: 'kadmin/admin' }), ErrorCode.ADM_ERR_PROTECTED)
  })

  it('refuses a replayed ADMIN_REQ (34) and a ticket that is not for kadmin (35), over a raw channel', async () => {
    const ch = await connectChannel({
      host: kdc.addresses.admin.host,
      port: kdc.addresses.admin.port,
      serverKey: kdc.realmFile.transportKey,
      connectTimeoutMs: 2000,
      handshakeTimeoutMs: 2000,
    })
    try {
      const creds = admin.creds
      const auth = sealPart(creds.sessionKey, KeyUsage.ADMIN_REQ_BODY, AdminBody, {
        crealm: creds.crealm,
        cname: creds.cname,
        ctime: Date.now(),
        cusec: 0,
        op: 'listpols',
        args: {},
      })
      const req: AdminReq = { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: creds.ticket, auth }
      expect((await ch.request(req)).t).to.equal(MsgType.ADMIN_REP)
      expectKrbError(await ch.request(req), ErrorCode.KRB_AP_ERR_REPEAT)
      const tgt = await kc.login('admin', ADMIN_PASSWORD)
      expectKrbError(await ch.request({ ...req, ticket: tgt.ticket }), ErrorCode.KRB_AP_ERR_NOT_US)
    } finally {
      ch.close()
    }
  })
})
