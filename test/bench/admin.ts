/**
 * Admin benchmark: operations per second of the admin service over one connection (one
 * AdminClient, one KdcClient), against a KDC on an on-disk realm in another process
 * (admin-server.ts).
 *
 *   tessera admin op=getprinc c=1 ops_per_s=... p50_ms=... p99_ms=... server_cpu_ms_per_op=... n=... errors=0
 *
 * getprinc: read one principal (a lookup, and one audit record: a synced LevelDB write of
 * the audit head plus an fsynced append). addprinc: a new principal with a random key each
 * time (the record, its audit anchor, the line). cpw: a new random key for one principal
 * (cpw --randkey, keepold off). c=1: one request at a time (what `kadmin` does); c=8: eight
 * in flight, pipelined on the same connection. Every reply is checked (name, kvno).
 */
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { loadRealmFile } from '../../src/krb/realm-file.js'
import type { AdminServerReady } from './admin-server.js'
import { type BenchOptions, machineNote, note, nowMs, optionsFromEnv, quantile, report, sourceNote, wanted } from './common.js'
import { ChildServer } from './load.js'

/** Most requests of one case (each write is two fsyncs: cases stay short). */
const MAX_OPS = 5000

type Op = 'getprinc' | 'addprinc' | 'cpw'

export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  sourceNote()
  const cases = (['getprinc', 'addprinc', 'cpw'] as const).flatMap((op) => [1, 8].map((c) => ({ op, c }))).filter((x) => wanted(opts, x))
  if (cases.length === 0) return
  const server = await ChildServer.start<AdminServerReady>('admin-server')
  const kc = new KdcClient(await loadRealmFile(path.join(server.ready.dir, 'realm.json')), { timeoutMs: 30_000 })
  try {
    const admin = await AdminClient.login(kc, 'admin', server.ready.adminPassword)
    await admin.call('addprinc', { name: 'bench/target', randkey: true })
    note(`admin service on an on-disk realm (${server.ready.dir}), one AdminClient, one connection`)
    let added = 0
    let kvno = 1
    const once: Record<Op, () => Promise<void>> = {
      async getprinc() {
        const v = (await admin.call('getprinc', { name: 'bench/target' })) as { name: string }
        if (v.name !== 'bench/target@BENCH.TEST') throw new Error('getprinc: another principal')
      },
      async addprinc() {
        const name = `bench/p${added++}`
        const r = (await admin.call('addprinc', { name, randkey: true })) as { kvno: number; keys: unknown[] }
        if (r.kvno !== 1 || r.keys.length !== 1) throw new Error('addprinc: unexpected result')
      },
      async cpw() {
        const r = (await admin.call('cpw', { name: 'bench/target', randkey: true })) as { kvno: number }
        if (r.kvno <= kvno) throw new Error('cpw: the kvno did not grow')
        kvno = r.kvno
      },
    }
    for (const { op, c } of cases) {
      for (let i = 0; i < 20; i++) await once[op]()
      const n = Math.min(opts.n, MAX_OPS)
      const lat: number[] = []
      let errors = 0
      let started = 0
      const s0 = await server.stats()
      const t0 = nowMs()
      const deadline = t0 + opts.seconds * 1000
      const worker = async () => {
        while (started < n && nowMs() < deadline) {
          started++
          const a = nowMs()
          try {
            await once[op]()
            lat.push(nowMs() - a)
          } catch {
            errors++
          }
        }
      }
      await Promise.all(Array.from({ length: c }, worker))
      const elapsed = nowMs() - t0
      const s1 = await server.stats()
      lat.sort((x, y) => x - y)
      report('admin', {
        op,
        c,
        ops_per_s: (lat.length / elapsed) * 1000,
        p50_ms: quantile(lat, 0.5),
        p99_ms: quantile(lat, 0.99),
        server_cpu_ms_per_op: (s1.cpuUs - s0.cpuUs) / 1000 / Math.max(1, lat.length),
        n: lat.length,
        errors,
      })
    }
  } finally {
    kc.close()
    await server.stop()
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await run(optionsFromEnv(process.argv.slice(2)))
