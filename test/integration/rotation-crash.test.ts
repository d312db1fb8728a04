/**
 * kill -9 in the middle of a rotation schedule (issue 12): a child-process KDC on an on-disk
 * realm runs a fast schedule and is killed with SIGKILL at random points, a bounded number of
 * times. After every kill the principal still has a current key that opens, and at the end
 * the KDC issues tickets for it.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { adminService } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { sealingKeyAt } from '../../src/db/key-states.js'
import { readStash } from '../../src/db/master-key.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { DEFAULT_KDC_CONFIG } from '../../src/kdc/config.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { ADMIN_PASSWORD, REALM } from '../helpers/kdc-helpers.js'

const ROUNDS = 6
const SVC = 'HTTP/crash.example.test'
const CONFIG = { ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false }, kdf: { N: 1024 } }

function startChild(dir: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join('test', 'helpers', 'rotation-child.ts'), dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString()
    })
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('ready\n')) resolve(child)
    })
    child.once('exit', (code, signal) => reject(new Error(`child KDC exited early (${code}/${signal}): ${err}`)))
  })
}

function kill9(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.removeAllListeners('exit')
    child.once('exit', () => resolve())
    child.kill('SIGKILL')
  })
}

describe('key rotation across kill -9 (integration)', function () {
  this.timeout(120_000)
  let tmp: string
  let child: ChildProcess | undefined

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-rotation-crash-'))
  })
  after(async () => {
    if (child !== undefined) await kill9(child)
    await rm(tmp, { recursive: true, force: true })
  })

  it('never leaves the principal without a usable key, whenever the KDC is killed', async () => {
    const dir = path.join(tmp, 'realm')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: { ...DEFAULT_KDC_CONFIG, ports: CONFIG.ports, kdf: { ...DEFAULT_KDC_CONFIG.kdf, N: 1024 } } })
    let kdc = await startKdc({ dir, config: CONFIG, admin: adminService({ minRotateEveryMs: 1 }) })
    let kc = new KdcClient(kdc.realmFile)
    const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.call('addprinc', { name: SVC, randkey: true, maxLife: 15 })
    // A rotation every 60 ms: stage 20 ms ahead, retire 10 ms after, purge once past the 15 ms tickets.
    await admin.call('modprinc', { name: SVC, rotateEvery: 60, stageAhead: 20, grace: 10 })
    kc.close()
    await kdc.close()

    const masterKey = await readStash(path.join(dir, REALM_FILES.stash))
    const kvnos = new Set<number>()
    try {
      for (let round = 0; round < ROUNDS; round++) {
        child = await startChild(dir)
        await new Promise((r) => setTimeout(r, randomInt(20, 250)))
        await kill9(child)
        child = undefined
        const db = await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKey })
        try {
          // Every key unseals (get() opens them all) and one of them is current now.
          const rec = await db.get({ realm: REALM, components: SVC.split('/') })
          expect(rec, `round ${round}`).to.not.equal(undefined)
          const now = Date.now()
          const current = sealingKeyAt(rec!.keys, now)
          expect(current, `round ${round}: a current key`).to.not.equal(undefined)
          expect(current!.retiresAt === undefined || current!.retiresAt > now, `round ${round}: the current key is not retired`).to.equal(true)
          for (const k of rec!.keys) kvnos.add(k.kvno)
        } finally {
          await db.close()
        }
      }
    } finally {
      masterKey.fill(0)
    }
    expect(Math.max(...kvnos), 'the schedule ran between the kills').to.be.greaterThan(ROUNDS)

    // And the KDC serves tickets for it afterwards.
    kdc = await startKdc({ dir, config: CONFIG })
    kc = new KdcClient(kdc.realmFile)
    try {
      await AdminClient.login(kc, 'admin', ADMIN_PASSWORD).then((a) => a.call('modprinc', { name: SVC, rotateEvery: null }))
      await AdminClient.login(kc, 'admin', ADMIN_PASSWORD).then((a) => a.call('modprinc', { name: SVC, maxLife: 3600_000 }))
      const tgt = await kc.login('admin', ADMIN_PASSWORD)
      const t = await kc.getServiceTicket(tgt, SVC)
      expect(t.ticket.kvno).to.be.greaterThan(0)
      const audit = (await AdminClient.login(kc, 'admin', ADMIN_PASSWORD).then((a) => a.call('audit', { verify: true }))) as {
        verification: { ok: boolean }
      }
      expect(audit.verification.ok, 'the audit log verifies after the kills').to.equal(true)
    } finally {
      kc.close()
      await kdc.close()
    }
  })
})
