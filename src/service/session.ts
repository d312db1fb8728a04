/**
 * SecureSession: an authenticated, encrypted message channel between a client and an app
 * service over any Duplex stream, set up by one AP exchange (proto/PROTOCOL.md §14.3, "SecureSession
 * wire format").
 *
 *   handshake  client -> service  frame(msgpack(AP_REQ))       mutual, with a client subkey
 *              service -> client  frame(msgpack(AP_REP | KRB_ERROR))
 *   keys       base  = HKDF-SHA256(ikm = sessionKey || clientSubkey || serviceSubkey,
 *                                  salt = "", info = "tessera-session-v1", L = 32)
 *              k_c2s = usageKey(base, SESSION_C2S = 1027), k_s2c = usageKey(base, SESSION_S2C = 1028)
 *   messages   frame(uint64be(seq) || secretbox(type || payload, nonce = uint64be(seq) || 0^16, k_dir))
 *              seq = 0, 1, 2... per direction; type 0x00 = data, 0x01 = close
 *
 * Every message must open under the next sequence number, so a forged, replayed, reordered
 * or dropped message ends the session; a stream that ends before the peer's sealed close
 * message is reported as truncated.
 */
import { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { Limits } from '../../proto/limits.js'
import type { Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { buildApReq, verifyApRep } from '../client/ap.js'
import { krbErrorFromReply } from '../client/errors.js'
import type { Credentials } from '../client/kdc-client.js'
import { hkdf, openFrame, sealFrame, usageKey, wipe } from '../crypto/index.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { principalString } from '../krb/parts.js'
import { decodeMessage, krbError, plainFrame } from '../wire/channel.js'
import { FrameReader, frame } from '../wire/frame-reader.js'
import type { ServiceVerifier, VerifiedAp } from './verify-ap-req.js'

/** HKDF info of the session key schedule. */
export const SESSION_INFO = 'tessera-session-v1'
/** Bytes of the cleartext sequence number in front of each sealed message. */
export const SEQ_BYTES = 8
/** Poly1305 tag (bytes). */
const TAG_BYTES = 16
/** Message types, the first plaintext byte of each sealed message. */
export const SessionMsgType = { DATA: 0x00, CLOSE: 0x01 } as const
/** Sealed-message overhead in a frame body: seq(8) + tag(16) + type(1). */
export const SESSION_OVERHEAD = SEQ_BYTES + TAG_BYTES + 1

/** Why a session ended in error (a SessionError's `reason`). */
export type SessionFailure =
  /** A message did not open: modified or injected. */
  | 'FORGED'
  /** A message that was already received came again. */
  | 'REPLAYED'
  /** A message arrived ahead of its turn: reordered, or earlier ones were dropped. */
  | 'REORDERED'
  /** The stream ended without the peer's sealed close message. */
  | 'TRUNCATED'
  /** A frame header announced more than maxFrameBytes. */
  | 'TOO_LARGE'
  /** The peer broke the session protocol (unknown message type, data after close, bad handshake). */
  | 'PROTOCOL'
  /** The stream failed (socket error). */
  | 'NETWORK'
  /** The peer did not answer in time (handshake or close). */
  | 'TIMEOUT'

/** A session ended by an error. `code` is TESSERA_INTEGRITY for FORGED/REPLAYED/REORDERED. */
export class SessionError extends TesseraError {
  constructor(
    code: TesseraErrorCode,
    readonly reason: SessionFailure,
    message: string,
    opts?: ErrorOptions,
  ) {
    super(code, message, opts)
  }
}

/** Options shared by both ends. */
export interface SecureSessionOptions {
  /** Largest frame body accepted (and sent), bytes; checked on the header. @default 65536 */
  maxFrameBytes?: number
  /** Time allowed for the AP exchange, ms. @default 10000 */
  handshakeTimeoutMs?: number
  /** Time close() waits for the peer's close message, ms. @default 5000 */
  closeTimeoutMs?: number
  /** Received bytes held unread (no 'message' listener, iterator not reading) before the stream is paused. @default 1048576 */
  highWaterMark?: number
}

/** Options of SecureSession.client. */
export interface SecureSessionClientOptions extends SecureSessionOptions {
  /** A service ticket for the service at the other end. */
  creds: Credentials
  /** Always true: a session needs the service's subkey, which comes in the AP_REP. */
  mutual?: true
  /** Clock for the authenticator, e.g. `() => kdcClient.now()`. @default Date.now */
  now?: () => number
  /** Channel binding to put in the authenticator. */
  cksum?: Uint8Array
}

/** Options of SecureSession.server. */
export interface SecureSessionServerOptions extends SecureSessionOptions {
  verifier: ServiceVerifier
  /** Channel binding the client's authenticator must carry. */
  cksum?: Uint8Array
}

/** Defaults of SecureSessionOptions. */
export const DEFAULT_SECURE_SESSION_OPTIONS = {
  maxFrameBytes: Limits.MAX_FRAME_BYTES,
  handshakeTimeoutMs: 10_000,
  closeTimeoutMs: 5_000,
  highWaterMark: 1024 * 1024,
} as const

/** Per-direction keys of a session. */
export interface SessionKeys {
  c2s: Uint8Array
  s2c: Uint8Array
}

/** The session key schedule (see the module header). Subkeys absent are left out of the input. */
export function deriveSessionKeys(sessionKey: Uint8Array, clientSubkey?: Uint8Array, serviceSubkey?: Uint8Array): SessionKeys {
  const parts = [sessionKey, clientSubkey, serviceSubkey].filter((k): k is Uint8Array => k !== undefined)
  const ikm = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    ikm.set(p, at)
    at += p.length
  }
  const base = hkdf(ikm, new Uint8Array(0), SESSION_INFO, 32)
  const keys = { c2s: usageKey(base, KeyUsage.SESSION_C2S), s2c: usageKey(base, KeyUsage.SESSION_S2C) }
  wipe(ikm, base)
  return keys
}

type Resolved<T> = { resolve(v: T): void; reject(e: Error): void }

function resolved<T>(): Resolved<T> & { promise: Promise<T> } {
  let resolve!: (v: T) => void
  let reject!: (e: Error) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

function resolveOptions(o: SecureSessionOptions): Required<SecureSessionOptions> {
  const r = {
    maxFrameBytes: o.maxFrameBytes ?? DEFAULT_SECURE_SESSION_OPTIONS.maxFrameBytes,
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? DEFAULT_SECURE_SESSION_OPTIONS.handshakeTimeoutMs,
    closeTimeoutMs: o.closeTimeoutMs ?? DEFAULT_SECURE_SESSION_OPTIONS.closeTimeoutMs,
    highWaterMark: o.highWaterMark ?? DEFAULT_SECURE_SESSION_OPTIONS.highWaterMark,
  }
  if (!Number.isInteger(r.maxFrameBytes) || r.maxFrameBytes <= SESSION_OVERHEAD || r.maxFrameBytes > 0xffffffff)
    throw new RangeError(`maxFrameBytes must be an integer in [${SESSION_OVERHEAD + 1}, 2^32-1]`)
  for (const k of ['handshakeTimeoutMs', 'closeTimeoutMs', 'highWaterMark'] as const)
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new RangeError(`${k} must be a positive integer`)
  return r
}

/**
 * Wait for the first frame of the stream (the handshake reply or request). Leaves the stream
 * paused, with no listener of ours, and returns any frames that came in the same chunks.
 */
function awaitFirstFrame(stream: Duplex, reader: FrameReader, timeoutMs: number, waitingFor: string): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer)
      stream.pause()
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('close', onEnd)
      stream.off('error', onError)
    }
    const fail = (err: Error) => {
      cleanup()
      destroyQuietly(stream)
      reject(err)
    }
    const onData = (chunk: Buffer) => {
      let frames: Buffer[]
      try {
        frames = reader.push(chunk)
      } catch (err) {
        fail(new SessionError((err as TesseraError).code, 'TOO_LARGE', `${(err as Error).message} while waiting for ${waitingFor}`, { cause: err }))
        return
      }
      if (frames.length > 0) {
        cleanup()
        resolve(frames)
      }
    }
    const onEnd = () =>
      fail(new SessionError(TesseraErrorCode.TESSERA_SESSION, 'TRUNCATED', `the connection closed while waiting for ${waitingFor}`))
    const onError = (err: Error) =>
      fail(new SessionError(TesseraErrorCode.TESSERA_NETWORK, 'NETWORK', `connection error while waiting for ${waitingFor}: ${err.message}`, { cause: err }))
    const timer = setTimeout(
      () => fail(new SessionError(TesseraErrorCode.TESSERA_TIMEOUT, 'TIMEOUT', `no ${waitingFor} within ${timeoutMs} ms`)),
      timeoutMs,
    )
    if (stream.destroyed || stream.readableEnded) {
      onEnd()
      return
    }
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('close', onEnd)
    stream.on('error', onError)
    stream.resume()
  })
}

/** Destroy a stream we give up on; errors it emits from now on (e.g. AbortError) concern nobody. */
function destroyQuietly(stream: Duplex): void {
  stream.on('error', () => {})
  stream.destroy()
}

function readSeq(body: Uint8Array): number {
  const v = new DataView(body.buffer, body.byteOffset, SEQ_BYTES)
  const hi = v.getUint32(0)
  // Beyond 2^53-1 is beyond any counter we keep: treat as garbage.
  if (hi > 0x1fffff) return -1
  return hi * 0x100000000 + v.getUint32(4)
}

/** Events of a SecureSession. */
export interface SecureSessionEvents {
  /** An application message. Without a listener, messages are buffered for async iteration. */
  message: [data: Uint8Array]
  /** The session closed cleanly (both close messages exchanged). */
  close: []
  /** The session failed; emitted only when someone listens (see `closed`). */
  error: [err: Error]
}

/** An established session. Create one with SecureSession.client() or SecureSession.server(). */
export class SecureSession extends EventEmitter<SecureSessionEvents> implements AsyncIterable<Uint8Array> {
  /** Resolves when the session has closed cleanly; rejects with the error that ended it. */
  readonly closed: Promise<void>
  private readonly done = resolved<void>()
  private sendCounter = 0
  private recvCounter = 0
  private readonly sendKey: Uint8Array
  private readonly recvKey: Uint8Array
  private state: 'open' | 'closed' | 'failed' = 'open'
  private failure: Error | undefined
  private localClosed = false
  private peerClosed = false
  private readonly queue: Uint8Array[] = []
  private queuedBytes = 0
  private readonly waiters: Resolved<IteratorResult<Uint8Array>>[] = []
  private readonly pendingSends = new Set<Resolved<void>>()
  private closeTimer: NodeJS.Timeout | undefined
  private readonly opts: Required<SecureSessionOptions>

  private constructor(
    private readonly stream: Duplex,
    private readonly reader: FrameReader,
    keys: SessionKeys,
    /** Which end this is. */
    readonly role: 'client' | 'server',
    /** The authenticated peer: the client principal (server side) or the service principal (client side), `name@REALM`. */
    readonly peer: string,
    opts: Required<SecureSessionOptions>,
    /** Server side: the verified AP_REQ without its keys. */
    readonly ap: Omit<VerifiedAp, 'sessionKey' | 'subkey' | 'serviceSubkey' | 'apRep'> | undefined,
    early: Buffer[],
  ) {
    super()
    this.opts = opts
    this.sendKey = role === 'client' ? keys.c2s : keys.s2c
    this.recvKey = role === 'client' ? keys.s2c : keys.c2s
    this.closed = this.done.promise
    // Callers who only use events or iteration must not get an unhandled rejection.
    this.closed.catch(() => {})
    stream.on('data', this.onData)
    stream.on('end', this.onEnd)
    stream.on('close', this.onStreamClose)
    stream.on('error', this.onError)
    this.handleFrames(early)
    if (this.state === 'open' && this.queuedBytes <= opts.highWaterMark) stream.resume()
  }

  /**
   * Client side: send an AP_REQ (mutual, with a fresh subkey) for `opts.creds` over `stream`,
   * check the AP_REP, derive the session keys. Rejects with KrbProtocolError (the service's
   * KRB_ERROR, or KRB_AP_ERR_MUT_FAIL) or SessionError; the stream is destroyed on failure.
   */
  static async client(stream: Duplex, opts: SecureSessionClientOptions): Promise<SecureSession> {
    if ((opts.mutual as boolean | undefined) === false) throw new TypeError('a SecureSession always uses mutual authentication')
    const o = resolveOptions(opts)
    const { creds } = opts
    const service = principalString(creds.sname, creds.srealm)
    const reader = new FrameReader(o.maxFrameBytes)
    const apOpts: Parameters<typeof buildApReq>[1] = { mutual: true, subkey: true }
    if (opts.now) apOpts.now = opts.now
    if (opts.cksum) apOpts.cksum = opts.cksum
    const pending = buildApReq(creds, apOpts)
    try {
      stream.write(plainFrame(pending.req))
      const frames = await awaitFirstFrame(stream, reader, o.handshakeTimeoutMs, `the reply of ${service} to the AP_REQ`)
      let msg: Message
      try {
        msg = decodeMessage(frames[0]!)
      } catch (err) {
        throw new SessionError(TesseraErrorCode.TESSERA_BAD_REPLY, 'PROTOCOL', `${service} sent a malformed reply to the AP_REQ`, { cause: err })
      }
      if (msg.t === MsgType.KRB_ERROR) throw krbErrorFromReply(msg, (opts.now ?? Date.now)(), service, { peer: 'service' })
      if (msg.t !== MsgType.AP_REP)
        throw new SessionError(TesseraErrorCode.TESSERA_BAD_REPLY, 'PROTOCOL', `${service} answered the AP_REQ with message type ${msg.t}`)
      const rep = verifyApRep(msg, pending)
      if (!rep.subkey)
        throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MUT_FAIL, 'MUT_FAIL', {
          message: `${service} sent no subkey in its AP_REP; a SecureSession needs one`,
        })
      const keys = deriveSessionKeys(creds.sessionKey, pending.subkey, rep.subkey)
      wipe(pending.subkey, rep.subkey)
      return new SecureSession(stream, reader, keys, 'client', service, o, undefined, frames.slice(1))
    } catch (err) {
      wipe(pending.subkey)
      destroyQuietly(stream)
      throw err
    }
  }

  /**
   * Server side: read the client's AP_REQ from `stream`, verify it with `opts.verifier`,
   * answer with the AP_REP (or a KRB_ERROR, then end the stream and reject with the
   * KrbProtocolError), derive the session keys.
   */
  static async server(stream: Duplex, opts: SecureSessionServerOptions): Promise<SecureSession> {
    const o = resolveOptions(opts)
    const reader = new FrameReader(o.maxFrameBytes)
    const frames = await awaitFirstFrame(stream, reader, o.handshakeTimeoutMs, 'the AP_REQ')
    const refuse = (err: KrbProtocolError): never => {
      // The peer may reset the connection after reading the error: that is no concern of ours.
      stream.on('error', () => {})
      // The AP exchange travels in clear: the e-text is only the short status, no detail.
      stream.end(plainFrame(krbError(err.code, err.status, Date.now())))
      // Do not keep the socket for a peer that does not close its side.
      setTimeout(() => destroyQuietly(stream), o.closeTimeoutMs).unref()
      throw err
    }
    let msg: Message
    try {
      msg = decodeMessage(frames[0]!)
    } catch (err) {
      return refuse(new KrbProtocolError(ErrorCode.TSR_ERR_MALFORMED, 'MALFORMED', { message: 'malformed AP_REQ', cause: err }))
    }
    if (msg.t !== MsgType.AP_REQ)
      return refuse(
        new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE', { message: `expected an AP_REQ, got message type ${msg.t}` }),
      )
    let v: VerifiedAp
    try {
      v = opts.verifier.verify(msg, opts.cksum === undefined ? {} : { cksum: opts.cksum })
    } catch (err) {
      if (err instanceof KrbProtocolError) return refuse(err)
      // A bug of ours: nothing about it goes to the peer.
      stream.on('error', () => {})
      stream.end(plainFrame(krbError(ErrorCode.KRB_ERR_GENERIC, 'internal error', Date.now())))
      throw err
    }
    if (!v.subkey || !v.apRep || !v.serviceSubkey) {
      wipe(v.sessionKey, v.subkey, v.serviceSubkey)
      return refuse(
        new KrbProtocolError(ErrorCode.KDC_ERR_BADOPTION, 'BADOPTION', {
          message: 'a SecureSession needs mutual authentication and a client subkey',
        }),
      )
    }
    const keys = deriveSessionKeys(v.sessionKey, v.subkey, v.serviceSubkey)
    stream.write(plainFrame(v.apRep))
    const { sessionKey, subkey, serviceSubkey, apRep, ...info } = v
    wipe(sessionKey, subkey, serviceSubkey)
    return new SecureSession(stream, reader, keys, 'server', v.client, o, info, frames.slice(1))
  }

  /** Largest payload send() accepts, bytes. */
  get maxMessageBytes(): number {
    return this.opts.maxFrameBytes - SESSION_OVERHEAD
  }

  /** True until the session has closed or failed. */
  get isOpen(): boolean {
    return this.state === 'open'
  }

  /** The error that ended the session, if it failed. */
  get error(): Error | undefined {
    return this.failure
  }

  /**
   * Seal and send one message. Resolves once the stream has taken it (after 'drain' when
   * the stream is full), so awaiting each send() respects backpressure. Rejects with the
   * session's error once it has failed, TESSERA_SESSION after close(), TESSERA_FRAME_TOO_LARGE
   * for a message above maxMessageBytes.
   */
  send(data: Uint8Array): Promise<void> {
    if (!(data instanceof Uint8Array)) return Promise.reject(new TypeError('send() takes a Uint8Array'))
    if (this.failure) return Promise.reject(this.failure)
    if (this.localClosed || this.state !== 'open')
      return Promise.reject(new TesseraError(TesseraErrorCode.TESSERA_SESSION, 'the session is closed'))
    if (data.length > this.maxMessageBytes)
      return Promise.reject(
        new TesseraError(
          TesseraErrorCode.TESSERA_FRAME_TOO_LARGE,
          `message of ${data.length} bytes exceeds the session limit of ${this.maxMessageBytes}`,
        ),
      )
    return this.writeMessage(SessionMsgType.DATA, data)
  }

  /**
   * Close the session: send the sealed close message and end our side of the stream, then
   * wait for the peer's close message (the peer answers one automatically). Resolves like
   * `closed`; rejects with TESSERA_TIMEOUT if the peer does not answer within closeTimeoutMs.
   * Messages already received stay readable.
   */
  close(): Promise<void> {
    if (this.state === 'open' && !this.localClosed) {
      this.sendClose()
      if (this.state === 'open') {
        this.closeTimer = setTimeout(
          () =>
            this.fail(
              new SessionError(TesseraErrorCode.TESSERA_TIMEOUT, 'TIMEOUT', `the peer did not confirm the close within ${this.opts.closeTimeoutMs} ms`),
            ),
          this.opts.closeTimeoutMs,
        )
        this.closeTimer.unref()
      }
    }
    return this.closed
  }

  /** End the session at once, without a close message (the peer will see a truncated stream). */
  destroy(): void {
    this.fail(new SessionError(TesseraErrorCode.TESSERA_SESSION, 'PROTOCOL', 'the session was destroyed locally'))
  }

  /**
   * Received messages, in order. Ends on a clean close; throws the session's error if it
   * fails. Leaving the loop early (break) does not close the session.
   */
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: () => this.next(),
      return: async () => ({ done: true, value: undefined }),
    }
  }

  private next(): Promise<IteratorResult<Uint8Array>> {
    const data = this.queue.shift()
    if (data) {
      this.queuedBytes -= data.length
      if (this.queuedBytes <= this.opts.highWaterMark / 2 && this.stream.isPaused() && this.state === 'open') this.stream.resume()
      return Promise.resolve({ done: false, value: data })
    }
    if (this.failure) return Promise.reject(this.failure)
    if (this.state === 'closed' || this.peerClosed) return Promise.resolve({ done: true, value: undefined })
    const w = resolved<IteratorResult<Uint8Array>>()
    this.waiters.push(w)
    return w.promise
  }

  private writeMessage(type: number, payload: Uint8Array): Promise<void> {
    if (this.sendCounter >= Number.MAX_SAFE_INTEGER) return Promise.reject(new RangeError('session sequence numbers exhausted'))
    const seq = this.sendCounter++
    const plain = new Uint8Array(1 + payload.length)
    plain[0] = type
    plain.set(payload, 1)
    const box = sealFrame(this.sendKey, seq, plain)
    const body = new Uint8Array(SEQ_BYTES + box.length)
    const v = new DataView(body.buffer)
    v.setUint32(0, Math.floor(seq / 0x100000000))
    v.setUint32(4, seq >>> 0)
    body.set(box, SEQ_BYTES)
    const out = frame(body)
    return new Promise<void>((resolve, reject) => {
      const p: Resolved<void> = { resolve, reject }
      this.pendingSends.add(p)
      const settle = (err?: Error | null) => {
        if (!this.pendingSends.delete(p)) return
        if (err) reject(this.failure ?? new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `write failed: ${err.message}`, { cause: err }))
        else resolve()
      }
      // The write callback runs once the chunk is handed to the system: with a full buffer
      // that is after 'drain', which is the backpressure a caller awaiting send() wants.
      this.stream.write(out, settle)
    })
  }

  private sendClose(): void {
    this.localClosed = true
    this.writeMessage(SessionMsgType.CLOSE, new Uint8Array(0)).catch(() => {})
    this.stream.end()
    this.maybeFinish()
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.state !== 'open') return
    let frames: Buffer[]
    try {
      frames = this.reader.push(chunk)
    } catch (err) {
      this.fail(new SessionError((err as TesseraError).code ?? TesseraErrorCode.TESSERA_FRAME_TOO_LARGE, 'TOO_LARGE', (err as Error).message, { cause: err }))
      return
    }
    this.handleFrames(frames)
  }

  private handleFrames(frames: Buffer[]): void {
    for (const body of frames) {
      if (this.state !== 'open') return
      this.onFrame(body)
    }
  }

  private onFrame(body: Buffer): void {
    if (this.peerClosed) {
      this.fail(new SessionError(TesseraErrorCode.TESSERA_SESSION, 'PROTOCOL', 'the peer sent data after its close message'))
      return
    }
    const seq = body.length >= SESSION_OVERHEAD ? readSeq(body) : -1
    const box = body.subarray(SEQ_BYTES)
    const expected = this.recvCounter
    const plain = seq >= 0 ? openFrame(this.recvKey, seq, box) : null
    // The sequence number in clear is only believed once the message opens under it, so a
    // forger cannot make us report a replay: anything that does not open is FORGED.
    if (plain === null || plain.length < 1) {
      this.fail(
        new SessionError(TesseraErrorCode.TESSERA_INTEGRITY, 'FORGED', `message ${expected} failed its integrity check (modified or forged)`),
      )
      return
    }
    if (seq < expected) {
      this.fail(
        new SessionError(TesseraErrorCode.TESSERA_INTEGRITY, 'REPLAYED', `message ${seq} was received a second time (replay) while ${expected} was expected`),
      )
      return
    }
    if (seq > expected) {
      this.fail(
        new SessionError(
          TesseraErrorCode.TESSERA_INTEGRITY,
          'REORDERED',
          `message ${seq} arrived while ${expected} was expected (messages reordered or dropped)`,
        ),
      )
      return
    }
    this.recvCounter++
    const type = plain[0]
    if (type === SessionMsgType.DATA) this.deliver(plain.subarray(1))
    else if (type === SessionMsgType.CLOSE && plain.length === 1) {
      this.peerClosed = true
      // A close is answered with a close, so both ends see a clean end.
      if (!this.localClosed) this.sendClose()
      else this.maybeFinish()
    } else this.fail(new SessionError(TesseraErrorCode.TESSERA_SESSION, 'PROTOCOL', `unknown session message type ${type}`))
  }

  private deliver(data: Uint8Array): void {
    const w = this.waiters.shift()
    if (w) {
      w.resolve({ done: false, value: data })
      return
    }
    if (this.listenerCount('message') > 0) {
      this.emit('message', data)
      return
    }
    this.queue.push(data)
    this.queuedBytes += data.length
    // Bounded memory: stop reading until the application catches up.
    if (this.queuedBytes > this.opts.highWaterMark) this.stream.pause()
  }

  private maybeFinish(): void {
    if (this.state !== 'open' || !this.localClosed || !this.peerClosed) return
    this.state = 'closed'
    this.cleanup()
    for (const w of this.waiters.splice(0)) w.resolve({ done: true, value: undefined })
    this.done.resolve()
    this.emit('close')
  }

  private readonly onEnd = (): void => {
    if (this.state !== 'open' || this.peerClosed) return
    const partial = this.reader.pending > 0 ? ` in the middle of a message (${this.reader.pending} bytes of it)` : ''
    this.fail(
      new SessionError(
        TesseraErrorCode.TESSERA_SESSION,
        'TRUNCATED',
        `the stream ended${partial} without the peer's close message: the session was truncated`,
      ),
    )
  }

  private readonly onStreamClose = (): void => {
    if (this.state !== 'open') return
    if (this.peerClosed) {
      // Our close message may not have reached the peer, but theirs reached us: clean.
      this.localClosed = true
      this.maybeFinish()
      return
    }
    this.onEnd()
  }

  private readonly onError = (err: Error): void => {
    this.fail(new SessionError(TesseraErrorCode.TESSERA_NETWORK, 'NETWORK', `connection error: ${err.message}`, { cause: err }))
  }

  private fail(err: Error): void {
    if (this.state !== 'open') return
    this.state = 'failed'
    this.failure = err
    this.cleanup()
    destroyQuietly(this.stream)
    for (const w of this.waiters.splice(0)) w.reject(err)
    for (const p of [...this.pendingSends]) {
      this.pendingSends.delete(p)
      p.reject(err)
    }
    this.done.reject(err)
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }

  private cleanup(): void {
    clearTimeout(this.closeTimer)
    this.reader.reset()
    wipe(this.sendKey, this.recvKey)
    this.stream.off('data', this.onData)
  }
}
