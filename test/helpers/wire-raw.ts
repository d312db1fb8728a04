/**
 * A raw TCP peer for hostile-input tests: it does the transport handshake by hand
 * (crypto/handshake.ts + SealedCodec) so tests can send any bytes they like, and it
 * collects what the server sends back, frame by frame, until the server closes.
 */
import net from 'node:net'
import type { HsResume, KrbError, Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import {
  checkConfirm,
  clientHandshakeFinish,
  type KeyPair,
  randomBytes,
  resumeEarly,
  resumeKeys,
  sealEarly,
  type TransportKeys,
  x25519KeyPair,
} from '../../src/crypto/index.js'
import { decodeMessage, plainFrame, SealedCodec } from '../../src/wire/channel.js'
import { encode } from '../../src/wire/codec.js'
import { FrameReader } from '../../src/wire/frame-reader.js'

const DEFAULT_WAIT_MS = 2000

/** A frame the server sent, or how the stream ended. */
type Event = { kind: 'frame'; body: Buffer } | { kind: 'close'; error: Error | undefined }

/** One TCP connection driven by hand. */
export class RawPeer {
  private readonly reader = new FrameReader(1 << 24)
  private readonly events: Event[] = []
  private wake: (() => void) | undefined
  private ended = false
  /** Bytes the server has sent that do not form a complete frame (at close). */
  get pendingBytes(): number {
    return this.reader.pending
  }
  /** The keys after handshake(). */
  keys: TransportKeys | undefined
  /** True once the socket closed. */
  get closed(): boolean {
    return this.ended
  }

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const body of this.reader.push(chunk)) this.emit({ kind: 'frame', body })
    })
    let error: Error | undefined
    socket.on('error', (err) => {
      error = err
    })
    socket.on('close', () => {
      this.ended = true
      this.emit({ kind: 'close', error })
    })
  }

  /** Connect to 127.0.0.1:port. */
  static connect(port: number, opts: { pauseReading?: boolean } = {}): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
      const peer = new RawPeer(socket)
      if (opts.pauseReading) socket.pause()
      socket.once('connect', () => resolve(peer))
      socket.once('error', reject)
    })
  }

  private emit(e: Event): void {
    this.events.push(e)
    this.wake?.()
  }

  /** Send raw bytes (resolves once handed to the kernel). */
  send(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed) {
        reject(new Error('socket destroyed'))
        return
      }
      this.socket.write(bytes, (err) => (err ? reject(err) : resolve()))
    })
  }

  /** Half-close: send FIN. */
  end(): void {
    this.socket.end()
  }

  destroy(): void {
    this.socket.destroy()
  }

  /** The next event, waiting up to `timeoutMs`. */
  private async next(timeoutMs: number): Promise<Event> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const e = this.events[0]
      if (e) {
        // The close event stays, so that every later call sees it too.
        if (e.kind === 'frame') this.events.shift()
        return e
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`nothing from the server within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.wake = () => {
          clearTimeout(t)
          resolve()
        }
      })
      this.wake = undefined
    }
  }

  /** The next frame body; throws if the server closes or stays silent. */
  async nextFrame(timeoutMs = DEFAULT_WAIT_MS): Promise<Buffer> {
    const e = await this.next(timeoutMs)
    if (e.kind === 'close') throw new Error('the server closed the connection instead of sending a frame')
    return e.body
  }

  /** The next frame, decoded as a plain message. */
  async nextPlain(timeoutMs = DEFAULT_WAIT_MS): Promise<Message> {
    return decodeMessage(await this.nextFrame(timeoutMs))
  }

  /** The next frame, opened with `codec`. */
  async nextSealed(codec: SealedCodec, timeoutMs = DEFAULT_WAIT_MS): Promise<Message> {
    return codec.open(await this.nextFrame(timeoutMs))
  }

  /** Resolve when the socket closes; throws if a frame arrives first or nothing happens in time. */
  async closedWithin(timeoutMs = DEFAULT_WAIT_MS): Promise<void> {
    const e = await this.next(timeoutMs)
    if (e.kind === 'frame') throw new Error('the server sent another frame instead of closing')
  }

  /** Run the client side of the handshake; returns the client's SealedCodec. */
  async handshake(serverKey: Uint8Array, eph: KeyPair = x25519KeyPair()): Promise<SealedCodec> {
    await this.send(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: eph.publicKey }))
    const resp = await this.nextPlain()
    if (resp.t !== MsgType.HS_RESP) throw new Error(`expected HS_RESP, got t=${resp.t}`)
    const keys = clientHandshakeFinish(serverKey, eph, resp.e, resp.confirm)
    if (!keys) throw new Error('HS_RESP did not verify')
    this.keys = { c2s: Uint8Array.from(keys.c2s), s2c: Uint8Array.from(keys.s2c), h: keys.h }
    return new SealedCodec(keys, 'client')
  }

  /**
   * Read HS_RESUMED for a resumption begun with `hello` (see resumeHello) and check its
   * confirm; returns the client's SealedCodec. Throws on anything else.
   */
  async resumed(hello: { h: Uint8Array; rms: Uint8Array; msg: { x?: Uint8Array } }): Promise<SealedCodec> {
    const m = await this.nextPlain()
    if (m.t !== MsgType.HS_RESUMED) throw new Error(`expected HS_RESUMED, got t=${m.t}`)
    const { confirmKey, keys } = resumeKeys(hello.h, hello.msg.x, m.n, hello.rms)
    if (!checkConfirm(confirmKey, keys.h, m.confirm)) throw new Error('HS_RESUMED did not verify')
    this.keys = { c2s: Uint8Array.from(keys.c2s), s2c: Uint8Array.from(keys.s2c), h: keys.h }
    return new SealedCodec(keys, 'client')
  }
}

/** What resumeHello builds: the HS_RESUME frame, its message, and what the client keeps to finish. */
export interface ResumeHello {
  frame: Buffer
  msg: HsResume
  h: Uint8Array
  rms: Uint8Array
}

/**
 * Build an HS_RESUME by hand (PROTOCOL.md §3.6) from a ticket a client holds. `early`
 * is sealed as x (a message, or raw plaintext bytes); `x` replaces x verbatim.
 */
export function resumeHello(
  serverKey: Uint8Array,
  ticket: { tk: Uint8Array; rms: Uint8Array },
  opts: { early?: Message | Uint8Array; x?: Uint8Array; cr?: Uint8Array; age?: number } = {},
): ResumeHello {
  const cr = opts.cr ?? randomBytes(32)
  const age = opts.age ?? 0
  // A malformed age (for hostile tests) cannot be hashed: bind 0 instead; the server refuses the message before it looks.
  const boundAge = Number.isInteger(age) && age >= 0 && age <= 0xffffffff ? age : 0
  const { h, earlyKey } = resumeEarly(serverKey, cr, boundAge, ticket.tk, ticket.rms)
  const msg: HsResume = { v: PROTOCOL_VERSION, t: MsgType.HS_RESUME, tk: ticket.tk, cr, age }
  if (opts.early !== undefined) msg.x = sealEarly(earlyKey, opts.early instanceof Uint8Array ? opts.early : encode(opts.early))
  if (opts.x !== undefined) msg.x = opts.x
  return { frame: plainFrame(msg), msg, h, rms: ticket.rms }
}

/** Bytes one proxied connection carried, in each direction. */
export interface ProxiedConnection {
  c2s: Buffer[]
  s2c: Buffer[]
}

/** A TCP relay on 127.0.0.1 that records every byte it forwards. */
export interface RecordingProxy {
  port: number
  /** One entry per accepted connection, in order. */
  readonly connections: ProxiedConnection[]
  close(): Promise<void>
}

/** Start a recording relay in front of 127.0.0.1:targetPort. */
export async function startRecordingProxy(targetPort: number): Promise<RecordingProxy> {
  const connections: ProxiedConnection[] = []
  const sockets = new Set<net.Socket>()
  const track = (s: net.Socket) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  }
  const srv = net.createServer((inbound) => {
    const rec: ProxiedConnection = { c2s: [], s2c: [] }
    connections.push(rec)
    const outbound = net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true })
    track(inbound)
    track(outbound)
    inbound.on('data', (b: Buffer) => {
      rec.c2s.push(Buffer.from(b))
      outbound.write(b)
    })
    outbound.on('data', (b: Buffer) => {
      rec.s2c.push(Buffer.from(b))
      inbound.write(b)
    })
    inbound.on('close', () => outbound.destroy())
    outbound.on('close', () => inbound.destroy())
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address() as net.AddressInfo
  return {
    port,
    connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        srv.close(() => r())
      }),
  }
}

/** Split a recorded byte stream into frame bodies. */
export function framesOf(chunks: Buffer[]): Buffer[] {
  return new FrameReader(1 << 24).push(Buffer.concat(chunks))
}

/** Narrow a message to KRB_ERROR or throw. */
export function asKrbError(m: Message): KrbError {
  if (m.t !== MsgType.KRB_ERROR) throw new Error(`expected KRB_ERROR, got t=${m.t}`)
  return m
}

/** A plain TCP server on 127.0.0.1 that does `onConnection` with each socket (never the protocol). */
export async function fakeServer(onConnection: (s: net.Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const srv = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    onConnection(s)
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address() as net.AddressInfo
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        srv.close(() => r())
      }),
  }
}
