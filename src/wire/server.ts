/**
 * The server-side connection layer every listener reuses: handshake, sealed frames,
 * one reply per request in order, handshake and idle timeouts, connection caps
 * (total and per peer), backpressure, graceful close. Nothing a peer sends can throw
 * out of here: every failure becomes a KRB_ERROR to that peer and/or a close.
 */
import net from 'node:net'
import { ErrorCode } from '../../proto/error-codes.js'
import { Limits } from '../../proto/limits.js'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { type KeyPair, serverHandshake } from '../crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { decodeMessage, krbError, plainFrame, SealedCodec, wireCodeFor } from './channel.js'
import { FrameReader } from './frame-reader.js'

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
  /** The KDC's static X25519 key pair. */
  staticKey: KeyPair
  /** Name used in logs. @default "listener" */
  name?: string
  /** Address to bind. @default "127.0.0.1" */
  host?: string
  /** Port; 0 picks a free one. @default 0 */
  port?: number
  /** Largest frame body accepted, bytes. @default 65536 */
  maxFrameBytes?: number
  /** Time allowed from connect to a completed handshake, ms. @default 5000 */
  handshakeTimeoutMs?: number
  /** Time a connection may go without a complete frame, ms. @default 60000 */
  idleTimeoutMs?: number
  /** Most open connections in total. @default 4096 */
  maxConnections?: number
  /** Most open connections from one IP address. @default 512 */
  maxConnectionsPerPeer?: number
  /** Requests queued on one connection before reading pauses. @default 32 */
  maxPendingPerConnection?: number
  /** Grace period for in-flight requests on close(), ms. @default 5000 */
  closeGraceMs?: number
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

type ResolvedOptions = Required<Omit<SecureServerOptions, 'logger'>> & { logger: WireLogger }

function checkPositive(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer`)
}

/** A TCP listener speaking the encrypted transport. */
export class SecureServer {
  readonly options: ResolvedOptions
  private readonly server: net.Server
  private readonly conns = new Set<ServerConnection>()
  private readonly perPeer = new Map<string, number>()
  private closing = false

  constructor(
    options: SecureServerOptions,
    readonly handler: RequestHandler,
  ) {
    this.options = { ...DEFAULT_SECURE_SERVER_OPTIONS, logger: silent, ...options } as ResolvedOptions
    for (const k of [
      'maxFrameBytes',
      'handshakeTimeoutMs',
      'idleTimeoutMs',
      'maxConnections',
      'maxConnectionsPerPeer',
      'maxPendingPerConnection',
    ] as const)
      checkPositive(k, this.options[k])
    if (options.staticKey?.secretKey?.length !== 32) throw new TypeError('staticKey must be an X25519 key pair')
    this.server = net.createServer({ noDelay: true }, (s) => this.accept(s))
    this.server.on('error', (err) => this.options.logger.error('listener error', { listener: this.options.name, err: err.message }))
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

  /** Open connections right now. */
  get connectionCount(): number {
    return this.conns.size
  }

  /**
   * Stop accepting, let in-flight requests finish (up to closeGraceMs), tell idle
   * peers TSR_ERR_SHUTTING_DOWN, then resolve once every socket is closed.
   */
  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
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
    const n = this.perPeer.get(peerAddr) ?? 0
    if (this.closing || this.conns.size >= this.options.maxConnections || n >= this.options.maxConnectionsPerPeer) {
      const code = this.closing ? ErrorCode.TSR_ERR_SHUTTING_DOWN : ErrorCode.TSR_ERR_BUSY
      this.options.logger.warn('connection refused', { listener: this.options.name, peer: peerAddr, code })
      socket.on('error', () => {})
      socket.end(plainFrame(krbError(code, this.closing ? 'server is shutting down' : 'too many connections')))
      setTimeout(() => socket.destroy(), 1000).unref()
      return
    }
    this.perPeer.set(peerAddr, n + 1)
    const conn = new ServerConnection(this, socket, peerAddr)
    this.conns.add(conn)
    socket.once('close', () => {
      this.conns.delete(conn)
      const left = (this.perPeer.get(peerAddr) ?? 1) - 1
      if (left <= 0) this.perPeer.delete(peerAddr)
      else this.perPeer.set(peerAddr, left)
    })
  }

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
  private pending = 0
  private queue: Promise<void> = Promise.resolve()
  private writeBlocked = false
  private readonly handshakeTimer: NodeJS.Timeout
  private idleTimer: NodeJS.Timeout | undefined
  private draining = false
  private readonly peer: string

  constructor(
    private readonly server: SecureServer,
    private readonly socket: net.Socket,
    private readonly remoteAddress: string,
  ) {
    const o = server.options
    this.peer = `${remoteAddress}:${socket.remotePort ?? 0}`
    this.reader = new FrameReader(o.maxFrameBytes)
    this.handshakeTimer = setTimeout(() => this.fail(ErrorCode.TSR_ERR_TIMEOUT, 'handshake timeout'), o.handshakeTimeoutMs)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err) => o.logger.debug('socket error', { listener: o.name, peer: this.peer, err: err.message }))
    socket.on('drain', () => {
      this.writeBlocked = false
      this.updateFlow()
    })
    socket.on('close', () => this.cleanup())
    socket.on('end', () => {
      // Peer half-closed: answer what is queued, then close our side.
      this.draining = true
      if (this.pending === 0) this.end()
    })
  }

  /** Server closing: finish in-flight work, then close with SHUTTING_DOWN if idle. */
  drain(): void {
    this.draining = true
    if (this.pending === 0) this.fail(ErrorCode.TSR_ERR_SHUTTING_DOWN, 'server is shutting down')
  }

  destroy(): void {
    this.socket.destroy()
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closing') return
    let frames: Buffer[]
    try {
      frames = this.reader.push(chunk)
    } catch (err) {
      this.failWith(err)
      return
    }
    for (const body of frames) {
      if (this.isClosing()) return
      if (this.state === 'handshake') this.onHandshake(body)
      else this.onSealed(body)
    }
  }

  private isClosing(): boolean {
    return this.state === 'closing'
  }

  private onHandshake(body: Buffer): void {
    const o = this.server.options
    let msg: Message
    try {
      msg = decodeMessage(body)
    } catch (err) {
      this.failWith(err)
      return
    }
    if (msg.t !== MsgType.HS_INIT) {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'expected HS_INIT')
      return
    }
    let hs: ReturnType<typeof serverHandshake>
    try {
      hs = serverHandshake(o.staticKey, msg.e)
    } catch {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'bad handshake key share')
      return
    }
    this.write(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_RESP, e: hs.e, confirm: hs.confirm }))
    this.codec = new SealedCodec(hs.keys, 'server')
    this.ctx = { remoteAddress: this.remoteAddress, peer: this.peer, listener: o.name, channelHash: hs.keys.h }
    this.state = 'open'
    clearTimeout(this.handshakeTimer)
    this.idleTimer = setTimeout(() => this.onIdle(), o.idleTimeoutMs)
  }

  private onIdle(): void {
    if (this.pending > 0) {
      this.idleTimer?.refresh()
      return
    }
    this.fail(ErrorCode.TSR_ERR_TIMEOUT, 'idle timeout')
  }

  private onSealed(body: Buffer): void {
    let msg: Message
    try {
      msg = this.codec!.open(body)
    } catch (err) {
      this.failWith(err)
      return
    }
    this.idleTimer?.refresh()
    if (msg.t === MsgType.HS_INIT || msg.t === MsgType.HS_RESP) {
      this.fail(ErrorCode.TSR_ERR_HANDSHAKE, 'handshake message after the handshake')
      return
    }
    this.pending++
    this.updateFlow()
    this.queue = this.queue.then(() => this.process(msg))
  }

  private async process(msg: Message): Promise<void> {
    const o = this.server.options
    let reply: Message
    try {
      reply = await this.server.handler(msg, this.ctx!)
    } catch (err) {
      if (err instanceof KrbProtocolError) {
        reply = krbError(err.code, err.message, Date.now(), err.edata as never)
      } else {
        o.logger.error('request handler failed', {
          listener: o.name,
          peer: this.peer,
          err: err instanceof Error ? err.message : String(err),
        })
        reply = krbError(ErrorCode.KRB_ERR_GENERIC, 'internal error')
      }
    }
    this.pending--
    if (this.state !== 'closing') {
      try {
        this.write(this.codec!.seal(reply))
      } catch (err) {
        o.logger.error('reply could not be encoded', { listener: o.name, err: err instanceof Error ? err.message : String(err) })
        this.write(this.codec!.seal(krbError(ErrorCode.KRB_ERR_GENERIC, 'internal error')))
      }
    }
    this.updateFlow()
    if (this.draining && this.pending === 0) {
      if (this.server.isClosing) this.fail(ErrorCode.TSR_ERR_SHUTTING_DOWN, 'server is shutting down')
      else this.end()
    }
  }

  private write(buf: Buffer): void {
    if (this.socket.destroyed) return
    if (!this.socket.write(buf)) {
      this.writeBlocked = true
      this.updateFlow()
    }
  }

  private updateFlow(): void {
    const stop = this.writeBlocked || this.pending >= this.server.options.maxPendingPerConnection
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

  private end(): void {
    this.state = 'closing'
    this.reader.reset()
    this.socket.end()
    setTimeout(() => this.socket.destroy(), 2000).unref()
  }

  private cleanup(): void {
    this.state = 'closing'
    clearTimeout(this.handshakeTimer)
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.codec?.destroy()
  }
}
