/**
 * A raw TCP peer for hostile-input tests: it does the transport handshake by hand
 * (crypto/handshake.ts + SealedCodec) so tests can send any bytes they like, and it
 * collects what the server sends back, frame by frame, until the server closes.
 */
import net from 'node:net'
import type { KrbError, Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { clientHandshakeFinish, type KeyPair, type TransportKeys, x25519KeyPair } from '../../src/crypto/index.js'
import { decodeMessage, plainFrame, SealedCodec } from '../../src/wire/channel.js'
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
}

/** Narrow a message to KRB_ERROR or throw. */
export function asKrbError(m: Message): KrbError {
  if (m.t !== MsgType.KRB_ERROR) throw new Error(`expected KRB_ERROR, got t=${m.t}`)
  return m
}
