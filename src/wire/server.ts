/**
 * The server-side connection layer every listener reuses: handshake, sealed frames,
 * one reply per request in order, handshake and idle timeouts, connection caps
 * (total and per peer), backpressure, graceful close. Nothing a peer sends can throw
 * out of here: every failure becomes a KRB_ERROR to that peer and/or a close.
 */
import net from 'node:net'
import { ErrorCode } from '../../proto/error-codes.js'
import { Limits } from '../../proto/limits.js'
import type { HsResp, HsResume, HsResumed, Message } from '../../proto/messages.js'
import { EARLY_DATA_TYPES, MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { validateMessage } from '../../proto/validate.js'
import {
  confirmBox,
  constantTimeEqual,
  identityKeyId,
  type KeyPair,
  openEarly,
  randomBytes,
  resumeEarly,
  resumeKeys,
  sealTicketBox,
  serverHandshake,
  type TransportKeys,
  wipe,
} from '../crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { decodeMessage, isHandshakeMessage, krbError, plainFrame, SealedCodec, wireCodeFor } from './channel.js'
import { FrameReader } from './frame-reader.js'
import type { TicketIssuer } from './resumption.js'

/** The logging surface the wire layer needs (a winston Logger fits). */
export interface WireLogger {
  debug(msg: string, meta?: Record<string, unknown>): unknown
  info(msg: string, meta?: Record<string, unknown>): unknown
  warn(msg: string, meta?: Record<string, unknown>): unknown
  error(msg: string, meta?: Record<string, unknown>): unknown
}

const silent: WireLogger = { debug() {}, info() {}, warn() {}, error() {} }

/** What a handler knows about the connection a request came on. */
export interface ConnectionContext {
  /** Peer IP address. */
  readonly remoteAddress: string
  /** Peer "address:port". */
  readonly peer: string
  /** Listener name, e.g. "as". */
  readonly listener: string
  /** Transcript hash of this connection's handshake. */
  readonly channelHash: Uint8Array
}

/** Handles one validated request and returns exactly one reply (or throws KrbProtocolError). */
export type RequestHandler = (msg: Message, ctx: ConnectionContext) => Message | Promise<Message>

/** Options of a SecureServer. */
export interface SecureServerOptions {
  /** The KDC's static X25519 key pair (the one used when `staticKeys` is absent). */
  staticKey: KeyPair
  /**
   * During an identity-key rotation (PROTOCOL.md §3.7): the static key pair for the key id a
   * client names in HS_INIT `k` (or a resumption ticket was issued under), `undefined` for one
   * the server does not hold; called with `undefined` for a client that names none (the
   * default key). Asked on every handshake, so a KDC switches keys without restarting its
   * listeners. Absent: `staticKey`, for every id that is its own.
   */
  staticKeys?: (kid: Uint8Array | undefined) => KeyPair | undefined
  /** Name used in logs. @default "listener" */
  name?: string
  /** Address to bind. @default "127.0.0.1" */
  host?: string
  /** Port; 0 picks a free one. @default 0 */
  port?: number
  /** Largest frame body accepted, bytes. @default 65536 */
  maxFrameBytes?: number
  /**
   * Time allowed from connect to a completed handshake, ms. Both timeouts are checked by one
   * sweep per server every eighth of the shorter one (5 to 250 ms), so a connection is ended
   * at most one sweep late. @default 5000
   */
  handshakeTimeoutMs?: number
  /** Time a connection may go without a complete frame, ms (checked as handshakeTimeoutMs is). @default 60000 */
  idleTimeoutMs?: number
  /** Most open connections in total. @default 4096 */
  maxConnections?: number
  /** Most open connections from one IPv4 address or one IPv6 /64 (see peerBucket). @default 512 */
  maxConnectionsPerPeer?: number
  /** Requests queued on one connection before reading pauses. @default 32 */
  maxPendingPerConnection?: number
  /** Grace period for in-flight requests on close(), ms. @default 5000 */
  closeGraceMs?: number
  /**
   * Offer transport resumption (PROTOCOL.md §3.6): hand clients tickets in HS_RESP and
   * accept HS_RESUME. Share one issuer among the listeners of a KDC. Without it,
   * HS_RESUME is refused with TSR_ERR_RESUME and clients do full handshakes.
   */
  resumption?: TicketIssuer
  logger?: WireLogger
}

/** Defaults of SecureServerOptions. */
export const DEFAULT_SECURE_SERVER_OPTIONS = {
  name: 'listener',
  host: '127.0.0.1',
  port: 0,
  maxFrameBytes: Limits.MAX_FRAME_BYTES,
  handshakeTimeoutMs: 5000,
  idleTimeoutMs: 60000,
  maxConnections: 4096,
  maxConnectionsPerPeer: 512,
  maxPendingPerConnection: 32,
  closeGraceMs: 5000,
} as const

type ResolvedOptions = Required<Omit<SecureServerOptions, 'logger' | 'resumption'>> & {
  logger: WireLogger
  resumption?: TicketIssuer
}

/** A snapshot of one open connection, for diagnostics and tests. */
export interface ConnectionStats {
  /** Peer "address:port". */
  readonly peer: string
  readonly state: 'handshake' | 'open' | 'closing'
  /** Requests accepted and not yet answered. */
  readonly pending: number
  /** Complete frames received but not yet opened (held back by backpressure). */
  readonly queuedFrames: number
  /** True while the server is not reading from this socket. */
  readonly readPaused: boolean
  /** Reply bytes buffered in user space, not yet handed to the kernel. */
  readonly writableLength: number
  /** Bytes read from the socket so far. */
  readonly bytesRead: number
}

/**
 * Running totals of one listener's connections, kept as plain numbers (the hot path pays an
 * increment) and read by the metrics collector on scrape.
 */
export interface ServerCounters {
  accepted: number
  /** Refused at accept: the server is closing. */
  refusedShuttingDown: number
  /** Refused at accept: maxConnections reached. */
  refusedBusy: number
  /** Refused at accept: the peer's maxConnectionsPerPeer reached. */
  refusedPeerLimit: number
  /** Connections opened by a full (X25519) handshake. */
  fullHandshakes: number
  /** Connections opened by redeeming a resumption ticket. */
  resumedHandshakes: number
  /** HS_RESUME refused, by reason ('not-offered' or a RefusalReason). */
  resumptionRefused: Record<string, number>
}

// How long a connection we have ended may linger before it is destroyed, ms.
const LINGER_MS = 2000

// Node clamps a timer above 2^31-1 ms to 1 ms: a "very long" timeout would fire at once.
const MAX_TIMER_MS = 0x7fffffff

function checkPositive(name: string, v: number, max: number = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(v) || v < 1 || v > max) throw new RangeError(`${name} must be an integer in [1, ${max}]`)
}

/** True when `x` has a `then` method (a promise, or any thenable). */
export function isPromiseLike<T>(x: T | PromiseLike<T>): x is PromiseLike<T> {
  return typeof (x as Partial<PromiseLike<T>> | null)?.then === 'function'
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Expand an IPv6 address (no zone) to its 8 groups, or undefined if it is not one. */
function ipv6Groups(addr: string): number[] | undefined {
  let text = addr
  let tail: number[] = []
  // A dotted IPv4 tail (::ffff:192.0.2.1, ::192.0.2.1) is the last two groups.
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (v4) {
    if (!net.isIPv4(v4[2]!)) return undefined
    const b = v4[2]!.split('.').map(Number)
    tail = [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!]
    text = v4[1]!.endsWith('::') ? v4[1]! : v4[1]!.slice(0, -1)
  }
  const halves = text.split('::')
  if (halves.length > 2) return undefined
  const parse = (h: string) => (h === '' ? [] : h.split(':').map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? Number.parseInt(g, 16) : Number.NaN)))
  const head = parse(halves[0]!)
  const rest = halves.length === 2 ? parse(halves[1]!) : []
  const known = head.length + rest.length + tail.length
  if (halves.length === 1 ? known !== 8 : known > 7) return undefined
  const groups = [...head, ...new Array(8 - known).fill(0), ...rest, ...tail]
  return groups.some((g) => Number.isNaN(g)) ? undefined : groups
}

/**
 * The bucket of a peer address for maxConnectionsPerPeer: an IPv4 address is its own
 * bucket; an IPv6 address counts by its /64 prefix (one host, or one site, usually holds a
 * whole /64, so per-address counting would let it open 2^64 x the cap); an IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d, how a dual-stack listener sees IPv4 peers) counts as its
 * IPv4 address. Anything else (unparsable) is its own bucket.
 */
export function peerBucket(address: string): string {
  if (net.isIPv4(address)) return address
  const zone = address.indexOf('%')
  const groups = ipv6Groups((zone >= 0 ? address.slice(0, zone) : address).toLowerCase())
  if (!groups) return address
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff)
    return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join('.')
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`
}

/** A TCP listener speaking the encrypted transport. */
export class SecureServer {
  readonly options: ResolvedOptions
  private readonly server: net.Server
  private readonly conns = new Set<ServerConnection>()
  private readonly perPeer = new Map<string, number>()
  private readonly ownKeyId: Uint8Array
  private closing = false
  private closed: Promise<void> | undefined
  /**
   * Period of the timeout sweep, ms: an eighth of the shorter of the handshake and idle
   * timeouts, between 5 and 250 ms.
   */
  readonly tickMs: number
  /** Connection totals since start (metrics). */
  readonly counters: ServerCounters = {
    accepted: 0,
    refusedShuttingDown: 0,
    refusedBusy: 0,
    refusedPeerLimit: 0,
    fullHandshakes: 0,
    resumedHandshakes: 0,
    resumptionRefused: {},
  }

  constructor(
    options: SecureServerOptions,
    readonly handler: RequestHandler,
  ) {
    this.options = { ...DEFAULT_SECURE_SERVER_OPTIONS, logger: silent, ...options } as ResolvedOptions
    for (const k of ['maxConnections', 'maxConnectionsPerPeer', 'maxPendingPerConnection'] as const)
      checkPositive(k, this.options[k])
    for (const k of ['handshakeTimeoutMs', 'idleTimeoutMs', 'closeGraceMs'] as const) checkPositive(k, this.options[k], MAX_TIMER_MS)
    // Checked here rather than by the first connection's FrameReader, which would throw inside accept().
    checkPositive('maxFrameBytes', this.options.maxFrameBytes, 0xffffffff)
    if (options.staticKey?.secretKey?.length !== 32) throw new TypeError('staticKey must be an X25519 key pair')
    this.ownKeyId = identityKeyId(options.staticKey.publicKey)
    this.tickMs = Math.min(250, Math.max(5, Math.floor(Math.min(this.options.handshakeTimeoutMs, this.options.idleTimeoutMs) / 8)))
    // allowHalfOpen: a peer that sends its requests then shuts down its write side still
    // gets every reply; the connection ends our side once the queue is answered.
    this.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (s) => this.accept(s))
    // A failure to listen is the caller's to report (listen() rejects); only later errors are logged here.
    this.server.on('error', (err) => {
      if (this.server.listening) this.options.logger.error('listener error', { listener: this.options.name, err: err.message })
    })
  }

  /** The static key pair for a key id (see SecureServerOptions.staticKeys). */
  staticKeyFor(kid: Uint8Array | undefined): KeyPair | undefined {
    const o = this.options
    if (o.staticKeys) return o.staticKeys(kid)
    return kid === undefined || constantTimeEqual(kid, this.ownKeyId) ? o.staticKey : undefined
  }

  /** Start listening; resolves with the bound address. */
  listen(): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err)
      this.server.once('error', onError)
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', onError)
        resolve(this.server.address() as net.AddressInfo)
      })
    })
  }

  /** The bound address (after listen). */
  address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo
  }

  /** True while the listening socket is bound. */
  get isListening(): boolean {
    return this.server.listening
  }

  /** Open connections right now. */
  get connectionCount(): number {
    return this.conns.size
  }

  /** A snapshot of every open connection (diagnostics, tests). */
  connectionStats(): ConnectionStats[] {
    return [...this.conns].map((c) => c.stats())
  }

  /**
   * Stop accepting, let in-flight requests finish (up to closeGraceMs), tell idle
   * peers TSR_ERR_SHUTTING_DOWN, then resolve once every socket is closed. Calling it
   * again returns the same promise.
   */
  close(): Promise<void> {
    this.closed ??= this.shutdown()
    return this.closed
  }

  private async shutdown(): Promise<void> {
    this.closing = true
    if (this.sweeper && this.conns.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
    const listenerClosed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    // The listener's close callback can run before the sockets' own 'close' events:
    // wait for both, so that connectionCount is 0 once close() resolves.
    const closed = Promise.all([listenerClosed, ...[...this.conns].map((c) => c.closed)])
    for (const c of this.conns) c.drain()
    const deadline = setTimeout(() => {
      for (const c of this.conns) c.destroy()
    }, this.options.closeGraceMs)
    deadline.unref()
    await closed
    clearTimeout(deadline)
  }

  private accept(socket: net.Socket): void {
    const peerAddr = socket.remoteAddress ?? 'unknown'
    const bucket = peerBucket(peerAddr)
    const n = this.perPeer.get(bucket) ?? 0
    if (this.closing || this.conns.size >= this.options.maxConnections || n >= this.options.maxConnectionsPerPeer) {
      const code = this.closing ? ErrorCode.TSR_ERR_SHUTTING_DOWN : ErrorCode.TSR_ERR_BUSY
      if (this.closing) this.counters.refusedShuttingDown++
      else if (this.conns.size >= this.options.maxConnections) this.counters.refusedBusy++
      else this.counters.refusedPeerLimit++
      this.options.logger.warn('connection refused', { listener: this.options.name, peer: peerAddr, code })
      socket.on('error', () => {})
      // Read and discard what the peer already sent: closing with unread data would send
      // an RST that can destroy our error frame before the peer reads it.
      socket.on('end', () => socket.destroy())
      socket.resume()
      socket.end(plainFrame(krbError(code, this.closing ? 'server is shutting down' : 'too many connections')))
      setTimeout(() => socket.destroy(), 1000).unref()
      return
    }
    this.perPeer.set(bucket, n + 1)
    this.counters.accepted++
    this.conns.add(new ServerConnection(this, socket, peerAddr, bucket, performance.now()))
    this.sweeper ??= this.startSweeper()
  }

  /** @internal A connection's socket closed: forget it. */
  forget(conn: ServerConnection, bucket: string): void {
    this.conns.delete(conn)
    const left = (this.perPeer.get(bucket) ?? 1) - 1
    if (left <= 0) this.perPeer.delete(bucket)
    else this.perPeer.set(bucket, left)
  }

  /**
   * Handshake and idle timeouts: one coarse timer per server, not one per socket. Every
   * {@link tickMs} it looks at each connection's deadline; a timeout fires at most one tick
   * late. It runs while connections are open and stops after a tick with none.
   */
  private startSweeper(): NodeJS.Timeout {
    const t = setInterval(() => {
      if (this.conns.size === 0) {
        clearInterval(t)
        this.sweeper = undefined
        return
      }
      const now = performance.now()
      for (const c of this.conns) if (c.deadline <= now) c.onDeadline(now)
    }, this.tickMs)
    t.unref()
    return t
  }

  private sweeper: NodeJS.Timeout | undefined

  /** @internal */
  get isClosing(): boolean {
    return this.closing
  }
}

class ServerConnection {
  private readonly reader: FrameReader
  private codec: SealedCodec | undefined
  private ctx: ConnectionContext | undefined
  private state: 'handshake' | 'open' | 'closing' = 'handshake'
  /** Requests opened and not yet answered (running or waiting their turn). */
  private pending = 0
  /**
   * Complete frames not yet opened. Frames are opened only while fewer than
   * maxPendingPerConnection requests are pending and the socket is not write-blocked,
   * and reading stops while any are held, so one chunk full of small requests cannot
   * queue an unbounded number of (possibly large) replies.
   */
  private backlog: Buffer[] = []
  private backlogHead = 0
  private queue: Promise<void> = Promise.resolve()
  private writeBlocked = false
  /**
   * When the current timeout (handshake, then idle) is due, on performance.now(); the
   * server's sweep calls {@link onDeadline} once it has passed. Infinity: none.
   */
  deadline: number
  private lingerTimer: NodeJS.Timeout | undefined
  /** The peer shut down its side: answer what is queued, then end ours. */
  private peerEnded = false
  /** The server is closing: no new requests; finish the pending ones, then SHUTTING_DOWN. */
  private shuttingDown = false
  /** Frames written while pump() runs, sent in one write when it returns. */
  private outbox: Buffer[] | undefined
  private outboxBytes = 0
  private pumping = false
  private closeWaiters: (() => void)[] | undefined
  private isClosed = false

  constructor(
    private readonly server: SecureServer,
    private readonly socket: net.Socket,
    private readonly remoteAddress: string,
    private readonly bucket: string,
    now: number,
  ) {
    const o = server.options
    this.reader = new FrameReader(o.maxFrameBytes)
    this.deadline = now + o.handshakeTimeoutMs
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err) => o.logger.debug('socket error', { listener: o.name, peer: this.peer, err: err.message }))
    socket.on('drain', () => {
      this.writeBlocked = false
      this.pump()
    })
    socket.on('close', () => this.cleanup())
    socket.on('end', () => {
      this.peerEnded = true
      // Already ending our side: close once our last frame (the error) is flushed.
      if (this.state === 'closing') this.socket.destroySoon()
      else this.pump()
    })
  }

  private peerText: string | undefined

  /** The peer as host:port (logs). */
  private get peer(): string {
    this.peerText ??= `${this.remoteAddress}:${this.socket.remotePort ?? 0}`
    return this.peerText
  }

  /** Resolves once the socket has closed and the connection is forgotten. */
  get closed(): Promise<void> {
    if (this.isClosed) return Promise.resolve()
    return new Promise((resolve) => {
      this.closeWaiters ??= []
      this.closeWaiters.push(resolve)
    })
  }

  /** The server's sweep: the current deadline has passed. */
  onDeadline(now: number): void {
    if (this.state === 'handshake') {
      this.deadline = Number.POSITIVE_INFINITY
      this.fail(ErrorCode.TSR_ERR_TIMEOUT, 'handshake timeout')
      return
    }
    if (this.state === 'closing') {
      this.deadline = Number.POSITIVE_INFINITY
      return
    }
    // Idle: a connection still answering a request is not idle.
    if (this.pending > 0) {
      this.deadline = now + this.server.options.idleTimeoutMs
      return
    }
    this.deadline = Number.POSITIVE_INFINITY
    this.fail(ErrorCode.TSR_ERR_TIMEOUT, 'idle timeout')
  }

  stats(): ConnectionStats {
    return {
      peer: this.peer,
      state: this.state,
      pending: this.pending,
      queuedFrames: this.backlog.length - this.backlogHead,
      readPaused: this.socket.isPaused(),
      writableLength: this.socket.writableLength,
      bytesRead: this.socket.bytesRead,
    }
  }

  /** Server closing: finish in-flight work, then close with SHUTTING_DOWN. */
  drain(): void {
    this.shuttingDown = true
    // Requests not yet opened are dropped: the peer gets SHUTTING_DOWN in their place.
    this.clearBacklog()
    this.pump()
  }

  destroy(): void {
    this.socket.destroy()
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closing' || this.shuttingDown) return
    let frames: Buffer[]
    try {
      frames = this.reader.push(chunk)
    } catch (err) {
      this.failWith(err)
      return
    }
    for (const f of frames) this.backlog.push(f)
    this.pump()
  }

  /** Open held frames while the flow limits allow, then decide on reading and closing. */
  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      this.pumpFrames()
    } finally {
      this.pumping = false
      this.flush()
    }
  }

  private pumpFrames(): void {
    const max = this.server.options.maxPendingPerConnection
    while (this.state !== 'closing' && this.backlogHead < this.backlog.length) {
      if (this.state === 'open' && (this.writeBlocked || this.pending >= max)) break
      const body = this.backlog[this.backlogHead]!
      this.backlogHead++
      if (this.state === 'handshake') this.onHandshake(body)
      else this.onSealed(body)
    }
    if (this.backlogHead >= this.backlog.length) this.clearBacklog()
    this.updateFlow()
    this.maybeFinish()
  }

  private clearBacklog(): void {
    this.backlog = []
    this.backlogHead = 0
  }

  private maybeFinish(): void {
    if (this.state === 'closing' || this.pending > 0 || this.backlogHead < this.backlog.length) return
    if (this.shuttingDown) this.fail(ErrorCode.TSR_ERR_SHUTTING_DOWN, 'server is shutting down')
    else if (this.peerEnded) this.end()
  }

  private onHandshake(body: Buffer): void {
    let msg: Message
    try {
      msg = decodeMessage(body)
    } catch (err) {
      this.failWith(err)
      return
    }
    if (msg.t === MsgType.HS_RESUME) {
      this.onResume(msg)
      return
    }
    if (msg.t !== MsgType.HS_INIT) {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'expected HS_INIT or HS_RESUME')
      return
    }
    // A key id the server does not hold (a realm file from before a retired rotation, or
    // another realm's) gets the default key, as a client naming none: its key confirmation
    // fails on the client's side (TESSERA_HANDSHAKE), exactly as with any wrong transportKey.
    const staticKey = this.server.staticKeyFor(msg.k) ?? this.server.staticKeyFor(undefined)
    if (staticKey === undefined) {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'no transport key')
      return
    }
    let hs: ReturnType<typeof serverHandshake>
    try {
      hs = serverHandshake(staticKey, msg.e)
    } catch {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'bad handshake key share')
      return
    }
    const resp: HsResp = { v: PROTOCOL_VERSION, t: MsgType.HS_RESP, e: hs.e, confirm: hs.confirm }
    const nt = this.ticketFor(hs.keys, staticKey)
    if (nt) resp.nt = nt
    this.write(plainFrame(resp))
    this.server.counters.fullHandshakes++
    this.opened(hs.keys)
  }

  /** HS_RESUME: redeem the ticket, answer HS_RESUMED, then take the early request if any. */
  private onResume(msg: HsResume): void {
    const o = this.server.options
    if (!o.resumption) {
      this.refusedResumption('not-offered')
      this.fail(ErrorCode.TSR_ERR_RESUME, 'resumption is not offered here: do a full handshake')
      return
    }
    const r = o.resumption.redeem(msg.tk, msg.cr, msg.age)
    if ('refused' in r) {
      // The reason goes to our log only: in clear, it would tell anyone on the path whether a
      // ticket is from this process, whether a recorded copy got through first, when we are full.
      o.logger.debug('resumption refused', { listener: o.name, peer: this.peer, reason: r.refused })
      this.refusedResumption(r.refused)
      this.fail(ErrorCode.TSR_ERR_RESUME, 'resumption refused: do a full handshake')
      return
    }
    // The ticket names the static key of the handshake it came from: one the server no longer
    // holds (a retired identity key) ends the resumption as cleanly as an unknown ticket.
    const staticKey = this.server.staticKeyFor(r.skid)
    if (staticKey === undefined) {
      wipe(r.rms)
      o.logger.debug('resumption refused', { listener: o.name, peer: this.peer, reason: 'retired-key' })
      this.fail(ErrorCode.TSR_ERR_RESUME, 'resumption refused: do a full handshake')
      return
    }
    const { h, earlyKey } = resumeEarly(staticKey.publicKey, msg.cr, msg.age, msg.tk, r.rms)
    const ns = randomBytes(32)
    const { confirmKey, keys } = resumeKeys(h, msg.x, ns, r.rms, r.renew)
    wipe(r.rms)
    const resp: HsResumed = { v: PROTOCOL_VERSION, t: MsgType.HS_RESUMED, n: ns, confirm: confirmBox(confirmKey, keys.h) }
    const nt = r.renew ? this.ticketFor(keys, staticKey) : undefined
    if (nt) resp.nt = nt
    else wipe(keys.res, keys.rms)
    this.write(plainFrame(resp))
    this.server.counters.resumedHandshakes++
    this.opened(keys)
    if (msg.x === undefined) {
      wipe(earlyKey)
      return
    }
    const plain = openEarly(earlyKey, msg.x)
    wipe(earlyKey)
    if (plain === null) {
      this.failWith(new TesseraError(TesseraErrorCode.TESSERA_INTEGRITY, 'early request failed to open'))
      return
    }
    let early: Message
    try {
      early = decodeMessage(plain)
    } catch (err) {
      this.failWith(err)
      return
    }
    // Early data may be handled twice (PROTOCOL.md §3.6): only requests for which that is
    // harmless are acted on; anything else is answered MSG_TYPE and must come after the handshake.
    if (!isHandshakeMessage(early) && !EARLY_DATA_TYPES.includes(early.t)) {
      this.take(
        early,
        new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE', {
          message: `message type ${early.t} is not accepted as early data; send it after the handshake`,
        }),
      )
      return
    }
    this.take(early)
  }

  private refusedResumption(reason: string): void {
    const r = this.server.counters.resumptionRefused
    r[reason] = (r[reason] ?? 0) + 1
  }

  /** A ticket box for a client, if resumption is offered; wipes the connection's resumption keys either way. */
  private ticketFor(keys: TransportKeys, staticKey: KeyPair): Uint8Array | undefined {
    const issuer = this.server.options.resumption
    let box: Uint8Array | undefined
    // A closed issuer (an embedder closed it before the server) just stops handing out tickets.
    const tk = issuer && !issuer.isClosed && keys.rms ? issuer.issue(keys.rms, identityKeyId(staticKey.publicKey)) : undefined
    if (issuer && tk && keys.res) box = sealTicketBox(keys.res, issuer.lifetimeS, tk)
    wipe(keys.res, keys.rms)
    return box
  }

  private opened(keys: TransportKeys): void {
    const o = this.server.options
    this.codec = new SealedCodec(keys, 'server')
    const conn = this
    this.ctx = {
      remoteAddress: this.remoteAddress,
      // Made only when asked (a log line): the port is a system call and the string an allocation.
      get peer() {
        return conn.peer
      },
      listener: o.name,
      channelHash: keys.h,
    }
    this.state = 'open'
    this.deadline = performance.now() + o.idleTimeoutMs
  }

  private onSealed(body: Buffer): void {
    let msg: Message
    try {
      msg = this.codec!.open(body)
    } catch (err) {
      this.failWith(err)
      return
    }
    this.deadline = performance.now() + this.server.options.idleTimeoutMs
    this.take(msg)
  }

  /** Queue one opened request for the handler (or, with `refusal`, answer that instead). */
  private take(msg: Message, refusal?: KrbProtocolError): void {
    if (isHandshakeMessage(msg)) {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'handshake message after the handshake')
      return
    }
    this.pending++
    if (this.pending === 1 && refusal === undefined) {
      // Nothing ahead of it: ask the handler now. A reply it has at once (the TGS with every
      // principal cached) is sealed and written in this same turn, without a promise; the
      // caller (pump) goes on with the next frame, so pipelined requests never nest.
      let reply: Message | PromiseLike<Message>
      let now: boolean
      try {
        reply = this.server.handler(msg, this.ctx!)
        // Looking at `then` runs handler code too (a getter): it must not throw out of pump().
        now = !isPromiseLike(reply)
      } catch (err) {
        reply = Promise.reject(err)
        now = false
      }
      if (now) {
        this.answerSafely(reply as Message, undefined)
        return
      }
      // Not Promise.resolve(reply): that reads reply.constructor, which can throw as well.
      const later = reply
      this.queue = new Promise<Message>((resolve) => resolve(later))
        .then(
          (r) => this.settle(r, undefined),
          (err: unknown) => this.settle(undefined, err),
        )
        .catch((err: unknown) => this.lost(err))
      return
    }
    // process() handles its own failures; the catch only keeps the chain alive.
    this.queue = this.queue.then(() => this.process(msg, refusal)).catch((err: unknown) => this.lost(err))
  }

  /** The last resort of the reply chain (settle() or the pump after it threw): drop the connection, keep the chain. */
  private lost(err: unknown): void {
    this.destroy()
    const o = this.server.options
    try {
      o.logger.error('reply could not be sent', { listener: o.name, peer: this.peer, err: errText(err) })
    } catch {
      // nothing more to do for this connection
    }
  }

  private async process(msg: Message, refusal?: KrbProtocolError): Promise<void> {
    let reply: Message | undefined
    let failure: unknown
    try {
      if (refusal) throw refusal
      reply = await this.server.handler(msg, this.ctx!)
    } catch (err) {
      failure = err
    }
    this.settle(reply, failure)
  }

  /** An asynchronous answer: send it, then open what waited for it. Never throws. */
  private settle(reply: Message | undefined, failure: unknown): void {
    if (this.answerSafely(reply, failure)) this.pump()
  }

  /** {@link answer}, destroying the connection if even that fails; false then. Never throws. */
  private answerSafely(reply: Message | undefined, failure: unknown): boolean {
    try {
      this.answer(reply, failure)
      return true
    } catch (err) {
      this.lost(err)
      return false
    }
  }

  /** Seal and write the answer to the oldest pending request: `reply`, or the refusal for `failure`. */
  private answer(reply: Message | undefined, failure: unknown): void {
    const o = this.server.options
    let out: Message
    if (reply === undefined) {
      const err = failure
      if (err instanceof KrbProtocolError) {
        // A KrbProtocolError's message is written for the person behind the peer (e-text, as in
        // MIT's "Clock skew too great"); handlers never put secrets or internal detail in it.
        o.logger.debug('request refused', { listener: o.name, peer: this.peer, code: err.code, status: err.status })
        out = krbError(err.code, err.message, err.serverTime ?? Date.now(), err.edata as never)
      } else {
        o.logger.error('request handler failed', { listener: o.name, peer: this.peer, err: errText(err) })
        out = krbError(ErrorCode.KRB_ERR_GENERIC, 'internal error')
      }
    } else out = reply
    // A reply that breaks the schema (a handler bug, or a bad code in a thrown error) would
    // make the peer drop the connection: send KRB_ERR_GENERIC instead and log the cause.
    try {
      out = validateMessage(out)
    } catch (err) {
      o.logger.error('handler reply is not a valid message', { listener: o.name, peer: this.peer, err: errText(err) })
      out = krbError(ErrorCode.KRB_ERR_GENERIC, 'internal error')
    }
    this.pending--
    if (this.state === 'closing') return
    let sealed: Buffer
    try {
      sealed = this.codec!.seal(out)
    } catch (err) {
      o.logger.error('reply could not be encoded', { listener: o.name, peer: this.peer, err: errText(err) })
      sealed = this.codec!.seal(krbError(ErrorCode.KRB_ERR_GENERIC, 'internal error'))
    }
    this.write(sealed)
  }

  private write(buf: Buffer): void {
    if (this.socket.destroyed || this.socket.writableEnded) return
    // Inside pump() (a handshake answer and the early reply, or synchronous replies to
    // pipelined requests): held, and sent in one write when pump() returns.
    if (this.pumping) {
      if (this.outbox === undefined) this.outbox = [buf]
      else this.outbox.push(buf)
      this.outboxBytes += buf.length
      // Backpressure is judged as if each frame were written at once: a full socket buffer
      // stops the pump (writeBlocked) before more requests are opened.
      if (this.outboxBytes + this.socket.writableLength >= this.socket.writableHighWaterMark) this.flush()
      return
    }
    this.send(buf)
  }

  /** Send what pump() held back. */
  private flush(): void {
    const out = this.outbox
    if (out === undefined) return
    this.outbox = undefined
    this.outboxBytes = 0
    if (this.socket.destroyed || this.socket.writableEnded) return
    this.send(out.length === 1 ? out[0]! : Buffer.concat(out))
  }

  private send(buf: Buffer): void {
    // Replies finished in the same turn of the event loop (pipelined requests) go out in
    // one write: cork now, uncork once the loop has run.
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      setImmediate(this.uncork)
    }
    if (!this.socket.write(buf)) this.writeBlocked = true
  }

  private corked = false
  private readonly uncork = (): void => {
    this.corked = false
    this.socket.uncork()
  }

  private updateFlow(): void {
    const stop =
      this.state !== 'closing' &&
      (this.shuttingDown ||
        this.writeBlocked ||
        this.pending >= this.server.options.maxPendingPerConnection ||
        this.backlogHead < this.backlog.length)
    if (stop && !this.socket.isPaused()) this.socket.pause()
    else if (!stop && this.socket.isPaused()) this.socket.resume()
  }

  private failWith(err: unknown): void {
    const text =
      err instanceof TesseraError && err.code !== TesseraErrorCode.TESSERA_INTEGRITY ? err.message : 'sealed frame rejected'
    this.fail(wireCodeFor(err), text)
  }

  /** Send one error (sealed if the channel is up, else in clear) and close. */
  private fail(code: number, text: string): void {
    if (this.state === 'closing') return
    const o = this.server.options
    o.logger.debug('closing connection', { listener: o.name, peer: this.peer, code, reason: text })
    const err = krbError(code, text)
    try {
      this.write(this.codec ? this.codec.seal(err) : plainFrame(err))
    } catch {
      // nothing more to say to this peer
    }
    this.end()
  }

  /** End our side; keep reading (and discarding) until the peer's FIN, or destroy after LINGER_MS. */
  private end(): void {
    if (this.state === 'closing') return
    this.state = 'closing'
    this.reader.reset()
    this.clearBacklog()
    this.deadline = Number.POSITIVE_INFINITY
    this.flush()
    // The peer has ended and everything we wrote is with the kernel: close() sends our FIN
    // after it, as end() would, without a separate shutdown and the stream's finish round
    // (the path of every one-request connection). Anything still buffered here goes through end().
    if (this.peerEnded && !this.corked && this.socket.writableLength === 0) {
      this.socket.destroy()
      return
    }
    this.socket.end()
    if (this.peerEnded) {
      this.socket.destroySoon()
    } else {
      this.socket.resume()
      this.lingerTimer = setTimeout(() => this.socket.destroy(), LINGER_MS)
      this.lingerTimer.unref()
    }
  }

  private cleanup(): void {
    this.state = 'closing'
    this.clearBacklog()
    this.deadline = Number.POSITIVE_INFINITY
    this.outbox = undefined
    if (this.lingerTimer) clearTimeout(this.lingerTimer)
    this.codec?.destroy()
    this.isClosed = true
    this.server.forget(this, this.bucket)
    const waiters = this.closeWaiters
    if (waiters) setImmediate(() => {
      for (const w of waiters) w()
    })
  }
}
