/** kadmin dump over the admin listener while the KDC serves (issue 11): a consistent snapshot, loaded into a new realm. */
import { copyFile, mkdir, mkdtemp, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { loadDump } from '../../src/admin/dump.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient, type AdminError } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { readStash } from '../../src/db/master-key.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const CONFIG = { ...FAST_CONFIG, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }

describe('admin dump while the KDC serves (integration)', function () {
  this.timeout(30_000)
  useProcessGuards()
  let dir: string
  let kdc: RunningKdc | undefined
  const clients: KdcClient[] = []

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-rdump-'))
    await initRealmDir({ dir: path.join(dir, 'a'), realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig(CONFIG) })
  })
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close()
    await kdc?.close()
    kdc = undefined
    await rm(dir, { recursive: true, force: true })
  })

  it('dumps in chunks while logins go on, and the dump loads into a new realm that serves the same principals', async () => {
    kdc = await startKdc({ dir: path.join(dir, 'a'), config: CONFIG, log: false })
    const kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    clients.push(kc)
    const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    // Enough principals that the dump needs several replies.
    for (let i = 0; i < 150; i++) await admin.addPrincipal({ name: `svc${i}/host.example.test`, randkey: true })
    await admin.addPrincipal({ name: 'erin', password: 'velvet-Harbor-58' })
    let stop = false
    const logins = (async () => {
      let n = 0
      while (!stop && n < 200) {
        await kc.login('erin', 'velvet-Harbor-58')
        n++
      }
      return n
    })()
    const file = path.join(dir, 'realm.dump')
    const progress: number[] = []
    const r = await admin.dump(file, (got) => progress.push(got))
    stop = true
    expect(await logins).to.be.greaterThan(0)
    expect(progress.length, 'several chunks').to.be.greaterThan(1)
    expect(r.entries).to.be.greaterThan(150)
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    await kdc.close()
    kdc = undefined
    // Restore into a new realm directory with the same master key.
    const b = path.join(dir, 'b')
    await mkdir(b, { mode: 0o700 })
    await copyFile(path.join(dir, 'a', REALM_FILES.stash), path.join(b, REALM_FILES.stash))
    const masterKey = await readStash(path.join(b, REALM_FILES.stash))
    await loadDump({ file, dir: b, masterKey, actor: { kind: 'local', user: 'test' } })
    kdc = await startKdc({ dir: b, config: CONFIG, log: false })
    const kc2 = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    clients.push(kc2)
    await kc2.login('erin', 'velvet-Harbor-58')
    const admin2 = await AdminClient.login(kc2, 'admin', ADMIN_PASSWORD)
    expect((await admin2.listPrincipals('svc*')).length).to.equal(150)
  })

  it('refuses a dump to a caller without i, l and e, and a session to anyone but its owner', async () => {
    kdc = await startKdc({ dir: path.join(dir, 'a'), config: CONFIG, log: false })
    const kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    clients.push(kc)
    const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.addPrincipal({ name: 'frank', password: 'copper-Meadow-21' })
    const frank = await AdminClient.login(kc, 'frank', 'copper-Meadow-21')
    try {
      await frank.call('dump', {})
      expect.fail('frank may not dump')
    } catch (e) {
      expect((e as AdminError).code).to.equal(ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    }
    for (let i = 0; i < 150; i++) await admin.addPrincipal({ name: `svc${i}/h`, randkey: true })
    const first = (await admin.call('dump', {})) as { session: string; size: number }
    expect(first.size).to.be.greaterThan(48 * 1024)
    try {
      await frank.call('dump', { session: first.session, offset: 0 })
      expect.fail('not frank’s session')
    } catch (e) {
      expect((e as AdminError).code).to.equal(ErrorCode.ADM_ERR_NOT_FOUND)
    }
  })
})
