/**
 * Transport benchmark: handshake + one sealed TIME_REQ/TIME_REP round trip on
 * loopback against a SecureServer in another process (transport-server.ts), and the
 * same traffic pattern against a plain echo server (the floor).
 *
 *   tessera transport conn=new c=16 reqs_per_s=... p50_ms=... p99_ms=... server_cpu_ms_per_req=... errors=0
 *   tessera raw conn=new c=16 ...
 *   tessera tls conn=new c=16 ...     (the raw echo over TLS 1.3, for comparison)
 *
 * conn=new: a fresh TCP connection (and handshake) per request, closed after the reply.
 * conn=reused: c persistent connections, one outstanding request each (closed loop).
 * Each case: a short warm-up, then until BENCH_N requests or BENCH_SECONDS, whichever first
 * (BENCH_REPS=k repeats each case k times, one line each with rep=N).
 * server_cpu_ms_per_req is the server process's process.cpuUsage() over the measured
 * interval divided by the requests completed (server_sys_frac: the kernel's share of it);
 * bg_cpu_util is the cores other processes kept busy meanwhile (the machine is shared).
 */
import { type ChildProcess, fork } from 'node:child_process'
import net from 'node:net'
import tls from 'node:tls'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { backend } from '../../src/crypto/index.js'
import { type ClientChannel, connectAndRequest, connectChannel } from '../../src/wire/client.js'
import { ResumptionStore } from '../../src/wire/resumption.js'
import {
  type BenchOptions,
  machineNote,
  note,
  optionsFromEnv,
  report,
  wanted,
} from './common.js'
import { type LoadClient as Client, measureCase, settleConnections } from './load.js'
import type { ServerCommand, ServerReport } from './transport-server.js'

/** Concurrency levels measured. c=256 with conn=new stays under the server's maxConnectionsPerPeer (512). */
export const CONCURRENCY = [1, 16, 256] as const
/** Connection modes measured. */
/** conn=resumed (PROTOCOL.md §3.6) is measured for our transport only. */
export const CONN_MODES = ['new', 'resumed', 'reused'] as const
/** Body size of a raw echo frame, bytes (about a sealed TIME_REP). */
const RAW_BODY = 200
const HOST = '127.0.0.1'

const TIME_REQ: Message = { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: new Uint8Array(32).fill(5) }

// ------------------------------------------------------------------ server process

/** A server process and its IPC (also used by time.ts for its floor lines). */
export class ServerProcess {
  private waiting: ((r: ServerReport) => void)[] = []
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    readonly serverKey: Uint8Array,
    readonly backendName: string,
    readonly cert: string | undefined,
  ) {
    child.on('message', (m: ServerReport) => this.waiting.shift()?.(m))
  }

  static async start(kind: 'secure' | 'raw' | 'tls'): Promise<ServerProcess> {
    // Same runtime as this process: the plain-JS build (run.ts default) or tsx.
    const compiled = import.meta.url.endsWith('.js')
    const script = fileURLToPath(new URL(compiled ? './transport-server.js' : './transport-server.ts', import.meta.url))
    const execArgv = compiled ? [] : ['--import', 'tsx']
    const profDir = process.env.BENCH_CPU_PROF
    if (profDir) execArgv.push('--cpu-prof', '--cpu-prof-dir', profDir)
    const child = fork(script, [kind], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const ready = await new Promise<ServerReport>((resolve, reject) => {
      child.once('message', resolve)
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`bench server exited early (code ${code})`)))
    })
    child.removeAllListeners('exit')
    child.removeAllListeners('error')
    if (!('ready' in ready)) throw new Error('bench server did not report ready')
    return new ServerProcess(child, ready.port, new Uint8Array(ready.serverKey), ready.backend, ready.cert)
  }

  stats(): Promise<{ cpuUs: number; sysUs: number; connections: number }> {
    return new Promise((resolve) => {
      this.waiting.push((m) => {
        if ('stats' in m) resolve(m)
      })
      this.child.send({ cmd: 'stats' } satisfies ServerCommand)
    })
  }

  /** Wait (up to timeoutMs) until the server holds no connection from earlier cases. */
  settle(timeoutMs = 5000): Promise<number> {
    return settleConnections(() => this.stats(), timeoutMs)
  }

  async stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    this.child.send({ cmd: 'exit' } satisfies ServerCommand)
    await exited
  }
}

// ------------------------------------------------------------------ clients


/** Load client: TIME_REQ on our transport (reply checked to be a TIME_REP). */
export function secureClient(port: number, serverKey: Uint8Array, conn: 'new' | 'resumed' | 'reused'): Client {
  const channels: (ClientChannel | undefined)[] = []
  const connect = () => connectChannel({ host: HOST, port, serverKey })
  const check = (rep: Message) => {
    if (rep.t !== MsgType.TIME_REP) throw new Error(`unexpected reply type ${rep.t}`)
  }
  if (conn === 'resumed') {
    // A new TCP connection per request, resumed with a ticket, the request as early data.
    const store = new ResumptionStore()
    const o = { host: HOST, port, serverKey, resumption: store }
    return {
      open: async () => {},
      once: async () => {
        const { channel, reply } = await connectAndRequest(o, TIME_REQ)
        channel.close()
        check(reply)
      },
      close: () => store.clear(),
      counters: () => ({ resumed: store.resumed, resume_refused: store.refused }),
    }
  }
  if (conn === 'new')
    return {
      open: async () => {},
      once: async () => {
        const ch = await connect()
        try {
          check(await ch.request(TIME_REQ))
        } finally {
          ch.close()
        }
      },
      close: () => {},
    }
  return {
    open: async (w) => {
      channels[w] = await connect()
    },
    once: async (w) => {
      let ch = channels[w]
      if (!ch || ch.closed) ch = channels[w] = await connect()
      check(await ch.request(TIME_REQ))
    },
    close: () => {
      for (const ch of channels) ch?.close()
    },
  }
}

/** A raw (or TLS, when `cert` is given) connection: writes one frame, resolves when the echoed frame is back. */
class RawConn {
  private buf: Buffer = Buffer.alloc(0)
  private waiter: { resolve(): void; reject(e: Error): void } | undefined
  closed = false

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
      if (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        this.buf = this.buf.subarray(4 + this.buf.readUInt32BE(0))
        const w = this.waiter
        this.waiter = undefined
        w?.resolve()
      }
    })
    const fail = (err: Error) => {
      this.closed = true
      const w = this.waiter
      this.waiter = undefined
      w?.reject(err)
    }
    socket.on('error', fail)
    socket.on('close', () => fail(new Error('raw connection closed')))
  }

  static connect(port: number, cert?: string): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      // TLS: the self-signed certificate pinned as the only CA, no session resumption (a full handshake each time).
      const s = cert
        ? tls.connect({ host: HOST, port, ca: cert, servername: 'tessera-bench', checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' })
        : net.connect({ host: HOST, port, noDelay: true })
      if (cert) s.setNoDelay(true)
      s.once('error', reject)
      s.once(cert ? 'secureConnect' : 'connect', () => {
        s.off('error', reject)
        resolve(new RawConn(s))
      })
    })
  }

  request(frame: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('raw connection closed'))
      this.waiter = { resolve, reject }
      this.socket.write(frame)
    })
  }

  close(): void {
    this.closed = true
    this.socket.destroy()
  }
}

/** Load client: a 200-byte frame echoed by the raw (or TLS) server. */
export function rawClient(port: number, conn: 'new' | 'reused', cert?: string): Client {
  const frame = Buffer.alloc(4 + RAW_BODY, 0x5a)
  frame.writeUInt32BE(RAW_BODY, 0)
  const conns: (RawConn | undefined)[] = []
  if (conn === 'new')
    return {
      open: async () => {},
      once: async () => {
        const c = await RawConn.connect(port, cert)
        try {
          await c.request(frame)
        } finally {
          c.close()
        }
      },
      close: () => {},
    }
  return {
    open: async (w) => {
      conns[w] = await RawConn.connect(port, cert)
    },
    once: async (w) => {
      let c = conns[w]
      if (!c || c.closed) c = conns[w] = await RawConn.connect(port, cert)
      await c.request(frame)
    },
    close: () => {
      for (const c of conns) c?.close()
    },
  }
}

// ------------------------------------------------------------------ load generator

async function runCase(
  kind: Kind,
  server: ServerProcess,
  conn: 'new' | 'resumed' | 'reused',
  c: number,
  opts: BenchOptions,
  rep: number | undefined,
): Promise<void> {
  const client =
    kind === 'transport'
      ? secureClient(server.port, server.serverKey, conn)
      : rawClient(server.port, conn === 'resumed' ? 'new' : conn, server.cert)
  const { r, fields } = await measureCase({ what: `${kind} conn=${conn} c=${c}`, client, server, conn, c, opts })
  if (kind === 'transport') fields.backend = server.backendName
  Object.assign(fields, client.counters?.() ?? {})
  if (rep !== undefined) fields.rep = rep
  report(kind, fields)
  if (r.firstError) note(`${kind} conn=${conn} c=${c}: first error: ${r.firstError}`)
}

/** What is measured: our transport, the plain TCP floor, TLS 1.3 for comparison. */
type Kind = 'transport' | 'raw' | 'tls'

/** Run the transport benchmark (secure server, then the raw floor, then TLS). */
export async function run(opts: BenchOptions): Promise<void> {
  // BENCH_REPS: run each case that many times, one line each (with rep=N); the machine is shared.
  const reps = Math.max(1, Math.floor(Number(process.env.BENCH_REPS ?? 1)) || 1)
  machineNote()
  note(
    `transport: TIME_REQ -> fixed TIME_REP; server in a child process; per case up to ${opts.n} requests or ${opts.seconds} s; client backend=${backend().name}`,
  )
  for (const kind of ['transport', 'raw', 'tls'] as const) {
    const cases = CONN_MODES.flatMap((conn) => CONCURRENCY.map((c) => ({ conn, c }))).filter(
      (x) => (kind === 'transport' || x.conn !== 'resumed') && wanted(opts, { kind, conn: x.conn, c: x.c }),
    )
    if (cases.length === 0) continue
    let server: ServerProcess
    try {
      server = await ServerProcess.start(kind === 'transport' ? 'secure' : kind)
    } catch (err) {
      note(`${kind}: server did not start, skipped (${err instanceof Error ? err.message : String(err)})`)
      continue
    }
    try {
      for (const { conn, c } of cases)
        for (let rep = 1; rep <= reps; rep++) await runCase(kind, server, conn, c, opts, reps > 1 ? rep : undefined)
    } finally {
      await server.stop()
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
