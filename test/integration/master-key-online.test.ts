/**
 * Master-key rotation with the KDC running (`kdc master-key STEP` through the realm's control
 * socket, src/admin/master-control.ts): add, use, reseal and retire while clients log in and
 * get service tickets, with no request failing; a password change and failed logins made during
 * the reseal are kept; after retire the stash holds the new key alone and the realm restarts;
 * a daemon killed with -9 in the middle of a reseal resumes it when it starts again.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { AUDIT_FILE, readAnchor, verifyAuditLog } from '../../src/admin/audit.js'
import { adminService } from '../../src/admin/listener.js'
import { CONTROL_DIR, CONTROL_SOCKET } from '../../src/admin/master-control.js'
import type { MasterKeyReport } from '../../src/admin/master-rotation.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { readStashKeys } from '../../src/db/master-key.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { runKdcCli } from '../helpers/kdc-cli-run.js'

const REALM = 'MKONLINE.TEST'
const CHILD = fileURLToPath(new URL('../helpers/master-online-child.ts', import.meta.url))
const CONFIG = { kdf: { N: 1024 }, ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false }, preauthFailureFloorMs: 5 }
const USERS = Array.from({ length: 24 }, (_, i) => `user${String(i).padStart(2, '0')}`)
const SERVICE = 'host/app.mkonline.test'
const NEW_PW = 'fresh horse battery 9'

const kdc = runKdcCli

/** `kdc master-key STEP --json` must succeed through the running KDC; its report. */
async function step(dir: string, name: string, ...extra: string[]): Promise<MasterKeyReport & { progress: string }> {
  const r = await kdc(['master-key', name, '--dir', dir, '--json', ...extra])
  expect(r.code, `${name}: ${r.err}`).to.equal(0)
  const report = JSON.parse(r.out.trim().split('\n').pop()!) as MasterKeyReport
  expect(report.via, name).to.equal('kdc')
  return { ...report, progress: r.err }
}

async function makeRealm(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  await initRealmDir({ dir, realm: REALM, adminPassword: 'admin password 1', config: resolveKdcConfig(CONFIG) })
  const k = await startKdc({ dir, config: CONFIG, log: false, admin: adminService({ masterKeyControl: false }) })
  try {
    for (const u of USERS) await k.addPrincipal(u, { password: `pw ${u}` })
    await k.addPrincipal('victim', { password: 'victim pw 1' })
    await k.addPrincipal(SERVICE)
  } finally {
    await k.close()
  }
  return dir
}

/** Clients logging in and getting service tickets until stopped (bounded: at most `max` rounds each). */
function runLoad(k: RunningKdc, clients: number, max: number): { stop(): Promise<{ ok: number; failed: string[] }> } {
  let stopping = false
  const failed: string[] = []
  let ok = 0
  const loops = Array.from({ length: clients }, async (_, n) => {
    const c = new KdcClient(k.realmFile)
    try {
      for (let i = 0; i < max && !stopping; i++) {
        const u = USERS[(n * 7 + i) % 10]!
        try {
          const tgt = await c.login(u, `pw ${u}`)
          await c.getServiceTicket(tgt, SERVICE)
          ok++
        } catch (e) {
          failed.push(`${u}: ${(e as Error).message}`)
        }
      }
    } finally {
      c.close()
    }
  })
  return {
    async stop() {
      stopping = true
      await Promise.all(loops)
      return { ok, failed }
    },
  }
}

describe('master-key rotation with the KDC running (integration)', function () {
  this.timeout(120000)
  const dirs: string[] = []
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true })
  })

  it('adds, uses, reseals and retires under client load: no request fails, changes made during the reseal are kept, the realm restarts on the new key alone', async () => {
    const dir = await makeRealm('tessera-mkon-')
    dirs.push(dir)
    let concurrent: Promise<unknown> | undefined
    let batches = 0
    let admin: AdminClient | undefined
    const adminConn = { c: undefined as KdcClient | undefined }
    let k = await startKdc({
      dir,
      config: CONFIG,
      log: false,
      admin: adminService({
        masterKeyControl: {
          // Once the reseal is under way, a password change and failed logins race with its next batches.
          afterBatch: async () => {
            if (++batches !== 2) return
            concurrent = Promise.all([
              ...['user15', 'user20', 'user23'].map((u) => admin!.call('cpw', { name: u, password: NEW_PW })),
              ...[1, 2, 3].map(() => adminConn.c!.login('victim', 'wrong password').then(
                () => {
                  throw new Error('a wrong password logged in')
                },
                () => 'refused',
              )),
            ])
          },
        },
      }),
    })
    try {
      adminConn.c = new KdcClient(k.realmFile)
      admin = await AdminClient.login(adminConn.c, 'admin', 'admin password 1')
      const load = runLoad(k, 3, 2000)

      const added = await step(dir, 'add')
      expect(added.kvno).to.equal(2)
      expect(added.stash).to.deep.equal([1, 2])
      expect((await stat(path.join(dir, REALM_FILES.stash))).mode & 0o777).to.equal(0o600)
      expect((await step(dir, 'use')).status.active).to.equal(2)
      const resealed = await step(dir, 'reseal', '--batch', '2')
      expect(resealed.status.reseal).to.equal(undefined)
      expect(resealed.total).to.equal(USERS.length + 1 + 1 + 4) // users, victim, service, krbtgt + kadmin/admin, kadmin/changepw, admin
      expect(resealed.progress).to.match(/reseal \d+\/\d+ principals \(100%\)/)
      expect(batches).to.be.greaterThan(5)
      await concurrent
      const retired = await step(dir, 'retire')
      expect(retired.retired).to.deep.equal([1])
      expect(retired.stash).to.deep.equal([2])
      expect(retired.status).to.deep.include({ active: 2, known: [2] })

      const { ok, failed } = await load.stop()
      expect(failed, failed.slice(0, 3).join('; ')).to.deep.equal([])
      expect(ok).to.be.greaterThan(10)
      // The running daemon serves the rotated realm: the changed passwords, new principals.
      await adminConn.c.login('user20', NEW_PW)
      await admin.call('addprinc', { name: 'late', password: 'evening tide 4' })
    } finally {
      adminConn.c?.close()
      await k.close()
    }

    // The stash holds kvno 2 alone (0600); the realm opens with it after a restart.
    const keys = await readStashKeys(path.join(dir, REALM_FILES.stash))
    expect(keys.map((x) => x.kvno)).to.deep.equal([2])
    expect((await stat(path.join(dir, REALM_FILES.stash))).mode & 0o777).to.equal(0o600)
    k = await startKdc({ dir, config: CONFIG, log: false })
    const c = new KdcClient(k.realmFile)
    try {
      expect(k.db.masterKeyStatus()).to.deep.include({ active: 2, known: [2] })
      for (const u of ['user15', 'user20', 'user23']) {
        const tgt = await c.login(u, NEW_PW)
        await c.getServiceTicket(tgt, SERVICE)
        const old = await c.login(u, `pw ${u}`).then(
          () => 'accepted',
          () => 'refused',
        )
        expect(old, u).to.equal('refused')
      }
      await c.login('user03', 'pw user03')
      await c.login('late', 'evening tide 4')
      // The failed logins made during the reseal were written, not overwritten by it.
      const victim = await k.db.get({ realm: REALM, components: ['victim'] })
      expect(victim?.failureCount).to.equal(3)
      // The audit log verifies and records each step, as carried out by the daemon.
      const v = await verifyAuditLog(path.join(dir, AUDIT_FILE), await readAnchor(k.db), k.db.auditEpochKeys())
      expect(v).to.deep.include({ ok: true })
      const admin2 = await AdminClient.login(c, 'admin', 'admin password 1')
      const audit = (await admin2.call('audit', { limit: 100 })) as { records: { actor: string; op: string; outcome: string }[] }
      const steps = audit.records.filter((r) => r.op.startsWith('master-key-')).map((r) => `${r.actor} ${r.op} ${r.outcome}`)
      expect(steps).to.deep.equal(['local:op master-key-add ok', 'local:op master-key-use ok', 'local:op master-key-reseal ok', 'local:op master-key-retire ok'])
    } finally {
      c.close()
      await k.close()
    }
  })

  it('resumes a reseal cut short by kill -9 of the daemon when the KDC starts again, and finishes it', async () => {
    const dir = await makeRealm('tessera-mkon9-')
    dirs.push(dir)
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    const saw = (what: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the KDC child never printed ${what} (${out.trim()})`)), 30000)
        const check = () => {
          if (out.includes(what)) {
            clearTimeout(timer)
            child.stdout.off('data', check)
            resolve()
          }
        }
        child.stdout.on('data', check)
        check()
      })
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString()
    })
    const exited = new Promise<string | null>((resolve) => child.on('exit', (_c, signal) => resolve(signal)))
    let resealRun: Promise<{ code: number; out: string; err: string }> | undefined
    try {
      await saw('ready')
      expect((await step(dir, 'add')).kvno).to.equal(2)
      expect((await step(dir, 'use')).status.active).to.equal(2)
      // The daemon's reseal hangs after its second batch: kill -9 it there.
      resealRun = kdc(['master-key', 'reseal', '--dir', dir, '--json'])
      await saw('BATCHES')
      child.kill('SIGKILL')
      expect(await exited).to.equal('SIGKILL')
    } finally {
      child.kill('SIGKILL')
    }
    const cut = await resealRun
    expect(cut.code).to.not.equal(0)
    expect(cut.err).to.match(/resumes when the kdc starts again/)

    // The marker says where it got to; a KDC started now resumes the reseal by itself.
    const k = await startKdc({ dir, config: CONFIG, log: false })
    const c = new KdcClient(k.realmFile)
    try {
      // Joins the resumed run, or (if it is over already) finds nothing left to reseal.
      const after = await step(dir, 'reseal')
      const total = USERS.length + 2 + 4
      expect(after.total).to.equal(total)
      expect(after.status.reseal).to.equal(undefined)
      const retired = await step(dir, 'retire')
      expect(retired.stash).to.deep.equal([2])
      for (const u of ['user00', 'user23']) await c.getServiceTicket(await c.login(u, `pw ${u}`), SERVICE)
      const admin = await AdminClient.login(c, 'admin', 'admin password 1')
      const audit = (await admin.call('audit', { limit: 100 })) as { records: { actor: string; op: string; details?: { resealed?: number } }[] }
      const runs = audit.records.filter((r) => r.op === 'master-key-reseal')
      // The KDC resumed by itself after the two batches of 2 that landed, not from the start.
      expect(runs[0]?.actor).to.equal('kdc:resume')
      expect(runs[0]?.details?.resealed).to.be.greaterThan(0).and.at.most(total - 4)
      expect(runs.slice(1).map((r) => r.details?.resealed)).to.satisfy((xs: unknown[]) => xs.every((x) => x === 0))
    } finally {
      c.close()
      await k.close()
    }
    // The control socket is removed when the KDC stops.
    const gone = await stat(path.join(dir, CONTROL_DIR, CONTROL_SOCKET)).then(
      () => false,
      () => true,
    )
    expect(gone).to.equal(true)
  })
})
