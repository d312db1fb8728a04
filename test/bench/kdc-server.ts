/**
 * The server half of the KDC and time benchmarks: startKdc() with an in-memory realm, in
 * its own process (forked by kdc.ts / time.ts through ChildServer) so that its CPU time
 * and memory are measured alone.
 *
 *   argv[2] = JSON { clients, services, scale }:
 *     clients   principals bench/userN with random keys (the AS clients; keys go to the load generator)
 *     services  principals host/svcN.bench with random keys (TGS targets; keys go to the load
 *               generator so it can open the tickets it samples)
 *     scale     further principals host/nN.scale.bench (the 100k-principal case; only their count
 *               and the setup time go back)
 *     metrics   true: the HTTP ops listener on (127.0.0.1, any port) and metrics collected; its
 *               port goes back as httpPort (the metrics=on|off case)
 *     dir       a realm directory already loaded (bulk-load.ts): `kdc start` on it (the admin
 *               service and its rotation scheduler included, the log files off), nothing
 *               created; readyMs is the time startKdc took, censusMs the time until the
 *               background pass over the database at open had finished
 *
 * IPC (load.ts serveIpc): sends { ready, realm, ports, transportKey, signingKey, clients,
 * services, setupMs, rss, heapUsed } once listening, answers { cmd: 'stats' },
 * { cmd: 'replay' } (replay cache entries) and { cmd: 'db' } (principal cache figures), exits on { cmd: 'exit' }.
 */
import { pathToFileURL } from 'node:url'
import { startKdc as startKdcWithAdmin } from '../../src/admin/start.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { serveIpc } from './load.js'

/** What argv[2] holds. */
export interface KdcServerSpec {
  clients: number
  services: number
  scale: number
  metrics?: boolean
  dir?: string
}

/** A principal and its key, as sent over IPC. */
export interface NamedKey {
  name: string
  key: number[]
}

/** The ready message. */
export interface KdcServerReady {
  ready: true
  realm: string
  ports: { as: number; tgs: number; time: number }
  transportKey: number[]
  signingKey: number[]
  clients: NamedKey[]
  services: NamedKey[]
  /** Principals created for the scale case. */
  scale: number
  /** Time to create every principal above (not the realm bootstrap), ms. */
  setupMs: number
  /** Principals in the database when ready. */
  principals: number
  /** Port of the HTTP ops listener (spec.metrics). */
  httpPort?: number
  /** dir mode: how long startKdc took, and until the census at open was done, ms. */
  readyMs?: number
  censusMs?: number
  rss: number
  heapUsed: number
}

/** Names of the principals, shared with the load generator. */
export const names = {
  client: (i: number) => `bench/user${i}`,
  service: (i: number) => `host/svc${i}.bench`,
  scale: (i: number) => `host/n${i}.scale.bench`,
}

/** Principals created concurrently in one batch. */
const BATCH = 500

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as KdcServerSpec
  if (spec.dir !== undefined) return startOnDisk(spec, spec.dir)
  const kdc = await startKdc({
    config: {
      // BENCH_KDC_LOG_DIR: write kdc.log and security.log (one JSON line per AS/TGS outcome) there, as the daemon does.
      log: { console: false, ...(process.env.BENCH_KDC_LOG_DIR ? { dir: process.env.BENCH_KDC_LOG_DIR } : {}) },
      kdf: { N: 1024 },
      limits: { maxConnectionsPerPeer: 4096, maxConnections: 8192 },
      ...(spec.metrics ? { http: { port: 0 } } : {}),
    },
    metrics: spec.metrics === true,
  })
  const t0 = performance.now()
  const clients: NamedKey[] = []
  const services: NamedKey[] = []
  const make = async (count: number, name: (i: number) => string, out?: NamedKey[]) => {
    for (let i = 0; i < count; i += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, count - i) }, (_, k) => name(i + k))
      const keys = await Promise.all(batch.map((n) => kdc.addPrincipal(n)))
      if (out) for (let k = 0; k < batch.length; k++) out.push({ name: batch[k]!, key: Array.from(keys[k]!.key) })
    }
  }
  await make(spec.clients, names.client, clients)
  await make(spec.services, names.service, services)
  await make(spec.scale, names.scale)
  const setupMs = performance.now() - t0
  const principals = await kdc.db.count()
  serveIpc(
    {
      replay: () => ({ entries: kdc.context.replay.entries }),
    },
    () => kdc.close(),
  )
  sendReady(kdc, { clients, services, scale: spec.scale, setupMs, principals })
}

/** `kdc start` on a loaded realm directory. */
async function startOnDisk(spec: KdcServerSpec, dir: string): Promise<void> {
  const t0 = performance.now()
  const kdc: RunningKdc = await startKdcWithAdmin({
    dir,
    config: {
      ports: { as: 0, tgs: 0, time: 0, admin: 0 },
      limits: { maxConnectionsPerPeer: 4096, maxConnections: 8192 },
      ...(spec.metrics ? { http: { port: 0 } } : {}),
    },
    // The daemon writes a security log line per exchange; BENCH_KDC_LOG_DIR turns that on here too.
    log: process.env.BENCH_KDC_LOG_DIR ? { console: false, dir: process.env.BENCH_KDC_LOG_DIR } : false,
    metrics: spec.metrics === true,
  })
  const readyMs = performance.now() - t0
  while (kdc.db.principalCount === undefined) await new Promise((r) => setTimeout(r, 20))
  const censusMs = performance.now() - t0
  serveIpc(
    {
      replay: () => ({ entries: kdc.context.replay.entries }),
      db: () => ({ principals: kdc.db.principalCount, ...kdc.db.cacheStats(), memory: process.memoryUsage() }),
    },
    () => kdc.close(),
  )
  sendReady(kdc, { clients: [], services: [], scale: spec.scale, setupMs: 0, principals: kdc.db.principalCount ?? 0, readyMs, censusMs })
}

/** Tell the parent the KDC is up: its realm, ports and keys, what it holds, and its memory now. */
function sendReady(
  kdc: RunningKdc,
  held: Pick<KdcServerReady, 'clients' | 'services' | 'scale' | 'setupMs' | 'principals'> & Partial<Pick<KdcServerReady, 'readyMs' | 'censusMs'>>,
): void {
  const mem = process.memoryUsage()
  const ready: KdcServerReady = {
    ready: true,
    realm: kdc.realm,
    ports: { as: kdc.addresses.as.port, tgs: kdc.addresses.tgs.port, time: kdc.addresses.time.port },
    transportKey: Array.from(kdc.realmFile.transportKey),
    signingKey: Array.from(kdc.realmFile.signingKey),
    ...held,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
  }
  if (kdc.opsAddress) ready.httpPort = kdc.opsAddress.port
  process.send?.(ready)
}

// Only when run as the child process: kdc.ts imports this module for `names` and the types.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.send?.({ error: err instanceof Error ? `${err.message}\n${err.stack}` : String(err) })
    process.exit(1)
  })
}
