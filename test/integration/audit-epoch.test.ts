/**
 * Audit epochs (security review of issue 12, finding 7): `kdc master-key use` starts a new audit
 * key derived from the new master key, announced by an `audit-epoch` line under the old key. The
 * log verifies across the switch (offline, and with the KDC running through its control socket),
 * a line after the switch edited, or forged under the key of the retired master key, fails
 * verification (even with the database's head rewritten to match: it is not sealed), and dumps
 * made before and after the switch load with the stash that made them, while a dump re-MAC'd
 * under the old master key's dump key does not.
 */
import { createHash, createHmac } from 'node:crypto'
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { AUDIT_FILE, AUDIT_HEAD_KEY, auditKey, dumpMacKey, verifyAuditLog } from '../../src/admin/audit.js'
import type { MasterKeyReport } from '../../src/admin/master-rotation.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { readStashKeys } from '../../src/db/master-key.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { runKadminCli, runKdcCli } from '../helpers/kdc-cli-run.js'

const REALM = 'EPOCH.TEST'
const ADMIN_PW = 'admin password 1'
const CONFIG = { kdf: { N: 1024 }, ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false } }

type Rec = Record<string, unknown> & { seq: number; op: string; h: string; prev: string }

/** The record fields in the log's canonical order (src/admin/audit.ts). */
const FIELDS = ['seq', 'time', 'actor', 'op', 'target', 'newTarget', 'kvno', 'kvnos', 'outcome', 'reason', 'code', 'peer', 'details', 'prev']

/** `r` as a line whose `h` is its HMAC under `key`: what someone holding `key` can write. */
function macLine(r: Rec, key: Uint8Array): { line: string; h: string } {
  const o: Record<string, unknown> = {}
  for (const f of FIELDS) if (r[f] !== undefined) o[f] = r[f]
  const body = JSON.stringify(o)
  const h = createHmac('sha256', key).update(body, 'utf8').digest('hex')
  return { line: `${body.slice(0, -1)},"h":${JSON.stringify(h)}}`, h }
}

const kadmin = runKadminCli

async function logLines(dir: string): Promise<string[]> {
  return (await readFile(path.join(dir, AUDIT_FILE), 'utf8')).split('\n').filter((l) => l.length > 0)
}

/** Replace the log and the database's head (a plain LevelDB record, not sealed: anyone who can write db/ can set it). */
async function plant(dir: string, lines: string[]): Promise<void> {
  await writeFile(path.join(dir, AUDIT_FILE), lines.map((l) => `${l}\n`).join(''), { mode: 0o600 })
  const keys = await readStashKeys(path.join(dir, REALM_FILES.stash))
  const db = await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKeys: keys })
  try {
    await db.putAdminMeta([{ key: AUDIT_HEAD_KEY, value: Buffer.from(lines[lines.length - 1]!, 'utf8') }])
  } finally {
    await db.close()
  }
}

describe('audit epochs across a master-key rotation (integration)', function () {
  this.timeout(60_000)
  let tmp: string
  let env: NodeJS.ProcessEnv

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-epoch-'))
    env = { HOME: tmp, USER: 'op' }
  })
  after(async () => {
    await rm(tmp, { recursive: true, force: true })
  })

  async function realm(name: string): Promise<{ dir: string; first: Uint8Array }> {
    const dir = path.join(tmp, name)
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PW, config: resolveKdcConfig(CONFIG) })
    const first = (await readStashKeys(path.join(dir, REALM_FILES.stash)))[0]!.key
    return { dir, first }
  }

  const local = (dir: string, ...argv: string[]) => kadmin(['--local', '--dir', dir, ...argv], env)
  async function ok(p: Promise<{ code: number; out: string; err: string }>): Promise<string> {
    const r = await p
    expect(r.code, r.err).to.equal(0)
    return r.out
  }
  async function offlineStep(dir: string, step: string): Promise<MasterKeyReport> {
    const r = await runKdcCli(['master-key', step, '--dir', dir, '--json'])
    expect(r.code, `${step}: ${r.err}`).to.equal(0)
    const report = JSON.parse(r.out.trim().split('\n').pop()!) as MasterKeyReport
    expect(report.via).to.equal('local')
    return report
  }
  /** The log from the `audit-epoch` line on: its index, and that the lines after it are not under the first master key's audit key. */
  async function switchedAt(dir: string, first: Uint8Array): Promise<number> {
    const lines = await logLines(dir)
    const at = lines.findIndex((l) => (JSON.parse(l) as Rec).op === 'audit-epoch')
    expect(at, 'an audit-epoch line announces the switch').to.be.greaterThan(0)
    const sw = JSON.parse(lines[at]!) as Rec
    expect(sw.details).to.deep.include({ epoch: 1, kvno: 2 })
    // The switch line itself is under the old key, chained as usual; the next one is not.
    expect(macLine(sw, auditKey(first)).h).to.equal(sw.h)
    expect((JSON.parse(lines[at - 1]!) as Rec).h).to.equal(sw.prev)
    for (const l of lines.slice(at + 1)) {
      const r = JSON.parse(l) as Rec
      expect(macLine(r, auditKey(first)).h, `seq ${r.seq} is not MACed with the old master key`).to.not.equal(r.h)
    }
    // And the old key alone does not verify the log (it stops at the switch it cannot confirm).
    const v = await verifyAuditLog(path.join(dir, AUDIT_FILE), undefined, auditKey(first))
    expect(v).to.include({ ok: false, firstBadLine: at + 1 })
    return at
  }

  it('offline: the log verifies across add/use/reseal/retire, and the lines after `use` are MACed under the new epoch key', async () => {
    const { dir, first } = await realm('offline')
    await ok(local(dir, 'addprinc', 'host/a.epoch.test', '--randkey'))
    await offlineStep(dir, 'add')
    const use = await offlineStep(dir, 'use')
    expect(use.auditEpoch).to.equal(1)
    await ok(local(dir, 'addprinc', 'host/b.epoch.test', '--randkey'))
    const at = await switchedAt(dir, first)
    expect((JSON.parse((await logLines(dir))[at + 1]!) as Rec).op).to.equal('master-key-use')
    await offlineStep(dir, 'reseal')
    await offlineStep(dir, 'retire')
    await ok(local(dir, 'addprinc', 'host/c.epoch.test', '--randkey'))
    const v = await local(dir, 'audit', '--verify', '--json')
    expect(v.code, v.err).to.equal(0)
    expect(JSON.parse(v.out)).to.deep.include({ ok: true })
    // A second use of the active key starts no epoch.
    await offlineStep(dir, 'use')
    expect((await logLines(dir)).filter((l) => (JSON.parse(l) as Rec).op === 'audit-epoch')).to.have.length(1)
    expect((await local(dir, 'audit', '--verify')).code).to.equal(0)
  })

  it('online: the log verifies across a switch carried out by the running KDC through its control socket', async () => {
    const { dir, first } = await realm('online')
    const k = await startKdc({ dir, config: CONFIG, log: false })
    const c = new KdcClient(k.realmFile)
    try {
      const admin = await AdminClient.login(c, 'admin', ADMIN_PW)
      await admin.call('addprinc', { name: 'host/a.epoch.test', randkey: true })
      for (const s of ['add', 'use']) {
        const r = await runKdcCli(['master-key', s, '--dir', dir, '--json'])
        expect(r.code, r.err).to.equal(0)
        expect((JSON.parse(r.out.trim().split('\n').pop()!) as MasterKeyReport).via).to.equal('kdc')
      }
      // Requests after the switch, on the admin connection opened before it.
      await admin.call('addprinc', { name: 'host/b.epoch.test', randkey: true })
      await admin.call('getprinc', { name: 'host/b.epoch.test' })
      const v = (await admin.call('audit', { verify: true, limit: 0 })) as { verification: { ok: boolean; problem?: string } }
      expect(v.verification.ok, v.verification.problem).to.equal(true)
      await switchedAt(dir, first)
      for (const s of ['reseal', 'retire']) {
        const r = await runKdcCli(['master-key', s, '--dir', dir])
        expect(r.code, r.err).to.equal(0)
      }
      const again = (await admin.call('audit', { verify: true, limit: 0 })) as { verification: { ok: boolean; problem?: string } }
      expect(again.verification.ok, again.verification.problem).to.equal(true)
    } finally {
      c.close()
      await k.close()
    }
    // And offline, with the stash that is left (kvno 2 alone).
    const v = await local(dir, 'audit', '--verify')
    expect(v.code, v.err).to.equal(0)
  })

  it('after the switch, an edited line, a line forged under the old master key, and history rewritten under it fail verification', async () => {
    const { dir, first } = await realm('forged')
    await ok(local(dir, 'addprinc', 'host/a.epoch.test', '--randkey'))
    await offlineStep(dir, 'add')
    await offlineStep(dir, 'use')
    await ok(local(dir, 'addprinc', 'host/b.epoch.test', '--randkey'))
    await ok(local(dir, 'addprinc', 'host/c.epoch.test', '--randkey'))
    const genuine = await logLines(dir)
    // The switch is the line before the master-key-use record (found by that record, so that this
    // test shows on a Tessera without epochs that each forgery below went through).
    const at = genuine.findIndex((l) => (JSON.parse(l) as Rec).op === 'master-key-use') - 1
    expect(at).to.be.greaterThan(0)
    const find = (target: string) => genuine.findIndex((l) => String((JSON.parse(l) as Rec).target ?? '').startsWith(target))
    const b = find('host/b.epoch.test')
    expect(b).to.be.greaterThan(at)
    const verify = async () => local(dir, 'audit', '--verify')

    // 1. An edited line after the switch (not re-MACed): it fails its own hash.
    const edited = [...genuine]
    edited[b] = edited[b]!.replace('host/b.epoch.test', 'host/x.epoch.test')
    await writeFile(path.join(dir, AUDIT_FILE), edited.map((l) => `${l}\n`).join(''))
    let r = await verify()
    expect(r.code).to.not.equal(0)
    expect(r.err).to.contain(`line ${b + 1} `)

    // 2. The tail from that line on forged and MACed under the old master key's audit key, the head rewritten to match.
    const forged = genuine.slice(0, b)
    let prev = (JSON.parse(forged[forged.length - 1]!) as Rec).h
    for (const l of genuine.slice(b)) {
      const rec = JSON.parse(l) as Rec
      if (String(rec.target).startsWith('host/b.epoch.test')) rec.target = 'mallory'
      rec.prev = prev
      const m = macLine(rec, auditKey(first))
      forged.push(m.line)
      prev = m.h
    }
    expect(forged[b]).to.contain('mallory')
    await plant(dir, forged)
    r = await verify()
    expect(r.code, 'a line MACed under the old master key after the switch').to.not.equal(0)
    expect(r.err).to.contain(`line ${b + 1} `)

    // 3. History before the switch rewritten under the old key, through the switch line; what came after it dropped.
    const rewritten: string[] = []
    prev = '0'.repeat(64)
    for (const l of genuine.slice(0, at + 1)) {
      const rec = JSON.parse(l) as Rec
      if (String(rec.target).startsWith('host/a.epoch.test')) rec.target = 'mallory'
      rec.prev = prev
      const m = macLine(rec, auditKey(first))
      rewritten.push(m.line)
      prev = m.h
    }
    expect(rewritten.join('\n')).to.contain('mallory')
    await plant(dir, rewritten)
    r = await verify()
    expect(r.code, 'history rewritten under the old master key').to.not.equal(0)
    expect(r.err, 'caught at the switch, which the new key confirms').to.contain(`line ${at + 1} `)

    // 4. The log cut back to before the switch, the head moved with it.
    await plant(dir, genuine.slice(0, at))
    r = await verify()
    expect(r.code, 'a log cut back to before the switch').to.not.equal(0)
    expect(r.err).to.match(/epoch/)

    // The genuine log (and head) put back verifies.
    await plant(dir, genuine)
    r = await verify()
    expect(r.code, r.err).to.equal(0)
    expect(await switchedAt(dir, first)).to.equal(at)
  })

  it('dumps made before and after the switch load with the stash that made them; one re-MACed under the old master key does not', async () => {
    const { dir, first } = await realm('dumps')
    const stash = path.join(dir, REALM_FILES.stash)
    await ok(local(dir, 'addprinc', 'host/a.epoch.test', '--randkey'))
    const oldStash = path.join(tmp, 'dumps-old.stash')
    await copyFile(stash, oldStash)
    const before = path.join(tmp, 'before.dump')
    await ok(local(dir, 'dump', before))
    await offlineStep(dir, 'add')
    await offlineStep(dir, 'use')
    await ok(local(dir, 'addprinc', 'host/b.epoch.test', '--randkey'))
    const after = path.join(tmp, 'after.dump')
    await ok(local(dir, 'dump', after))

    const lines = (await readFile(after, 'utf8')).split('\n').filter((l) => l.length > 0)
    const trailer = JSON.parse(lines[lines.length - 1]!) as { sha256: string; mac: string }
    const oldMac = (digest: string) => createHmac('sha256', dumpMacKey(auditKey(first))).update(digest).digest('hex')

    // Someone with the old master key edits the ACL in the dump and re-MACs it: refused.
    const header = JSON.parse(lines[0]!) as { acl?: string }
    header.acl = `mallory@${REALM}  *e\n${header.acl ?? ''}`
    const body = [JSON.stringify(header), ...lines.slice(1, -1)].map((l) => `${l}\n`).join('')
    const sha256 = createHash('sha256').update(body).digest('hex')
    const forged = path.join(tmp, 'forged.dump')
    await writeFile(forged, `${body}${JSON.stringify({ ...trailer, sha256, mac: oldMac(sha256) })}\n`, { mode: 0o600 })
    const f = await kadmin(['load', forged, '--dir', path.join(tmp, 'from-forged'), '--stash', stash], env)
    expect(f.code, 'a dump re-MACed under the old master key loads').to.not.equal(0)
    expect(trailer.mac, 'the dump after the switch is not MACed under the old master key').to.not.equal(oldMac(trailer.sha256))

    const loadAndVerify = async (dump: string, target: string, withStash: string) => {
      const l = await kadmin(['load', dump, '--dir', path.join(tmp, target), '--stash', withStash, '--json'], env)
      expect(l.code, l.err).to.equal(0)
      const v = await local(path.join(tmp, target), 'audit', '--verify')
      expect(v.code, v.err).to.equal(0)
      const names = await ok(local(path.join(tmp, target), 'listprincs'))
      return names
    }
    // Before the switch, with the stash of then (kvno 1).
    expect(await loadAndVerify(before, 'from-before', oldStash)).to.not.contain('host/b.epoch.test')
    // After it, with the stash now (kvno 1 and 2); the loaded realm's log is in epoch 1 and goes on there.
    expect(await loadAndVerify(after, 'from-after', stash)).to.contain('host/b.epoch.test')
    const loaded = await logLines(path.join(tmp, 'from-after'))
    expect((JSON.parse(loaded[0]!) as Rec).details).to.deep.include({ auditEpoch: 1 })
    await ok(local(path.join(tmp, 'from-after'), 'addprinc', 'host/c.epoch.test', '--randkey'))
    expect((await local(path.join(tmp, 'from-after'), 'audit', '--verify')).code).to.equal(0)

    // Once the rotation is done (stash kvno 2 alone), a new dump round-trips with that stash.
    await offlineStep(dir, 'reseal')
    await offlineStep(dir, 'retire')
    const done = path.join(tmp, 'done.dump')
    await ok(local(dir, 'dump', done))
    expect(await loadAndVerify(done, 'from-done', stash)).to.contain('host/b.epoch.test')
  })
})
