/**
 * Master-key rotation of a realm directory (kdc master-key add / use / reseal / retire), with
 * the reseal killed (kill -9, a child process) in the middle and then resumed. Afterwards
 * every principal's keys open under the new key alone, logins work against the real daemon,
 * the stash holds only the new key (0600), and the audit log verifies.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { AUDIT_FILE, readAnchor, verifyAuditLog } from '../../src/admin/audit.js'
import { runMasterKeyStep } from '../../src/admin/master-rotation.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { main as kdcMain } from '../../src/cli/kdc.js'
import { readStashKeys } from '../../src/db/master-key.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'

const REALM = 'MKROT.TEST'
const CHILD = fileURLToPath(new URL('../helpers/master-reseal-child.ts', import.meta.url))
const CONFIG = { kdf: { N: 1024 }, ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false } }
const USERS = Array.from({ length: 14 }, (_, i) => `user${String(i).padStart(2, '0')}`)

async function withDb<T>(dir: string, fn: (db: PrincipalDb) => Promise<T>): Promise<T> {
  const keys = await readStashKeys(path.join(dir, REALM_FILES.stash))
  const db = await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKeys: keys })
  try {
    return await fn(db)
  } finally {
    await db.close()
  }
}

/** Run the reseal child until it has written two batches, then kill -9 it. */
function resealAndKill(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error('the reseal child never reported its batches'))
    }, 30000)
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString()
      if (out.includes('BATCHES')) child.kill('SIGKILL')
      if (out.includes('DONE')) reject(new Error('the reseal finished before it was killed'))
    })
    child.on('exit', (_code, signal) => {
      clearTimeout(timer)
      if (signal === 'SIGKILL') resolve()
      else reject(new Error(`the reseal child exited by itself (${out.trim()})`))
    })
  })
}

describe('master-key rotation (integration)', function () {
  this.timeout(120000)
  let dir: string

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-mkrot-'))
    await initRealmDir({ dir, realm: REALM, adminPassword: 'admin password 1', config: resolveKdcConfig(CONFIG) })
    // Principals made through the admin listener, so the audit log has records from before the rotation.
    const kdc = await startKdc({ dir, config: CONFIG, log: false })
    const c = new KdcClient(kdc.realmFile)
    try {
      const admin = await AdminClient.login(c, 'admin', 'admin password 1')
      for (const u of USERS) await admin.call('addprinc', { name: u, password: 'correct horse 1' })
      await admin.call('addprinc', { name: 'host/app.mkrot.test', randkey: true })
      await admin.call('cpw', { name: 'user00', password: 'correct horse 2' })
    } finally {
      c.close()
      await kdc.close()
    }
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('adds, uses, reseals through a kill -9, resumes and retires; every key opens, logins work, the audit log verifies', async () => {
    const stash = path.join(dir, REALM_FILES.stash)
    const before = await withDb(dir, async (db) => {
      const names = await db.list()
      const keys = new Map<string, string>()
      for (const id of names) keys.set(JSON.stringify(id), Buffer.from((await db.get(id))!.keys.at(-1)!.key).toString('hex'))
      return keys
    })

    // add: the stash holds both keys, 0600; the KDC runs with both.
    const added = await runMasterKeyStep({ dir, step: 'add', user: 'op' })
    expect(added.kvno).to.equal(2)
    expect(added.stash).to.deep.equal([1, 2])
    expect((await stat(stash)).mode & 0o777).to.equal(0o600)
    // use: new seals are under kvno 2; a KDC started now still opens records sealed under kvno 1.
    expect((await runMasterKeyStep({ dir, step: 'use', user: 'op' })).status.active).to.equal(2)
    {
      const kdc = await startKdc({ dir, config: CONFIG, log: false })
      const c = new KdcClient(kdc.realmFile)
      try {
        await c.login('user03', 'correct horse 1')
        const admin = await AdminClient.login(c, 'admin', 'admin password 1')
        await admin.call('cpw', { name: 'user05', password: 'correct horse 2' })
      } finally {
        c.close()
        await kdc.close()
      }
    }

    // reseal, killed after its second batch: the marker records where it got to.
    await resealAndKill(dir)
    const mid = await withDb(dir, async (db) => db.masterKeyStatus())
    expect(mid.reseal?.target).to.equal(2)
    expect(mid.reseal?.after).to.be.a('string')
    // The stash still holds both keys: a KDC could run now (no record is unreadable).
    expect((await readStashKeys(stash)).map((k) => k.kvno)).to.deep.equal([1, 2])
    // retire is refused while the reseal is unfinished, and removes nothing.
    const refused = await runMasterKeyStep({ dir, step: 'retire', user: 'op' }).then(
      () => undefined,
      (e: { code?: string }) => e,
    )
    expect(refused?.code).to.equal('TESSERA_EXISTS')
    expect((await readStashKeys(stash)).map((k) => k.kvno)).to.deep.equal([1, 2])

    // resume (through the CLI, as an operator would): it continues after the marker, not from the start.
    const out: string[] = []
    const sink = { write: (s: string) => out.push(s) } as unknown as NodeJS.WritableStream
    expect(await kdcMain(['master-key', 'reseal', '--dir', dir, '--json', '--batch', '3'], { stdout: sink, stderr: sink, env: { USER: 'op' } })).to.equal(0)
    const resumed = JSON.parse(out.find((l) => l.startsWith('{'))!) as { resealed: number; total: number; status: { reseal?: unknown } }
    expect(resumed.total).to.equal(before.size)
    expect(resumed.resealed).to.be.greaterThan(0).and.lessThan(before.size - 5)
    expect(resumed.status.reseal).to.equal(undefined)
    expect(out.join('')).to.match(/reseal \d+\/\d+ principals \(100%\)/)

    // retire: the stash holds only kvno 2, still 0600.
    const retired = await runMasterKeyStep({ dir, step: 'retire', user: 'op' })
    expect(retired.retired).to.deep.equal([1])
    expect(retired.stash).to.deep.equal([2])
    expect((await stat(stash)).mode & 0o777).to.equal(0o600)

    // Every principal's keys open under kvno 2 alone, unchanged (user05's changed while kvno 2 was in use).
    await withDb(dir, async (db) => {
      expect(db.masterKeyStatus()).to.deep.include({ active: 2, known: [2] })
      for (const id of await db.list()) {
        const k = Buffer.from((await db.get(id))!.keys.at(-1)!.key).toString('hex')
        if (id.components[0] !== 'user05') expect(k, JSON.stringify(id)).to.equal(before.get(JSON.stringify(id)))
      }
      // The audit log verifies with every audit epoch's key (the database keeps them), and records the steps.
      const v = await verifyAuditLog(path.join(dir, AUDIT_FILE), await readAnchor(db), db.auditEpochKeys())
      expect(v).to.deep.include({ ok: true })
      expect(v.records).to.be.greaterThan(USERS.length + 4)
    })

    // The daemon on the rotated realm: logins, service tickets, admin; its audit log still verifies.
    const kdc = await startKdc({ dir, config: CONFIG, log: false })
    const c = new KdcClient(kdc.realmFile)
    try {
      for (const [u, pw] of [['user00', 'correct horse 2'], ['user05', 'correct horse 2'], ['user13', 'correct horse 1']] as const) {
        const tgt = await c.login(u, pw)
        await c.getServiceTicket(tgt, 'host/app.mkrot.test')
      }
      const admin = await AdminClient.login(c, 'admin', 'admin password 1')
      await admin.call('addprinc', { name: 'late', password: 'another horse 7' })
      const r = (await admin.call('audit', { verify: true, limit: 1 })) as { verification: { ok: boolean } }
      expect(r.verification.ok).to.equal(true)
    } finally {
      c.close()
      await kdc.close()
    }
  })
})
