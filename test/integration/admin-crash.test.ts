/**
 * kill -9 of the daemon in the middle of a stream of admin changes (issue 11): the KDC runs
 * as a child process on an on-disk realm (test/helpers/admin-kdc-child.ts); the parent
 * streams addprinc / cpw / modprinc through one AdminClient, SIGKILLs the child at a random
 * point, restarts it, and checks that every acknowledged change is there, that every
 * principal reads back whole (getprinc, and ktadd unseals its keys), and that the audit log
 * verifies against the database anchor after the restart's recovery. Bounded: ROUNDS
 * rounds, each killed within KILL_WINDOW_MS of its start.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { loadRealmFile } from '../../src/krb/realm-file.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'

// biome-ignore lint/suspicious/noExplicitAny: results are free-form wire values
type J = any

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CHILD = fileURLToPath(new URL('../helpers/admin-kdc-child.ts', import.meta.url))
const ROUNDS = 5
/** The kill comes at a random time in [KILL_MIN_MS, KILL_MIN_MS + KILL_WINDOW_MS) after the stream starts. */
const KILL_MIN_MS = 30
const KILL_WINDOW_MS = 400
/** Requests in flight at once (pipelined on the one connection). */
const WORKERS = 3
const HOUR = 3600_000

/** What the parent was told had happened. */
interface Acked {
  /** principal -> the highest kvno an acknowledged reply reported. */
  kvno: Map<string, number>
  /** principal -> the maxLife of the last acknowledged modprinc. */
  maxLife: Map<string, number>
}

describe('admin changes survive kill -9 of the KDC (integration)', function () {
  this.timeout(90_000)
  let tmp: string
  let dir: string
  let child: ChildProcess | undefined

  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'tessera-admin-crash-'))
    dir = path.join(tmp, 'realm')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig({ ...FAST_CONFIG, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }) })
  })
  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await rm(tmp, { recursive: true, force: true })
  })

  /** Start the child KDC; resolves once it listens, with a client on its realm file. */
  async function startChild(): Promise<KdcClient> {
    const c = spawn(process.execPath, ['--import', 'tsx', CHILD, dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    child = c
    let err = ''
    c.stderr!.on('data', (d: Buffer) => {
      err += d.toString()
    })
    await new Promise<void>((resolve, reject) => {
      let out = ''
      c.stdout!.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('ready\n')) resolve()
      })
      c.once('exit', (code, signal) => reject(new Error(`the KDC exited before listening (${code}/${signal}): ${err}`)))
    })
    return new KdcClient(await loadRealmFile(path.join(dir, 'realm.json')), { connectTimeoutMs: 2000, timeoutMs: 5000 })
  }

  async function kill9(): Promise<void> {
    const c = child!
    if (c.exitCode !== null || c.signalCode !== null) return
    const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()))
    c.kill('SIGKILL')
    await gone
  }

  /** addprinc / cpw / modprinc until the KDC goes away; records each acknowledged change. */
  async function stream(admin: AdminClient, round: number, acked: Acked, stop: { stopped: boolean }): Promise<number> {
    let n = 0
    const known: string[] = [...acked.kvno.keys()]
    const worker = async (w: number) => {
      for (let i = 0; !stop.stopped; i++) {
        const k = n++
        try {
          if (k % 3 === 0 || known.length === 0) {
            const name = `r${round}-w${w}-p${i}`
            const r = (await admin.call('addprinc', { name, randkey: true })) as J
            acked.kvno.set(name, r.kvno)
            known.push(name)
          } else if (k % 3 === 1) {
            const name = known[k % known.length]!
            const r = (await admin.call('cpw', { name, randkey: true, keepold: k % 2 === 0 })) as J
            acked.kvno.set(name, Math.max(acked.kvno.get(name) ?? 0, r.kvno))
          } else {
            const name = known[k % known.length]!
            const maxLife = HOUR + round * 1000 + k
            await admin.call('modprinc', { name, maxLife })
            acked.maxLife.set(name, maxLife)
          }
        } catch {
          // The KDC is gone (or going): the change was not acknowledged.
          return
        }
      }
    }
    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)))
    return n
  }

  it(`loses no acknowledged change and leaves no half-written principal, over ${ROUNDS} kills`, async () => {
    const acked: Acked = { kvno: new Map(), maxLife: new Map() }
    for (let round = 0; round < ROUNDS; round++) {
      const kc = await startChild()
      try {
        const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
        await check(admin, acked, round)
        const stop = { stopped: false }
        const streaming = stream(admin, round, acked, stop)
        await new Promise((resolve) => setTimeout(resolve, KILL_MIN_MS + Math.floor(Math.random() * KILL_WINDOW_MS)))
        await kill9()
        stop.stopped = true
        const sent = await streaming
        expect(sent, `round ${round}: the stream ran`).to.be.greaterThan(0)
      } finally {
        kc.close()
        await kill9()
      }
    }
    expect(acked.kvno.size, 'some changes were acknowledged').to.be.greaterThan(ROUNDS)
    const kc = await startChild()
    try {
      await check(await AdminClient.login(kc, 'admin', ADMIN_PASSWORD), acked, ROUNDS)
    } finally {
      kc.close()
      child!.kill('SIGTERM')
    }
  })

  /** After a restart: every acknowledged change present, every principal whole, the audit log verified. */
  async function check(admin: AdminClient, acked: Acked, round: number): Promise<void> {
    const names = new Set((await admin.call('listprincs', {})) as string[])
    for (const [name, kvno] of acked.kvno) {
      expect(names.has(`${name}@${REALM}`), `round ${round}: acknowledged principal ${name} is there`).to.equal(true)
      const view = (await admin.call('getprinc', { name })) as J
      expect(view.kvno, `round ${round}: ${name} has at least the acknowledged kvno`).to.be.at.least(kvno)
      const want = acked.maxLife.get(name)
      if (want !== undefined) expect(view.maxLife, `round ${round}: ${name} keeps its acknowledged maxLife (or a later one)`).to.be.at.least(want)
    }
    for (const full of names) {
      const name = full.slice(0, -(REALM.length + 1))
      const view = (await admin.call('getprinc', { name })) as J
      expect(view.keys.length, `${name} has keys`).to.be.greaterThan(0)
      expect(view.keys.at(-1).kvno).to.equal(view.kvno)
      if (name.startsWith('krbtgt/') || name.startsWith('kadmin/')) continue
      // ktadd unseals every key version still valid: none is half-written.
      const kt = (await admin.call('ktadd', { name })) as J
      expect(kt.kvno).to.equal(view.kvno)
      for (const k of kt.keys) expect(k.key.length, `${name} kvno ${k.kvno}`).to.equal(32)
    }
    const { verification } = (await admin.call('audit', { limit: 1, verify: true })) as J
    expect(verification.ok, `round ${round}: ${verification.problem}`).to.equal(true)
  }
})
