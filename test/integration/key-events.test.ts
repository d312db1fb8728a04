/**
 * The key-event stream (issue 12) over the real daemon on an on-disk realm: every key event
 * and lockout gets a sequence number in the database, a watcher that reconnects from N gets
 * every event after N (also across a KDC restart), a watch is a long poll, each watcher sees
 * only what it may inquire about, and `kadmin watch` prints the events.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { expect } from 'chai'
import { startKdc } from '../../src/admin/start.js'
import type { KeyEvent } from '../../src/admin/operations.js'
import { main as kadmin } from '../../src/cli/kadmin.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { LoggedEvent } from '../../src/db/event-log.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { readKeytab } from '../../src/krb/keytab.js'
import { writeRealm } from '../helpers/cli-kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'

type Ev = LoggedEvent<KeyEvent>

const PORTS = { as: 0, tgs: 0, time: 0, admin: 0 }

/** Every event after `after` the client may see, through as many polls as it takes. */
async function drain(admin: AdminClient, after: number): Promise<{ events: Ev[]; last: number }> {
  const events: Ev[] = []
  let last = after
  for (let i = 0; i < 100; i++) {
    const r = await admin.watch({ after: last })
    events.push(...r.events)
    if (r.last === last) break
    last = r.last
  }
  return { events, last }
}

describe('key events: the watch stream (integration)', function () {
  this.timeout(60_000)
  let tmp: string
  let dir: string
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient

  async function start(): Promise<void> {
    kdc = await startKdc({ dir, config: { ...FAST_CONFIG, ports: PORTS }, log: false })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 20_000 })
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
  }
  async function stop(): Promise<void> {
    kc.close()
    await kdc.close()
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-events-'))
    dir = path.join(tmp, 'realm')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig({ ...FAST_CONFIG, ports: PORTS }) })
    // ops may inquire about services only; the realm's admin about everything.
    await writeFile(path.join(dir, 'kadm5.acl'), `admin@${REALM} *e\nops@${REALM} i HTTP/*@${REALM}\n`)
    await start()
    await admin.call('addprinc', { name: 'ops', password: 'Harbor-mist-4482q' })
  })
  after(async () => {
    await stop()
    await rm(tmp, { recursive: true, force: true })
  })

  it('numbers every key event without gaps, in commit order, with what it carries', async () => {
    const from = (await admin.watch({})).last
    await admin.call('addprinc', { name: 'HTTP/a.example.test', randkey: true })
    await admin.call('rotate', { name: 'HTTP/a.example.test', stageAhead: 3600_000 })
    await admin.call('cpw', { name: 'ops', password: 'Lantern-quay-9173x' })
    await admin.call('renprinc', { name: 'HTTP/a.example.test', newName: 'HTTP/b.example.test' })
    await admin.call('delprinc', { name: 'HTTP/b.example.test' })
    const { events, last } = await drain(admin, from)
    expect(events.map((e) => e.seq)).to.deep.equal([1, 2, 3, 4, 5].map((i) => from + i))
    expect(last).to.equal(from + 5)
    expect(events.map((e) => [e.type, e.principal])).to.deep.equal([
      ['created', `HTTP/a.example.test@${REALM}`],
      ['staged', `HTTP/a.example.test@${REALM}`],
      ['changed', `ops@${REALM}`],
      ['renamed', `HTTP/a.example.test@${REALM}`],
      ['deleted', `HTTP/b.example.test@${REALM}`],
    ])
    expect(events[1]).to.include({ kvno: 2, actor: `admin@${REALM}` })
    expect(events[1]!.activatesAt).to.be.a('number')
    expect(events[3]!.newName).to.equal(`HTTP/b.example.test@${REALM}`)
  })

  it('a watch is a long poll: it answers when an event lands, and with nothing when waitMs passes', async () => {
    const from = (await admin.watch({})).last
    // A connection of its own: replies come in order, so a waiting poll would hold back the admin's requests.
    const wc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 40_000 })
    try {
      const watcher = await AdminClient.login(wc, 'admin', ADMIN_PASSWORD)
      const idle = await watcher.watch({ after: from, waitMs: 200 })
      expect(idle.events).to.deep.equal([])
      expect(idle.last).to.equal(from)
      const polling = watcher.watch({ after: from, waitMs: 25_000 })
      await admin.call('addprinc', { name: 'HTTP/poll.example.test', randkey: true })
      const r = await polling
      expect(r.events.map((e) => [e.seq, e.type, e.principal])).to.deep.equal([[from + 1, 'created', `HTTP/poll.example.test@${REALM}`]])
    } finally {
      wc.close()
    }
  })

  it('a watcher sees what it may inquire about; a service sees its own events through kadmin/changepw', async () => {
    const from = (await admin.watch({})).last
    await admin.call('addprinc', { name: 'HTTP/mine.example.test', randkey: true })
    await admin.call('addprinc', { name: 'carol', password: 'Pebble-dune-6621k' })
    await admin.call('rotate', { name: 'HTTP/mine.example.test' })
    await admin.call('addprinc', { name: 'HTTP/other.example.test', randkey: true })
    const ops = await AdminClient.login(kc, 'ops', 'Lantern-quay-9173x')
    const seenByOps = (await drain(ops, from)).events.map((e) => `${e.type} ${e.principal}`)
    expect(seenByOps).to.deep.equal([
      `created HTTP/mine.example.test@${REALM}`,
      `rotated HTTP/mine.example.test@${REALM}`,
      `created HTTP/other.example.test@${REALM}`,
    ])
    const f = path.join(tmp, 'mine.keytab')
    await kdc.exportKeytab('HTTP/mine.example.test', f)
    const kt = await readKeytab(f)
    const e = kt.latest(`HTTP/mine.example.test@${REALM}`)!
    const svc = await AdminClient.loginWithKey(kc, 'HTTP/mine.example.test', { key: e.key, kvno: e.kvno }, 'kadmin/changepw')
    kt.wipe()
    const seenBySvc = (await drain(svc, from)).events.map((x) => `${x.type} ${x.principal}`)
    expect(seenBySvc).to.deep.equal([`created HTTP/mine.example.test@${REALM}`, `rotated HTTP/mine.example.test@${REALM}`])
    // The glob narrows further.
    const globbed = await admin.watch({ after: from, glob: 'HTTP/other*' })
    expect(globbed.events.map((x) => x.principal)).to.deep.equal([`HTTP/other.example.test@${REALM}`])
  })

  it('logs a lockout from the AS as an event', async () => {
    await admin.call('addpol', { name: 'lock2', maxFailures: 2, failureCountIntervalMs: 600_000, lockoutDurationMs: 600_000 })
    await admin.call('addprinc', { name: 'dave', password: 'Violet-fern-3350z', policy: 'lock2' })
    const from = (await admin.watch({})).last
    for (let i = 0; i < 2; i++) await kc.login('dave', 'wrong-password-x').catch(() => {})
    // The event is written just after the AS's answer: poll briefly for it.
    let r = await admin.watch({ after: from, waitMs: 5000 })
    expect(r.events.map((e) => [e.type, e.principal, e.actor])).to.deep.equal([['lockout', `dave@${REALM}`, 'kdc:as']])
    r = await admin.watch({ after: r.last })
    expect(r.events).to.deep.equal([])
  })

  it('a watcher reconnecting from N gets every event after N, also across a KDC restart', async () => {
    const n = (await admin.watch({})).last
    // The watcher goes away; events happen meanwhile...
    await admin.call('addprinc', { name: 'HTTP/r1.example.test', randkey: true })
    await admin.call('rotate', { name: 'HTTP/r1.example.test', stageAhead: 60_000 })
    // ...and the KDC restarts (the events were acknowledged, so they are on disk)...
    await stop()
    await start()
    await admin.call('addprinc', { name: 'HTTP/r2.example.test', randkey: true })
    await admin.call('ktadd', { name: 'HTTP/r2.example.test' })
    // ...then the watcher comes back with its number.
    const { events } = await drain(admin, n)
    expect(events.map((e) => [e.seq, e.type, e.principal])).to.deep.equal([
      [n + 1, 'created', `HTTP/r1.example.test@${REALM}`],
      [n + 2, 'staged', `HTTP/r1.example.test@${REALM}`],
      [n + 3, 'created', `HTTP/r2.example.test@${REALM}`],
      [n + 4, 'extracted', `HTTP/r2.example.test@${REALM}`],
    ])
    // From 0: everything still kept, from the first event of the realm, numbered without a gap.
    const all = await drain(admin, 0)
    expect(all.events.map((e) => e.seq)).to.deep.equal(all.events.map((_, i) => i + 1))
  })

  it('kadmin watch prints one line per event (and JSON with --json), resumable with --from', async () => {
    const from = (await admin.watch({})).last
    await admin.call('addprinc', { name: 'HTTP/cli.example.test', randkey: true })
    await admin.call('rotate', { name: 'HTTP/cli.example.test' })
    const realmPath = await writeRealm(tmp, kdc.realmFile, 'watch-realm.json')
    const pw = path.join(tmp, 'admin.pw')
    await writeFile(pw, `${ADMIN_PASSWORD}\n`, { mode: 0o600 })
    const env = { TESSERA_REALM_FILE: realmPath, TESSERA_CCACHE: path.join(tmp, 'watch-ccache'), HOME: tmp }
    const run = async (argv: string[]) => {
      const out = new PassThrough()
      const err = new PassThrough()
      const o: Buffer[] = []
      const e: Buffer[] = []
      out.on('data', (c: Buffer) => o.push(c))
      err.on('data', (c: Buffer) => e.push(c))
      const code = await kadmin(argv, { env, stdout: out, stderr: err })
      await new Promise((r) => setImmediate(r))
      return { code, stdout: Buffer.concat(o).toString('utf8'), stderr: Buffer.concat(e).toString('utf8') }
    }
    const text = await run(['-p', 'admin', '--password-file', pw, 'watch', 'HTTP/cli*', '--from', String(from), '--no-follow'])
    expect(text.code, text.stderr).to.equal(0)
    const lines = text.stdout.trimEnd().split('\n')
    expect(lines).to.have.length(2)
    expect(lines[0]).to.match(new RegExp(`^\\s*${from + 1}  \\S+Z  created\\s+HTTP/cli\\.example\\.test@${REALM.replace('.', '\\.')}  kvno 1  by admin@`))
    expect(lines[1]).to.match(/rotated\s+HTTP\/cli\.example\.test@\S+ {2}kvno 2 {2}by admin@/)
    const json = await run(['-p', 'admin', '--password-file', pw, '--json', 'watch', '--from', String(from), '--count', '2'])
    expect(json.code, json.stderr).to.equal(0)
    const evs = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Ev)
    expect(evs.map((e) => [e.seq, e.type])).to.deep.equal([
      [from + 1, 'created'],
      [from + 2, 'rotated'],
    ])
  })
})
