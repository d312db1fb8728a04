/**
 * Shared plumbing of the load benchmarks (transport, kdc, time, app session): a closed-loop
 * load generator, a bench server in a child process with request/reply IPC, and the
 * measurement of one case (server CPU from the child's process.cpuUsage(), latency
 * quantiles, the cores other processes kept busy meanwhile).
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { type ClientChannel, connectAndRequest, connectChannel } from '../../src/wire/client.js'
import { ResumptionStore } from '../../src/wire/resumption.js'
import { type BenchOptions, cpuMsSince, MachineLoad, nowMs, quantile, waitQuiet } from './common.js'

/** One request/reply exchange: the thing the load generator repeats. */
export interface LoadClient {
  /** Prepare worker `w` (open its connection for conn=reused). */
  open(w: number): Promise<void>
  /** One request on worker `w`; rejects on any failure (a wrong reply included). */
  once(w: number): Promise<void>
  /** Close everything. */
  close(): void
  /** Extra counters for the output line (e.g. resumptions, warm-up included). */
  counters?(): Record<string, number>
}

/** Where the bench servers listen. */
export const HOST = '127.0.0.1'

/** A Tessera listener: port and the server's static X25519 public key. */
export interface Target {
  port: number
  serverKey: Uint8Array
}

/** One request and how to check its reply. */
export interface Exchange {
  req: Message
  /** Throws unless `rep` is the right reply (fully verified when sampled). */
  check(rep: Message): void
}

/** Throws unless `rep` has type `t`; a KRB_ERROR becomes an error naming its code. */
export function expectType(rep: Message, t: number, what: string): void {
  if (rep.t === t) return
  if (rep.t === MsgType.KRB_ERROR) throw new Error(`${what}: KRB_ERROR code=${rep.code} ${rep.text}`)
  throw new Error(`${what}: unexpected reply type ${rep.t}`)
}

/** Counts replies and says which ones to verify in full: the first, then one in EVERY. */
export class Sampler {
  static readonly EVERY = 16
  seen = 0
  verified = 0
  constructor(readonly every: number = Sampler.EVERY) {}
  take(): boolean {
    return this.seen++ % this.every === 0
  }
  reset(): void {
    this.seen = 0
    this.verified = 0
  }
}

/** How the load client uses connections. */
export type ConnMode = 'new' | 'resumed' | 'reused' | 'shared'

/**
 * A load client speaking our transport (connectChannel / ClientChannel.request), sending
 * whatever `next` builds: conn=new opens a connection (TCP + full X25519 handshake) per
 * request and closes it after the reply; conn=resumed also opens a TCP connection per
 * request, but resumes with a ticket (PROTOCOL.md §3.6: no X25519, the request travels
 * as early data in HS_RESUME; the workers share the tickets, as one client process
 * would); conn=reused keeps one connection per worker; conn=shared one for all.
 */
export function exchangeClient(target: Target, conn: ConnMode, next: (w: number) => Exchange): LoadClient {
  const connect = () => connectChannel({ host: HOST, port: target.port, serverKey: target.serverKey })
  if (conn === 'resumed') {
    const store = new ResumptionStore()
    const opts = { host: HOST, port: target.port, serverKey: target.serverKey, resumption: store }
    return {
      open: async () => {},
      once: async (w) => {
        // A builder: after a refused resumption the retry gets a fresh request (authenticator).
        let x: Exchange | undefined
        const { channel, reply } = await connectAndRequest(opts, () => {
          x = next(w)
          return x.req
        })
        channel.close()
        x!.check(reply)
      },
      close: () => store.clear(),
      // Warm-up included: every connection but the first should resume.
      counters: () => ({ resumed: store.resumed, resume_refused: store.refused }),
    }
  }
  if (conn === 'new')
    return {
      open: async () => {},
      once: async (w) => {
        const ch = await connect()
        try {
          const x = next(w)
          x.check(await ch.request(x.req))
        } finally {
          ch.close()
        }
      },
      close: () => {},
    }
  const channels: (ClientChannel | undefined)[] = []
  // conn=shared: every worker on one connection, requests pipelined (one KdcClient shared by an app).
  const slot = (w: number) => (conn === 'shared' ? 0 : w)
  return {
    open: async (w) => {
      if (!channels[slot(w)]) channels[slot(w)] = await connect()
    },
    once: async (w) => {
      w = slot(w)
      let ch = channels[w]
      if (!ch || ch.closed) ch = channels[w] = await connect()
      const x = next(w)
      x.check(await ch.request(x.req))
    },
    close: () => {
      for (const ch of channels) ch?.close()
    },
  }
}

/** Poll a server's stats until it holds no connection (from earlier cases), at most timeoutMs; returns what is left. */
export async function settleConnections(stats: () => Promise<{ connections: number }>, timeoutMs = 5000): Promise<number> {
  const t0 = nowMs()
  for (;;) {
    const { connections } = await stats()
    if (connections === 0 || nowMs() - t0 > timeoutMs) return connections
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** What one closed-loop run produced. */
export interface DriveResult {
  completed: number
  errors: number
  wallMs: number
  /** Latency of each completed request, ms, ascending. */
  latMs: Float64Array
  firstError?: string
}

/** Closed loop: c workers, each issuing the next request when its last one ends, until n requests or ms elapse. */
export async function drive(client: LoadClient, c: number, n: number, ms: number): Promise<DriveResult> {
  const lat = new Float64Array(n)
  let started = 0
  let completed = 0
  let errors = 0
  let firstError: string | undefined
  const t0 = nowMs()
  const deadline = t0 + ms
  const worker = async (w: number) => {
    while (started < n && nowMs() < deadline) {
      started++
      const s = nowMs()
      try {
        await client.once(w)
        lat[completed++] = nowMs() - s
      } catch (err) {
        errors++
        firstError ??= err instanceof Error ? `${err.name}: ${err.message}` : String(err)
      }
    }
  }
  await Promise.all(Array.from({ length: c }, (_, w) => worker(w)))
  const wallMs = nowMs() - t0
  const out: DriveResult = { completed, errors, wallMs, latMs: lat.subarray(0, completed).sort() }
  if (firstError !== undefined) out.firstError = firstError
  return out
}

/** CPU time and open connections of a bench server process. */
export interface ServerStats {
  /** user + system CPU, µs, since the process started. */
  cpuUs: number
  /** system CPU, µs. */
  sysUs: number
  /** TCP connections open in the server (listeners not counted). */
  connections: number
  /** Resident set size, bytes (absent for servers that do not report it). */
  rss?: number
  /** V8 heap in use, bytes. */
  heapUsed?: number
}

/** Anything a case can read server statistics from. */
export interface StatsSource {
  stats(): Promise<ServerStats>
  /** Wait (up to timeoutMs) until the server holds no connection from earlier cases; returns the count left. */
  settle(timeoutMs?: number): Promise<number>
}

/** TCP sockets open in this process (a listening socket is a TCPServerWrap and not counted; IPC is a pipe). */
export function openTcpSockets(): number {
  let n = 0
  for (const r of process.getActiveResourcesInfo()) if (r === 'TCPSocketWrap') n++
  return n
}

/** Messages a bench child sends: the first one is `{ ready: true, ... }`, then one reply per command, with its id. */
export type ChildReply = { id: number } & Record<string, unknown>

/**
 * A bench server in a child process, run with the same runtime as this one (the plain-JS
 * build, or tsx). The child sends `{ ready: true, ... }` once set up, answers
 * `{ id, cmd: 'stats' }` with `{ id, ...ServerStats }` and any other command it knows with
 * `{ id, ... }`, and exits on `{ cmd: 'exit' }`. With BENCH_CPU_PROF=DIR it runs under
 * `node --cpu-prof` and writes its profile to DIR when it exits.
 */
export class ChildServer<Ready> {
  private nextId = 1
  private readonly waiting = new Map<number, (m: ChildReply) => void>()
  private exitError: Error | undefined

  private constructor(
    private readonly child: ChildProcess,
    /** The child's ready message. */
    readonly ready: Ready,
  ) {
    child.on('message', (m: ChildReply) => {
      const w = this.waiting.get(m.id)
      if (w) {
        this.waiting.delete(m.id)
        w(m)
      }
    })
    child.on('exit', (code) => {
      this.exitError = new Error(`bench server exited (code ${code})`)
    })
  }

  /** Fork `script` (a module name in this folder, without extension) with `args`; resolves with its ready message. */
  static async start<R>(script: string, args: readonly string[] = [], o: { execArgv?: string[] } = {}): Promise<ChildServer<R>> {
    const compiled = import.meta.url.endsWith('.js')
    const file = fileURLToPath(new URL(`./${script}.${compiled ? 'js' : 'ts'}`, import.meta.url))
    const execArgv = compiled ? [] : ['--import', 'tsx']
    execArgv.push(...(o.execArgv ?? []))
    // Node flags for the server process only (e.g. BENCH_SERVER_NODE_FLAGS=--max-semi-space-size=32).
    execArgv.push(...(process.env.BENCH_SERVER_NODE_FLAGS ?? '').split(' ').filter((f) => f.length > 0))
    const profDir = process.env.BENCH_CPU_PROF
    if (profDir) execArgv.push('--cpu-prof', '--cpu-prof-dir', profDir)
    const child = fork(file, [...args], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const ready = await new Promise<R>((resolve, reject) => {
      child.once('message', (m: { ready?: boolean; error?: string }) => {
        if (m.ready) resolve(m as R)
        else reject(new Error(`bench server failed: ${m.error ?? JSON.stringify(m)}`))
      })
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`bench server exited early (code ${code})`)))
    })
    child.removeAllListeners('exit')
    child.removeAllListeners('error')
    child.removeAllListeners('message')
    return new ChildServer<R>(child, ready)
  }

  /** Send a command and resolve with the child's reply to it. */
  call<T extends ChildReply = ChildReply>(cmd: Record<string, unknown>): Promise<T> {
    if (this.exitError) return Promise.reject(this.exitError)
    const id = this.nextId++
    return new Promise<T>((resolve) => {
      this.waiting.set(id, resolve as (m: ChildReply) => void)
      this.child.send({ ...cmd, id })
    })
  }

  async stats(): Promise<ServerStats> {
    const m = await this.call({ cmd: 'stats' })
    return m as unknown as ServerStats
  }

  settle(timeoutMs = 5000): Promise<number> {
    return settleConnections(() => this.stats(), timeoutMs)
  }

  /** Ask the child to exit (so that --cpu-prof writes its profile) and wait for it. */
  async stop(): Promise<void> {
    if (this.exitError) return
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    this.child.send({ cmd: 'exit' })
    const timer = setTimeout(() => this.child.kill(), 10_000)
    await exited
    clearTimeout(timer)
  }
}

/**
 * The child side of ChildServer: answer `stats` (CPU, open TCP sockets, memory) and any
 * command in `handlers`, exit on `exit` after `onExit`.
 */
export function serveIpc(handlers: Record<string, (m: Record<string, unknown>) => unknown | Promise<unknown>>, onExit: () => Promise<void>): void {
  process.on('message', (m: { id?: number; cmd: string } & Record<string, unknown>) => {
    if (m.cmd === 'exit') {
      // A normal exit, so that --cpu-prof writes its profile.
      void onExit()
        .catch(() => {})
        .finally(() => process.exit(0))
      setTimeout(() => process.exit(0), 5000).unref()
      return
    }
    const reply = (body: unknown) => process.send?.({ ...(body as object), id: m.id })
    if (m.cmd === 'stats') {
      const u = process.cpuUsage()
      const mem = process.memoryUsage()
      reply({ cpuUs: u.user + u.system, sysUs: u.system, connections: openTcpSockets(), rss: mem.rss, heapUsed: mem.heapUsed })
      return
    }
    const h = handlers[m.cmd]
    if (!h) {
      reply({ error: `unknown command ${m.cmd}` })
      return
    }
    Promise.resolve()
      .then(() => h(m))
      .then(reply, (err: unknown) => reply({ error: err instanceof Error ? err.message : String(err) }))
  })
  process.on('disconnect', () => process.exit(0))
}

/** The standard figures of one measured case. */
export interface CaseResult {
  r: DriveResult
  serverCpuMs: number
  clientCpuMs: number
  /** Server statistics after the measured interval. */
  after: ServerStats
  /** The standard fields of the output line, in order. */
  fields: Record<string, string | number>
}

/**
 * One case: wait for a quiet machine, open the c workers, warm up (up to 0.5 s, not
 * measured), then drive up to opts.n requests or opts.seconds, reading the server's CPU
 * before and after. Closes the client and lets the server drop its connections.
 */
export async function measureCase(o: {
  what: string
  client: LoadClient
  server: StatsSource
  conn: ConnMode
  c: number
  opts: BenchOptions
  /** Called after warm-up, before the measured interval (e.g. to reset counters). */
  beforeMeasure?: () => void
}): Promise<CaseResult> {
  const { client, server, conn, c, opts } = o
  try {
    await waitQuiet(o.what)
    await Promise.all(Array.from({ length: c }, (_, w) => client.open(w)))
    // Warm-up: JIT, connection pools, the server's first allocations. Not measured.
    const warmMs = Math.min(500, opts.seconds * 250)
    await drive(client, c, Math.max(c * 4, Math.floor(opts.n / 10)), warmMs)
    if (conn === 'new' || conn === 'resumed') await server.settle()
    o.beforeMeasure?.()

    const before = await server.stats()
    const load = new MachineLoad()
    const cpu0 = process.cpuUsage()
    const r = await drive(client, c, opts.n, opts.seconds * 1000)
    const clientCpuMs = cpuMsSince(cpu0)
    const busy = load.coresBusy()
    const after = await server.stats()
    const serverCpuMs = (after.cpuUs - before.cpuUs) / 1000
    const serverSysMs = (after.sysUs - before.sysUs) / 1000
    const done = Math.max(1, r.completed)
    // bg: cores busy on the machine minus what this benchmark's two processes used.
    const bg = busy - (serverCpuMs + clientCpuMs) / r.wallMs
    const fields: Record<string, string | number> = {
      conn,
      c,
      reqs_per_s: Math.round((r.completed / r.wallMs) * 1000),
      p50_ms: quantile(r.latMs, 0.5),
      p99_ms: quantile(r.latMs, 0.99),
      server_cpu_ms_per_req: serverCpuMs / done,
      client_cpu_ms_per_req: clientCpuMs / done,
      server_cpu_util: serverCpuMs / r.wallMs,
      server_sys_frac: serverCpuMs > 0 ? serverSysMs / serverCpuMs : 0,
      errors: r.errors,
      n: r.completed,
      wall_s: r.wallMs / 1000,
      bg_cpu_util: Number.isNaN(bg) ? 'na' : Math.max(0, bg),
    }
    return { r, serverCpuMs, clientCpuMs, after, fields }
  } finally {
    client.close()
    if (conn === 'new' || conn === 'resumed' || c > 1) await server.settle()
  }
}
