/**
 * The realm directory's control socket (docs/decisions/0011-master-key-control-socket.md): the
 * running KDC carries out `kdc master-key STEP` for a local operator while it keeps serving.
 * DIR/control/ (0700, the KDC's user) holds the Unix socket kdc.sock (0600); the kernel lets
 * only that user and root connect. One request per connection, one JSON line; answers are JSON
 * lines: `{"progress":{"done","total"}}` while a reseal runs, then `{"ok":true,"report":{…}}` or
 * `{"ok":false,"code","message"}`. Nothing secret travels on it: steps, versions, counts.
 */
import type { Stats } from 'node:fs'
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { readStashKeys } from '../db/master-key.js'
import type { PrincipalDb } from '../db/principal-db.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { REALM_FILES } from '../kdc/realm.js'
import type { AuditLog } from './audit.js'
import { applyMasterKeyStep, MASTER_KEY_STEPS, type MasterKeyReport, type MasterKeyStep } from './master-rotation.js'

/** The control directory of a realm directory, and the socket in it. */
export const CONTROL_DIR = 'control'
export const CONTROL_SOCKET = 'kdc.sock'
/** Version of the request line. */
export const CONTROL_VERSION = 1
/** Longest request line, bytes (a request is well under 200). */
export const MAX_CONTROL_REQUEST_BYTES = 1024
/** How long a connection may take to send its request line, ms. */
const REQUEST_TIMEOUT_MS = 10_000
/** Connections served at once (an operator's CLI, perhaps a second one watching). */
const MAX_CONNECTIONS = 8
/** Longest answer line the CLI accepts, bytes. */
const MAX_ANSWER_BYTES = 1 << 16
const USER_RE = /^[^\u0000-\u0020\u007f-\u009f]{1,64}$/u

/** One request on the control socket. */
export interface ControlRequest {
  v: typeof CONTROL_VERSION
  op: 'master-key'
  step: MasterKeyStep
  /** The operator's Unix user, for the audit log (`local:USER`). */
  user: string
  kvno?: number
  batchSize?: number
}

/** Options of the daemon's side ({@link MasterKeyControl.start}). */
export interface MasterKeyControlOptions {
  /** reseal: principals per batch when the request names none. @default 100 */
  batchSize?: number
  /** reseal (tests): runs after each batch landed. */
  afterBatch?: () => Promise<void>
  /** Resume a reseal cut short (kill -9, a stop) when the KDC starts. @default true */
  resumeOnStart?: boolean
}

interface ControlLog {
  info(message: string, meta?: Record<string, unknown>): void
  error(message: string, meta?: Record<string, unknown>): void
}

interface Job {
  step: MasterKeyStep
  progress?: { done: number; total: number }
  watchers: Set<(done: number, total: number) => void>
  promise: Promise<MasterKeyReport>
}

/** Why `st` is not a private directory (or socket) of `uid`, or undefined if it is. */
function notPrivate(st: Stats, kind: 'directory' | 'socket', uids: readonly number[]): string | undefined {
  if (kind === 'directory' ? !st.isDirectory() : !st.isSocket()) return `not a ${kind}`
  if (!uids.includes(st.uid)) return `owned by uid ${st.uid}`
  if ((st.mode & 0o077) !== 0) return `mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}`
  return undefined
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

function invalid(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, message)
}

/** A request line, checked field by field: anything else is TESSERA_VALIDATION. */
export function parseControlRequest(line: Uint8Array): ControlRequest {
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(line))
  } catch {
    throw invalid('the request is not a JSON line')
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalid('the request is not a JSON object')
  const o = v as Record<string, unknown>
  for (const k of Object.keys(o))
    if (!['v', 'op', 'step', 'user', 'kvno', 'batchSize'].includes(k)) throw invalid(`unknown field ${JSON.stringify(k.slice(0, 40))}`)
  if (o.v !== CONTROL_VERSION) throw invalid(`version must be ${CONTROL_VERSION}`)
  if (o.op !== 'master-key') throw invalid('op must be "master-key"')
  if (typeof o.step !== 'string' || !(MASTER_KEY_STEPS as readonly string[]).includes(o.step)) throw invalid(`step must be one of ${MASTER_KEY_STEPS.join(', ')}`)
  if (typeof o.user !== 'string' || !USER_RE.test(o.user)) throw invalid('user must be 1 to 64 printable characters')
  const req: ControlRequest = { v: CONTROL_VERSION, op: 'master-key', step: o.step as MasterKeyStep, user: o.user }
  if (o.kvno !== undefined) {
    if (!Number.isSafeInteger(o.kvno) || (o.kvno as number) < 1 || (o.kvno as number) > 0xffffffff) throw invalid('kvno must be an integer >= 1')
    req.kvno = o.kvno as number
  }
  if (o.batchSize !== undefined) {
    if (!Number.isSafeInteger(o.batchSize) || (o.batchSize as number) < 1 || (o.batchSize as number) > 10_000) throw invalid('batchSize must be 1 to 10000')
    req.batchSize = o.batchSize as number
  }
  return req
}

/** The daemon's side: serves the control socket of a realm directory over the KDC's database and audit log. */
export class MasterKeyControl {
  readonly #server: net.Server
  readonly #dir: string
  readonly #socket: string
  readonly #db: PrincipalDb
  readonly #audit: AuditLog
  readonly #log: ControlLog
  readonly #opts: MasterKeyControlOptions
  readonly #uid: number
  readonly #conns = new Set<net.Socket>()
  #chain: Promise<unknown> = Promise.resolve()
  #current: Job | undefined
  #reseal: Job | undefined
  #stopping = false
  #closed: Promise<void> | undefined

  private constructor(o: { server: net.Server; dir: string; socket: string; db: PrincipalDb; audit: AuditLog; log: ControlLog; uid: number; opts: MasterKeyControlOptions }) {
    this.#server = o.server
    this.#dir = o.dir
    this.#socket = o.socket
    this.#db = o.db
    this.#audit = o.audit
    this.#log = o.log
    this.#uid = o.uid
    this.#opts = o.opts
  }

  /** Where the socket is. */
  get socketPath(): string {
    return this.#socket
  }

  /**
   * Open DIR/control/kdc.sock. Returns undefined, and logs why, when the channel cannot be
   * offered safely (DIR/control not a 0700 directory of this process's user, something other
   * than a socket in its place, no Unix sockets): the KDC serves on, master-key steps then need it stopped.
   */
  static async start(o: { dir: string; db: PrincipalDb; audit: AuditLog; log: ControlLog; options?: MasterKeyControlOptions }): Promise<MasterKeyControl | undefined> {
    const uid = process.getuid?.()
    if (uid === undefined || process.platform === 'win32') {
      o.log.info('master-key control socket off: no Unix sockets with owner checks on this platform')
      return undefined
    }
    const cdir = path.join(o.dir, CONTROL_DIR)
    const sock = path.join(cdir, CONTROL_SOCKET)
    const refuse = (why: string) => {
      o.log.error(`master-key control socket off: ${why}; kdc master-key steps need the kdc stopped until this is fixed and the kdc restarted`)
      return undefined
    }
    try {
      await mkdir(cdir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err
      })
      const problem = notPrivate(await lstat(cdir), 'directory', [uid])
      if (problem !== undefined) return refuse(`${cdir} is ${problem} (it must be a directory of uid ${uid}, mode 0700: chmod 700 ${cdir})`)
      // A socket left by a kdc that is gone (this process holds the database lock, so no other runs).
      const old = await lstatOrUndefined(sock)
      if (old !== undefined) {
        if (!old.isSocket()) return refuse(`${sock} exists and is not a socket`)
        await unlink(sock)
      }
    } catch (err) {
      return refuse(`cannot prepare ${cdir}: ${(err as Error).message}`)
    }
    // Half-open allowed: a client may end its side right after the request and still read the answer.
    const server = net.createServer({ allowHalfOpen: true })
    server.maxConnections = MAX_CONNECTIONS
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(sock, () => {
          server.off('error', reject)
          resolve()
        })
      })
      await chmod(sock, 0o600)
    } catch (err) {
      server.close()
      return refuse(`cannot listen on ${sock}: ${(err as Error).message}`)
    }
    const c = new MasterKeyControl({ server, dir: o.dir, socket: sock, db: o.db, audit: o.audit, log: o.log, uid, opts: o.options ?? {} })
    server.on('connection', (s) => c.#serve(s))
    server.on('error', (err) => o.log.error(`master-key control socket: ${err.message}`))
    const st = o.db.masterKeyStatus()
    if (st.reseal !== undefined && c.#opts.resumeOnStart !== false) {
      o.log.info('resuming the master-key reseal cut short before', { target: st.reseal.target })
      c.#enqueue({ v: CONTROL_VERSION, op: 'master-key', step: 'reseal', user: 'kdc' }, 'kdc:resume').promise.catch(() => {})
    }
    return c
  }

  /** Ask a running reseal to end after its current batch (the KDC is closing; the marker is kept). */
  stop(): void {
    this.#stopping = true
  }

  /** Stop accepting, end the running step at its next batch, close the connections, remove the socket. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#stopping = true
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
      await this.#chain
      for (const s of this.#conns) s.destroy()
      await closed
      const st = await lstatOrUndefined(this.#socket).catch(() => undefined)
      if (st?.isSocket()) await unlink(this.#socket).catch(() => {})
    })()
    return this.#closed
  }

  /** Why the channel is not private any more (someone changed its modes), or undefined. */
  async #channelProblem(): Promise<string | undefined> {
    try {
      const d = notPrivate(await lstat(path.dirname(this.#socket)), 'directory', [this.#uid])
      if (d !== undefined) return `${path.dirname(this.#socket)} is ${d}`
      const s = notPrivate(await lstat(this.#socket), 'socket', [this.#uid])
      return s === undefined ? undefined : `${this.#socket} is ${s}`
    } catch (err) {
      return (err as Error).message
    }
  }

  #serve(sock: net.Socket): void {
    this.#conns.add(sock)
    sock.on('close', () => this.#conns.delete(sock))
    sock.on('error', () => {})
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => sock.destroy())
    let buf = Buffer.alloc(0)
    let got = false
    const take = (line: Uint8Array | 'long' | 'cut') => {
      got = true
      sock.setTimeout(0)
      buf = Buffer.alloc(0)
      this.#handle(sock, line).catch((err: unknown) => {
        this.#log.error(`master-key control socket: ${(err as Error).message}`)
        sock.destroy()
      })
    }
    sock.on('data', (chunk: Buffer) => {
      if (got) return // one request per connection; anything after it is ignored
      buf = Buffer.concat([buf, chunk])
      const nl = buf.indexOf(10)
      if (nl < 0 && buf.length <= MAX_CONTROL_REQUEST_BYTES) return
      take(nl < 0 || nl > MAX_CONTROL_REQUEST_BYTES ? 'long' : buf.subarray(0, nl))
    })
    // The client ended its side before a whole line: refused (the answer can still reach it).
    sock.on('end', () => {
      if (!got) take('cut')
    })
  }

  async #handle(sock: net.Socket, line: Uint8Array | 'long' | 'cut'): Promise<void> {
    const send = (o: unknown) => {
      if (!sock.destroyed && sock.writable) sock.write(`${JSON.stringify(o)}\n`)
    }
    const fail = (err: unknown) => {
      if (err instanceof TesseraError) send({ ok: false, code: err.code, message: err.message })
      else {
        this.#log.error(`master-key step failed: ${(err as Error).message}`)
        send({ ok: false, code: TesseraErrorCode.TESSERA_DB, message: 'the step failed (see the kdc log)' })
      }
      sock.end()
    }
    const problem = await this.#channelProblem()
    if (problem !== undefined) {
      this.#log.error(`master-key control socket: request refused, ${problem}`)
      return fail(new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `the kdc refuses its control socket: ${problem} (chmod 700 the directory, 600 the socket)`))
    }
    let req: ControlRequest
    try {
      if (line === 'long') throw invalid(`the request line is longer than ${MAX_CONTROL_REQUEST_BYTES} bytes`)
      if (line === 'cut') throw invalid('the connection ended before a whole request line')
      req = parseControlRequest(line)
    } catch (err) {
      return fail(err)
    }
    if (req.step === 'status') {
      try {
        send({ ok: true, report: await this.#statusReport() })
        sock.end()
      } catch (err) {
        fail(err)
      }
      return
    }
    if (this.#stopping) return fail(new TesseraError(TesseraErrorCode.TESSERA_ABORTED, 'the kdc is stopping: run the step again once it runs'))
    const job = this.#enqueue(req, `local:${req.user}`)
    const watch = (done: number, total: number) => send({ progress: { done, total } })
    job.watchers.add(watch)
    sock.on('close', () => job.watchers.delete(watch))
    if (job.progress) watch(job.progress.done, job.progress.total)
    try {
      send({ ok: true, report: await job.promise })
      sock.end()
    } catch (err) {
      fail(err)
    }
  }

  async #statusReport(): Promise<MasterKeyReport> {
    const keys = await readStashKeys(path.join(this.#dir, REALM_FILES.stash))
    for (const k of keys) k.key.fill(0)
    const r: MasterKeyReport = { step: 'status', status: this.#db.masterKeyStatus(), stash: keys.map((k) => k.kvno), via: 'kdc' }
    const cur = this.#current
    if (cur !== undefined) r.running = { step: cur.step, ...(cur.progress ?? {}) }
    return r
  }

  /** Queue a step (one runs at a time); a reseal asked for while one is queued or running joins it. */
  #enqueue(req: ControlRequest, actor: string): Job {
    if (req.step === 'reseal' && this.#reseal !== undefined) return this.#reseal
    const job: Job = { step: req.step, watchers: new Set(), promise: undefined as unknown as Promise<MasterKeyReport> }
    job.promise = this.#chain.then(() => this.#run(job, req, actor))
    this.#chain = job.promise.catch(() => {})
    if (req.step === 'reseal') this.#reseal = job
    return job
  }

  async #run(job: Job, req: ControlRequest, actor: string): Promise<MasterKeyReport> {
    this.#current = job
    let logged = -1
    try {
      if (this.#stopping) throw new TesseraError(TesseraErrorCode.TESSERA_ABORTED, 'the kdc is stopping: run the step again once it runs')
      this.#log.info(`master-key ${req.step}: started`, { actor })
      const batchSize = req.batchSize ?? this.#opts.batchSize
      const r = await applyMasterKeyStep(
        { db: this.#db, stashFile: path.join(this.#dir, REALM_FILES.stash), audit: this.#audit },
        {
          step: req.step,
          actor,
          ...(req.kvno !== undefined ? { kvno: req.kvno } : {}),
          ...(batchSize !== undefined ? { batchSize } : {}),
          ...(this.#opts.afterBatch ? { afterBatch: this.#opts.afterBatch } : {}),
          shouldStop: () => this.#stopping,
          onProgress: (done, total) => {
            job.progress = { done, total }
            for (const w of job.watchers) w(done, total)
            const pct = total === 0 ? 100 : Math.floor((done * 100) / total)
            if (pct >= logged + 10 || done === total) {
              logged = pct
              this.#log.info('master-key reseal progress', { done, total })
            }
          },
        },
      )
      this.#log.info(`master-key ${req.step}: done`, { actor, ...(r.kvno !== undefined ? { kvno: r.kvno } : {}), ...(r.stopped ? { stopped: true } : {}) })
      return { ...r, via: 'kdc' }
    } catch (err) {
      this.#log.error(`master-key ${req.step}: failed`, { actor, err: (err as Error).message })
      throw err
    } finally {
      this.#current = undefined
      if (this.#reseal === job) this.#reseal = undefined
    }
  }
}

/**
 * The control socket of the KDC running on `dir`, or undefined when there is none to ask (no
 * control directory or socket, or this user cannot see them). TESSERA_CONFIG when the directory
 * or socket is there but not private (not a 0700 directory of this user, or of the stash's owner for root).
 */
export async function findControlSocket(dir: string): Promise<string | undefined> {
  const uid = process.getuid?.()
  if (uid === undefined || process.platform === 'win32') return undefined
  const cdir = path.join(dir, CONTROL_DIR)
  const sock = path.join(cdir, CONTROL_SOCKET)
  let d: Stats | undefined
  let s: Stats | undefined
  try {
    d = await lstatOrUndefined(cdir)
    if (d === undefined) return undefined
    s = await lstatOrUndefined(sock)
  } catch {
    return undefined // EACCES: not this user's realm directory; the offline path says what is wrong
  }
  const owners = [uid]
  if (uid === 0) {
    const stash = await lstatOrUndefined(path.join(dir, REALM_FILES.stash)).catch(() => undefined)
    if (stash !== undefined) owners.push(stash.uid)
  }
  const problem = notPrivate(d, 'directory', owners) ?? (s === undefined ? undefined : notPrivate(s, 'socket', owners))
  if (problem !== undefined)
    throw new TesseraError(
      TesseraErrorCode.TESSERA_CONFIG,
      `refusing the kdc control channel in ${cdir}: ${problem === undefined ? '' : problem} (the directory must be the kdc user's, mode 0700; the socket 0600)`,
    )
  return s === undefined ? undefined : sock
}

/** Options of {@link requestMasterKeyStep}. */
export interface ControlStepOptions {
  step: MasterKeyStep
  user: string
  kvno?: number
  batchSize?: number
  onProgress?: (done: number, total: number) => void
}

/**
 * Ask the KDC on `sock` to run a step and wait for its answer (progress as it comes). Resolves
 * undefined when nothing listens there (a socket left by a kdc killed with -9). Rejects with the
 * daemon's TesseraError, or TESSERA_NETWORK if the connection ends before the answer.
 */
export function requestMasterKeyStep(sock: string, o: ControlStepOptions): Promise<MasterKeyReport | undefined> {
  const req: ControlRequest = { v: CONTROL_VERSION, op: 'master-key', step: o.step, user: o.user }
  if (o.kvno !== undefined) req.kvno = o.kvno
  if (o.batchSize !== undefined) req.batchSize = o.batchSize
  return new Promise((resolve, reject) => {
    const c = net.connect(sock)
    let connected = false
    let settled = false
    let buf = ''
    const settle = (fn: () => void) => {
      if (settled) return
      settled = true
      fn()
      c.destroy()
    }
    const onLine = (line: string) => {
      let m: Record<string, unknown>
      try {
        m = JSON.parse(line) as Record<string, unknown>
      } catch {
        return settle(() => reject(new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `the kdc's control socket ${sock} answered something not JSON`)))
      }
      const p = m.progress as { done?: unknown; total?: unknown } | undefined
      if (p !== undefined && typeof p.done === 'number' && typeof p.total === 'number') o.onProgress?.(p.done, p.total)
      else if (m.ok === true && m.report !== null && typeof m.report === 'object') settle(() => resolve(m.report as MasterKeyReport))
      else if (m.ok === false) {
        const code = typeof m.code === 'string' && Object.hasOwn(TesseraErrorCode, m.code) ? (m.code as TesseraErrorCode) : TesseraErrorCode.TESSERA_DB
        settle(() => reject(new TesseraError(code, typeof m.message === 'string' ? m.message : 'the kdc refused the step')))
      }
    }
    c.setEncoding('utf8')
    c.on('connect', () => {
      connected = true
      c.write(`${JSON.stringify(req)}\n`)
    })
    c.on('data', (d: string) => {
      buf += d
      for (let i = buf.indexOf('\n'); i >= 0 && !settled; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        onLine(line)
      }
      if (buf.length > MAX_ANSWER_BYTES) settle(() => reject(new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `the kdc's control socket ${sock} sent an overlong line`)))
    })
    c.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected && (err.code === 'ECONNREFUSED' || err.code === 'ENOENT')) return settle(() => resolve(undefined))
      settle(() => reject(new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `the kdc's control socket ${sock}: ${err.message}`, { cause: err })))
    })
    c.on('close', () =>
      settle(() =>
        reject(
          new TesseraError(
            TesseraErrorCode.TESSERA_NETWORK,
            `the kdc closed its control socket before the ${o.step} step finished` +
              (o.step === 'reseal' ? ': the reseal keeps its progress and resumes when the kdc starts again (or run reseal again)' : ': run kdc master-key status'),
          ),
        ),
      ),
    )
  })
}
