/** Client side of the encrypted transport: connect, handshake, then ordered request/reply. */
import net from 'node:net'
import { Limits } from '../../proto/limits.js'
import type { KrbError, Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { clientHandshakeFinish, type KeyPair, x25519KeyPair } from '../crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { decodeMessage, plainFrame, SealedCodec } from './channel.js'
import { FrameReader } from './frame-reader.js'

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

/** An established, encrypted connection to one listener. Replies come back in request order. */
export class ClientChannel {
  private readonly pending: Pending[] = []
  private closedError: Error | undefined
  private readonly closeListeners: (() => void)[] = []

  /** @internal use connectChannel() */
  constructor(
    private readonly socket: net.Socket,
    private readonly reader: FrameReader,
    private readonly codec: SealedCodec,
    readonly channelHash: Uint8Array,
  ) {
    socket.removeAllListeners('data')
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err) =>
      this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `connection error: ${err.message}`, { cause: err })),
    )
    socket.on('close', () =>
      this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'connection closed by the server')),
    )
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
    if (this.closedError) return Promise.reject(this.closedError)
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
    return new Promise<Message>((resolve, reject) => {
      // A late reply would desynchronise the ordered stream: a timed-out or aborted request ends the channel.
      const timer = setTimeout(() => {
        this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_TIMEOUT, `no reply within ${timeoutMs} ms`))
      }, timeoutMs)
      const onAbort = () => this.shutdown(abortError(signal!))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.pending.push({
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
        },
      })
      this.socket.write(sealed)
    })
  }

  /** Close the connection; pending requests fail with TESSERA_CHANNEL_CLOSED. */
  close(): void {
    this.shutdown(new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'connection closed'))
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

/** Open a TCP connection and run the handshake. Rejects with TesseraError (TIMEOUT, NETWORK, HANDSHAKE, ABORTED) or KrbProtocolError (e.g. TSR_ERR_BUSY). */
export function connectChannel(opts: ChannelOptions): Promise<ClientChannel> {
  const { signal } = opts
  if (signal?.aborted) return Promise.reject(abortError(signal))
  if (opts.serverKey?.length !== 32) return Promise.reject(new TypeError('serverKey must be a 32-byte X25519 public key'))
  const connectTimeoutMs = opts.connectTimeoutMs ?? 3000
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 3000
  let reader: FrameReader
  try {
    checkTimeout('connectTimeoutMs', connectTimeoutMs)
    checkTimeout('handshakeTimeoutMs', handshakeTimeoutMs)
    reader = new FrameReader(opts.maxFrameBytes ?? Limits.MAX_FRAME_BYTES)
  } catch (err) {
    return Promise.reject(err)
  }
  return new Promise<ClientChannel>((resolve, reject) => {
    const socket = net.connect({ host: opts.host, port: opts.port, noDelay: true })
    const eph: KeyPair = x25519KeyPair()
    let done = false
    const finish = (err: Error | null, ch?: ClientChannel) => {
      if (done) return
      done = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      socket.off('error', onError)
      socket.off('close', onClose)
      if (err) {
        socket.destroy()
        reject(err)
      } else resolve(ch!)
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
      socket.write(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: eph.publicKey }))
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
      if (msg.t !== MsgType.HS_RESP) {
        finish(new TesseraError(TesseraErrorCode.TESSERA_HANDSHAKE, 'unexpected handshake reply'))
        return
      }
      const keys = clientHandshakeFinish(opts.serverKey, eph, msg.e, msg.confirm)
      if (!keys) {
        finish(
          new TesseraError(
            TesseraErrorCode.TESSERA_HANDSHAKE,
            `${opts.host}:${opts.port} could not prove it holds the KDC key (wrong KDC public key in realm.json?)`,
          ),
        )
        return
      }
      const ch = new ClientChannel(socket, reader, new SealedCodec(keys, 'client'), keys.h)
      finish(null, ch)
      // Frames coalesced with HS_RESP belong to the channel.
      ch.handleFrames(frames.slice(1))
    })
  })
}

