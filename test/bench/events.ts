/**
 * Key-event benchmark (issue 12), KDC and clients in this process:
 *
 *   tessera events case=watch-drain events=... events_per_s=... polls=...
 *   tessera events case=rotate-to-follower n=... p50_ms=... p99_ms=... max_ms=...
 *
 * watch-drain: the event log holds N events (written through the KDC's publisher, in-memory
 * realm); one watcher reads them all from 0 with `watch` (up to 500 per reply, over one
 * connection): events per second through the watch stream. rotate-to-follower: an on-disk
 * realm, a service with a KeytabFollower (watch + fetchkeys); each round `rotate` (the
 * immediate form) through AdminClient, then the time until the follower's keytab holds the
 * new kvno: from the admin's request to the service holding the key.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { readKeytab } from '../../src/krb/keytab.js'
import { KeytabFollower } from '../../src/service/keytab-refresh.js'
import { type BenchOptions, machineNote, note, nowMs, optionsFromEnv, quantile, report, sourceNote, wanted } from './common.js'

const PW = 'bench admin password 1'
const CONFIG = { kdf: { N: 1024 }, log: { console: false }, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }

export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  sourceNote()
  note('KDC and clients in one process (loopback); watch-drain on an in-memory realm, rotate-to-follower on an on-disk realm (synced writes)')
  if (wanted(opts, { case: 'watch-drain' })) await watchDrain(Math.min(opts.n, 50_000))
  if (wanted(opts, { case: 'rotate-to-follower' })) await rotateToFollower(Math.min(200, Math.max(20, Math.floor(opts.n / 100))), opts.seconds * 10_000)
}

async function watchDrain(n: number): Promise<void> {
  const kdc = await startKdc({ realm: 'BENCH.TEST', adminPassword: PW, config: CONFIG, log: false })
  const kc = new KdcClient(kdc.realmFile, { timeoutMs: 60_000 })
  try {
    const admin = await AdminClient.login(kc, 'admin', PW)
    const base = (await admin.watch({})).last
    for (let i = 0; i < n; i++) kdc.context.events!.publish({ type: 'lockout', principal: `u${i % 1000}@BENCH.TEST`, time: Date.now(), actor: 'bench' })
    // Wait until the publisher's writes have all landed.
    for (;;) {
      const r = await admin.watch({ after: base + n - 1, waitMs: 1000 })
      if (r.last >= base + n) break
    }
    const t0 = nowMs()
    let after = base
    let got = 0
    let polls = 0
    while (got < n) {
      const r = await admin.watch({ after })
      polls++
      got += r.events.length
      after = r.last
      if (r.events.length === 0) throw new Error('watch-drain: a poll returned nothing before the end')
    }
    const s = (nowMs() - t0) / 1000
    report('events', { case: 'watch-drain', events: got, events_per_s: got / s, polls, ms_per_poll: (s * 1000) / polls })
  } finally {
    kc.close()
    await kdc.close()
  }
}

async function rotateToFollower(rounds: number, budgetMs: number): Promise<void> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-bench-events-'))
  const dir = path.join(tmp, 'realm')
  await initRealmDir({ dir, realm: 'BENCH.TEST', adminPassword: PW, config: resolveKdcConfig(CONFIG) })
  const kdc = await startKdc({ dir, config: CONFIG, log: false })
  const kc = new KdcClient(kdc.realmFile, { timeoutMs: 30_000 })
  const svc = 'HTTP/bench.example.test'
  const id = `${svc}@BENCH.TEST`
  let follower: KeytabFollower | undefined
  try {
    const admin = await AdminClient.login(kc, 'admin', PW)
    await admin.call('addprinc', { name: svc, randkey: true })
    const file = path.join(tmp, 'svc.keytab')
    await kdc.exportKeytab(svc, file)
    const keytab = await readKeytab(file)
    follower = new KeytabFollower({ kdc: new KdcClient(kdc.realmFile, { timeoutMs: 30_000 }), keytab, checkEveryMs: 0 })
    await follower.start()
    const lat: number[] = []
    const t0 = nowMs()
    for (let i = 0; i < rounds && nowMs() - t0 < budgetMs; i++) {
      const start = nowMs()
      const r = (await admin.call('rotate', { name: svc })) as { kvno: number }
      while (!keytab.kvnos(id).includes(r.kvno)) await new Promise((res) => setImmediate(res))
      lat.push(nowMs() - start)
      // Keep the reply small: drop the versions two rotations old.
      if (r.kvno > 3) await admin.call('purgekeys', { name: svc, keepkvno: r.kvno - 1, force: true })
    }
    lat.sort((a, b) => a - b)
    report('events', { case: 'rotate-to-follower', n: lat.length, p50_ms: quantile(lat, 0.5), p99_ms: quantile(lat, 0.99), max_ms: lat[lat.length - 1] ?? 0 })
  } finally {
    await follower?.close()
    kc.close()
    await kdc.close()
    await rm(tmp, { recursive: true, force: true })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await run(optionsFromEnv(process.argv.slice(2)))
