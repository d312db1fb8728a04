/** Client side of the encrypted transport: connect, handshake, then ordered request/reply. */
import net from 'node:net'
import { Limits } from '../../proto/limits.js'
import type { KrbError, Message } from '../../proto/messages.js'
import { EARLY_DATA_TYPES, MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { ErrorCode } from '../../proto/error-codes.js'
import type { HsResume } from '../../proto/messages.js'
import {
  checkConfirm,
  clientHandshakeFinish,
  type KeyPair,
  openTicketBox,
  randomBytes,
  resumeEarly,
  resumeKeys,
  sealEarly,
  type TransportKeys,
  wipe,
  wipeTransportKeys,
  x25519KeyPair,
  identityKeyId,
} from '../crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { decodeMessage, plainFrame, SealedCodec } from './channel.js'
import { withEncoded } from './codec.js'
import { FrameReader } from './frame-reader.js'
import { type ClientTicket, ResumptionStore } from './resumption.js'

/** Options of connectChannel. */
export interface ChannelOptions {
  host: string
  port: number
  /** The server's static X25519 public key (from realm.json). */
  serverKey: Uint8Array
  /** Time allowed for the TCP connect, ms. @default 3000 */
  connectTimeoutMs?: number
  /** Time allowed for the handshake after connect, ms. @default 3000 */
  handshakeTimeoutMs?: number
  /** Largest frame accepted from the server. @default 65536 */
  maxFrameBytes?: number
  signal?: AbortSignal
  /**
   * Resumption tickets (PROTOCOL.md §3.6). With a ticket for this server the connection
   * skips X25519 (and connectAndRequest sends its request as early data); every ticket the
   * server hands out is stored here. Without a store the client does full handshakes and
   * ignores tickets.
   */
  resumption?: ResumptionStore
}

/** Options of one request. */
export interface RequestOptions {
  /** Time allowed for the reply, ms. @default 10000 */
  timeoutMs?: number
  signal?: AbortSignal
}

interface Pending {
  resolve(m: Message): void
  reject(e: Error): void
  cleanup(): void
}

// Node clamps a timer above 2^31-1 ms to 1 ms: a "very long" timeout would fire at once.
function checkTimeout(name: string, ms: number): void {
  if (!Number.isInteger(ms) || ms < 1 || ms > 0x7fffffff) throw new RangeError(`${name} must be an integer in [1, 2^31-1] ms`)
}

function abortError(signal: AbortSignal): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_ABORTED, 'operation aborted', { cause: signal.reason })
}

/** A KRB_ERROR from the server as a KrbProtocolError carrying its server time and edata. */
function peerError(msg: KrbError, message: string): KrbProtocolError {
  const err = new KrbProtocolError(msg.code, msg.text, { message })
  err.serverTime = msg.stime
  if (msg.edata) err.edata = msg.edata
  return err
}

/** The closed-state reason of a channel closed by its owner with nothing pending (shared: never thrown from a request in flight). */
const CLOSED_BY_US = new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'connection closed')

/** An established, encrypted connection to one listener. Replies come back in request order. */
export class ClientChannel {
  private readonly pending: Pending[] = []
  private closedError: Error | undefined
  private readonly closeListeners: (() => void)[] = []
  /** True if this connection was resumed from a ticket (no X25519; PROTOCOL.md §3.6). */
  resumed = false

  /** @internal use connectChannel() */
  constructor(
    private readonly socket: net.Socket,
    private readonly reader: FrameReader,
    private readonly codec: SealedCodec,
    readonly channelHash: Uint8Array,
  ) {
    socket.removeAllListeners('data')
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    // Errors are built only if they will be used: an Error captures a stack trace (~20 µs),
    // and every connection ends with a close event after close().
    socket.on('error', (err) => {
      if (!this.closedError)
        this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `connection error: ${err.message}`, { cause: err }))
    })
    socket.on('close', () => {
      if (!this.closedError) this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'connection closed by the server'))
    })
  }

  /** Why requests fail now: a fresh error (with its own stack) when the owner closed the channel. */
  private closedReason(): Error {
    const e = this.closedError!
    return e === CLOSED_BY_US ? new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'connection closed') : e
  }

  /** True once the connection is closed or failed. */
  get closed(): boolean {
    return this.closedError !== undefined
  }

  /** Requests awaiting a reply. */
  get inFlight(): number {
    return this.pending.length
  }

  /** Called once when the channel closes. */
  onClose(fn: () => void): void {
    if (this.closed) fn()
    else this.closeListeners.push(fn)
  }

  /** Send one message and resolve with the reply (a KRB_ERROR reply resolves too; see expectReply). */
  request(msg: Message, opts: RequestOptions = {}): Promise<Message> {
    if (this.closedError) return Promise.reject(this.closedReason())
    const { signal } = opts
    if (signal?.aborted) return Promise.reject(abortError(signal))
    const timeoutMs = opts.timeoutMs ?? 10000
    // Seal before queueing: a message that cannot be encoded must neither send a frame
    // nor take a place in the reply queue (the next reply would go to the wrong caller).
    // Nothing may fail between sealing and sending, or the nonce counters diverge.
    let sealed: Buffer
    try {
      checkTimeout('timeoutMs', timeoutMs)
      sealed = this.codec.seal(msg)
    } catch (err) {
      return Promise.reject(err)
    }
    const p = this.expectReply(opts)
    this.socket.write(sealed)
    return p
  }

  /**
   * @internal Queue a reply slot for a request already sent (HS_RESUME early data), or
   * about to be. The slot is always taken: a reply is coming for it. If the caller has
   * already given up (aborted signal), the channel is closed instead of leaving the reply
   * to be taken for the next request's.
   */
  expectReply(opts: RequestOptions = {}): Promise<Message> {
    if (this.closedError) return Promise.reject(this.closedReason())
    const { signal } = opts
    const timeoutMs = opts.timeoutMs ?? 10000
    return new Promise<Message>((resolve, reject) => {
      const entry: Pending = {
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
        },
      }
      // A late reply would desynchronise the ordered stream: a timed-out or aborted request
      // ends the channel. That request fails with its own reason; the others on the channel
      // only lost their connection (TESSERA_CHANNEL_CLOSED, which callers may retry).
      const end = (own: Error) => {
        const i = this.pending.indexOf(entry)
        if (i >= 0) {
          this.pending.splice(i, 1)
          entry.cleanup()
          entry.reject(own)
        }
        this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, `connection closed: ${own.message} on another request`))
      }
      const timer = setTimeout(() => end(new TesseraError(TesseraErrorCode.TESSERA_TIMEOUT, `no reply within ${timeoutMs} ms`)), timeoutMs)
      const onAbort = () => end(abortError(signal!))
      this.pending.push(entry)
      if (signal?.aborted) onAbort()
      else signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Close the connection; pending requests fail with TESSERA_CHANNEL_CLOSED. */
  close(): void {
    if (this.closedError) return
    // Nobody waits on this error unless requests are pending: skip the stack trace then.
    this.shutdown(
      this.pending.length > 0 ? new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'connection closed') : CLOSED_BY_US,
    )
  }

  private onData(chunk: Buffer): void {
    let frames: Buffer[]
    try {
      frames = this.reader.push(chunk)
    } catch (err) {
      this.shutdown(err as Error)
      return
    }
    this.handleFrames(frames)
  }

  /** @internal */
  handleFrames(frames: Buffer[]): void {
    for (const body of frames) {
      if (this.closedError) return
      let msg: Message
      try {
        msg = this.codec.open(body)
      } catch (err) {
        this.shutdown(err as Error)
        return
      }
      const p = this.pending.shift()
      if (!p) {
        // Unsolicited: only an error before close is legitimate.
        const err = msg.t === MsgType.KRB_ERROR ? peerError(msg, `server closed the connection: ${msg.text}`)
          : new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'unsolicited message from the server')
        this.shutdown(err)
        return
      }
      p.cleanup()
      p.resolve(msg)
    }
  }

  private shutdown(err: Error): void {
    if (this.closedError) return
    this.closedError = err
    for (const p of this.pending.splice(0)) {
      p.cleanup()
      p.reject(err)
    }
    this.socket.destroy()
    this.codec.destroy()
    for (const fn of this.closeListeners.splice(0)) fn()
  }
}

/** Open a TCP connection and run the handshake (resuming when opts.resumption holds a ticket). Rejects with TesseraError (TIMEOUT, NETWORK, HANDSHAKE, ABORTED) or KrbProtocolError (e.g. TSR_ERR_BUSY). */
export async function connectChannel(opts: ChannelOptions): Promise<ClientChannel> {
  return (await open(opts, undefined, {})).channel
}

/**
 * Open a new connection and send a request on it. With a resumption ticket for this
 * server, and a request that may travel as early data (EARLY_DATA_TYPES: AS, TGS, time),
 * the request goes in HS_RESUME: one round trip after TCP connect and no X25519 on either
 * side. Otherwise it is sent after the handshake. If the server refuses the ticket, the
 * client does a full handshake and sends the request again, built anew by `request` when
 * it is a function: an attacker who raced a copy of the HS_RESUME ahead of ours may have
 * had the first one handled, so a TGS request needs a fresh authenticator (else the KDC
 * answers KRB_AP_ERR_REPEAT). Resolves with the open channel and the reply (a KRB_ERROR
 * reply resolves too).
 */
export async function connectAndRequest(
  opts: ChannelOptions,
  request: Message | (() => Message),
  reqOpts: RequestOptions = {},
): Promise<{ channel: ClientChannel; reply: Message }> {
  const o = openWithRequest(opts, request, reqOpts)
  return { channel: await o.channel, reply: await o.reply }
}

/**
 * {@link connectAndRequest} in two parts: `channel` resolves as soon as the handshake is
 * done (other requests may be queued on it at once; they are answered after this one),
 * `reply` with the reply. If the connection fails, both reject (`reply` never goes
 * unhandled on its own).
 */
export function openWithRequest(
  opts: ChannelOptions,
  request: Message | (() => Message),
  reqOpts: RequestOptions = {},
): { channel: Promise<ClientChannel>; reply: Promise<Message> } {
  const build = typeof request === 'function' ? request : () => request
  let first: Message
  try {
    // Given up already: send nothing (early data cannot be taken back).
    if (reqOpts.signal?.aborted) throw abortError(reqOpts.signal)
    first = build()
  } catch (err) {
    const failed = Promise.reject(err)
    failed.catch(() => {})
    return { channel: failed as Promise<never>, reply: failed as Promise<never> }
  }
  const canEarly = EARLY_DATA_TYPES.includes(first.t)
  const ready = open(opts, canEarly ? first : undefined, reqOpts)
  const reply = ready.then(({ channel, early, fellBack }) => early ?? channel.request(fellBack ? build() : first, reqOpts))
  const channel = ready.then((r) => r.channel)
  reply.catch(() => {})
  channel.catch(() => {})
  return { channel, reply }
}

async function open(
  opts: ChannelOptions,
  earlyMsg: Message | undefined,
  reqOpts: RequestOptions,
): Promise<{ channel: ClientChannel; early?: Promise<Message>; fellBack?: boolean }> {
  const store = opts.resumption
  const id = store && opts.serverKey?.length === 32 ? ResumptionStore.id(opts.host, opts.port, opts.serverKey) : ''
  const ticket = store?.get(id)
  if (!ticket) return attempt(opts, undefined, undefined, reqOpts)
  try {
    return await attempt(opts, ticket, earlyMsg, reqOpts)
  } catch (err) {
    // An unauthenticated refusal: drop the ticket and do a full handshake. The server did not
    // act on our early request, but a copy raced ahead of it by an attacker may have been.
    if (err instanceof KrbProtocolError && err.code === ErrorCode.TSR_ERR_RESUME) {
      store!.refused++
      store!.delete(id)
      return { ...(await attempt(opts, undefined, undefined, reqOpts)), fellBack: earlyMsg !== undefined }
    }
    throw err
  }
}

function attempt(
  opts: ChannelOptions,
  ticket: ClientTicket | undefined,
  earlyMsg: Message | undefined,
  reqOpts: RequestOptions,
): Promise<{ channel: ClientChannel; early?: Promise<Message> }> {
  const { signal } = opts
  if (signal?.aborted) return Promise.reject(abortError(signal))
  if (opts.serverKey?.length !== 32) return Promise.reject(new TypeError('serverKey must be a 32-byte X25519 public key'))
  const connectTimeoutMs = opts.connectTimeoutMs ?? 3000
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 3000
  const store = opts.resumption
  const id = store ? ResumptionStore.id(opts.host, opts.port, opts.serverKey) : ''
  let reader: FrameReader
  let hello: Buffer
  let eph: KeyPair | undefined
  let resume: { h: Uint8Array; x: Uint8Array | undefined; rms: Uint8Array } | undefined
  try {
    checkTimeout('connectTimeoutMs', connectTimeoutMs)
    checkTimeout('handshakeTimeoutMs', handshakeTimeoutMs)
    if (earlyMsg) checkTimeout('timeoutMs', reqOpts.timeoutMs ?? 10000)
    reader = new FrameReader(opts.maxFrameBytes ?? Limits.MAX_FRAME_BYTES)
    if (ticket) {
      const cr = randomBytes(32)
      const age = store!.age(ticket)
      const { h, earlyKey } = resumeEarly(opts.serverKey, cr, age, ticket.tk, ticket.rms)
      const m: HsResume = { v: PROTOCOL_VERSION, t: MsgType.HS_RESUME, tk: ticket.tk, cr, age }
      // Sealed straight from the encoder's scratch (wiped after): no plaintext copy left behind.
      if (earlyMsg) m.x = withEncoded(earlyMsg, (plain) => sealEarly(earlyKey, plain))
      wipe(earlyKey)
      hello = plainFrame(m)
      resume = { h, x: m.x, rms: ticket.rms }
    } else {
      eph = x25519KeyPair()
      // `k` names the static key this client holds (PROTOCOL.md §3.7): during an identity-key
      // rotation the KDC answers with that one, so a client with either realm file gets in.
      hello = plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: eph.publicKey, k: identityKeyId(opts.serverKey) })
    }
  } catch (err) {
    return Promise.reject(err)
  }
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: opts.host, port: opts.port, noDelay: true })
    let done = false
    const finish = (err: Error | null, result?: { channel: ClientChannel; early?: Promise<Message> }) => {
      if (done) return
      done = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.off('error', onError)
      socket.off('close', onClose)
      if (err) {
        if (eph) wipe(eph.secretKey)
        socket.destroy()
        reject(err)
      } else resolve(result!)
    }
    const onAbort = () => finish(abortError(signal!))
    const onError = (err: Error) =>
      finish(
        new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `cannot connect to ${opts.host}:${opts.port}: ${err.message}`, {
          cause: err,
        }),
      )
    const onClose = () =>
      finish(new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `${opts.host}:${opts.port} closed the connection during the handshake`))
    let timer = setTimeout(
      () => finish(new TesseraError(TesseraErrorCode.TESSERA_TIMEOUT, `connect to ${opts.host}:${opts.port} timed out after ${connectTimeoutMs} ms`)),
      connectTimeoutMs,
    )
    signal?.addEventListener('abort', onAbort, { once: true })
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.once('connect', () => {
      clearTimeout(timer)
      timer = setTimeout(
        () => finish(new TesseraError(TesseraErrorCode.TESSERA_TIMEOUT, `handshake with ${opts.host}:${opts.port} timed out`)),
        handshakeTimeoutMs,
      )
      socket.write(hello)
    })
    socket.on('data', (chunk: Buffer) => {
      if (done) return
      let frames: Buffer[]
      let msg: Message
      try {
        frames = reader.push(chunk)
        if (frames.length === 0) return
        msg = decodeMessage(frames[0]!)
      } catch (err) {
        finish(err as Error)
        return
      }
      if (msg.t === MsgType.KRB_ERROR) {
        finish(peerError(msg, `${opts.host}:${opts.port} refused the connection: ${msg.text}`))
        return
      }
      let keys: TransportKeys | null = null
      if (eph && msg.t === MsgType.HS_RESP) keys = clientHandshakeFinish(opts.serverKey, eph, msg.e, msg.confirm)
      else if (resume && msg.t === MsgType.HS_RESUMED) {
        // x is bound into the keys: if it was stripped or one added on the way, confirm fails here.
        const { confirmKey, keys: k } = resumeKeys(resume.h, resume.x, msg.n, resume.rms, msg.nt !== undefined)
        keys = checkConfirm(confirmKey, k.h, msg.confirm) ? k : null
        if (!keys) wipeTransportKeys(k)
      } else {
        finish(new TesseraError(TesseraErrorCode.TESSERA_HANDSHAKE, 'unexpected handshake reply'))
        return
      }
      if (!keys) {
        finish(
          new TesseraError(
            TesseraErrorCode.TESSERA_HANDSHAKE,
            resume
              ? `${opts.host}:${opts.port} did not confirm the resumption (it does not hold the resumption secret, or the HS_RESUME was altered on the way)`
              : `${opts.host}:${opts.port} could not prove it holds the KDC key (wrong KDC public key in realm.json?)`,
          ),
        )
        return
      }
      // A ticket for next time, sealed with this connection's k_res.
      const nt = msg.t === MsgType.HS_RESP || msg.t === MsgType.HS_RESUMED ? msg.nt : undefined
      if (store && nt && keys.res && keys.rms) {
        const t = openTicketBox(keys.res, nt)
        if (t && t.lifetimeS > 1) store.set(id, t.tk, keys.rms, t.lifetimeS)
        else wipe(keys.rms)
      } else wipe(keys.res, keys.rms)
      delete keys.res
      delete keys.rms
      const ch = new ClientChannel(socket, reader, new SealedCodec(keys, 'client'), keys.h)
      if (resume) {
        ch.resumed = true
        if (store) store.resumed++
      }
      // The early request's reply is the first sealed frame from the server.
      const early = resume && earlyMsg ? ch.expectReply(reqOpts) : undefined
      // Nobody may be left with an unhandled rejection if the caller is gone by then.
      early?.catch(() => {})
      finish(null, early ? { channel: ch, early } : { channel: ch })
      // Frames coalesced with the handshake reply belong to the channel.
      ch.handleFrames(frames.slice(1))
    })
  })
}
