/** RunningKdc.exportKeytab: the service's live key versions in a 0600 keytab that verifies its tickets. */
import { mkdtemp, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { buildApReq } from '../../src/client/ap.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { readKeytab } from '../../src/krb/keytab.js'
import { ServiceVerifier } from '../../src/service/verify-ap-req.js'

describe('RunningKdc.exportKeytab', () => {
  let kdc: RunningKdc
  let dir: string
  before(async () => {
    kdc = await startKdc({ config: { kdf: { N: 1024 }, log: { console: false } } })
    await kdc.addPrincipal('bob', { password: 'pw-bob' })
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-export-'))
  })
  after(async () => {
    await kdc.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('writes every unretired kvno, mode 0600, and the keytab alone verifies tickets of both versions', async () => {
    const first = await kdc.addPrincipal('svc/export.test')
    const c = new KdcClient(kdc.realmFile)
    try {
      const tgt = await c.login('bob', 'pw-bob')
      const old = await c.getServiceTicket(tgt, 'svc/export.test')
      // Rotate: a second key version, the first kept (no retirement).
      const { randomKey } = await import('../../src/crypto/index.js')
      await kdc.db.update({ realm: kdc.realm, components: ['svc', 'export.test'] }, (r) => {
        r.keys.push({ kvno: 2, key: randomKey(), createdAt: Date.now() })
      }, 'test')
      const fresh = await c.getServiceTicket(tgt, 'svc/export.test')
      expect(old.ticket.kvno).to.equal(first.kvno)
      expect(fresh.ticket.kvno).to.equal(2)

      const file = path.join(dir, 'svc.keytab')
      await kdc.exportKeytab('svc/export.test', file)
      expect((await stat(file)).mode & 0o777).to.equal(0o600)
      const keytab = await readKeytab(file)
      expect(keytab.kvnos(`svc/export.test@${kdc.realm}`)).to.deep.equal([1, 2])
      const verifier = new ServiceVerifier({ keytab })
      for (const creds of [old, fresh]) expect(verifier.verify(buildApReq(creds).req).client).to.equal(`bob@${kdc.realm}`)
    } finally {
      c.close()
    }
  })

  it('refuses an unknown principal', async () => {
    const err = await kdc.exportKeytab('nobody/here', path.join(dir, 'x.keytab')).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    )
    expect(err?.code).to.equal('TESSERA_NOT_FOUND')
  })
})
