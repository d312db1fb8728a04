/** Framing: a 4-byte big-endian length prefix, then the body. The cap is checked on the header. */
import { Limits } from '../../proto/limits.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'

/** Length prefix: uint32 BE, not counting itself. */
export const HEADER_BYTES = 4

/** Prefix `body` with its length. */
export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + body.length)
  out.writeUInt32BE(body.length, 0)
  out.set(body, HEADER_BYTES)
  return out
}

/**
 * Reassembles frames from stream chunks (split or coalesced). A length above
 * `maxFrameBytes` throws TESSERA_FRAME_TOO_LARGE as soon as the header is seen,
 * before any of the body is buffered.
 */
export class FrameReader {
  private chunks: Buffer[] = []
  private buffered = 0
  private need = -1

  /** @param maxFrameBytes Largest body accepted. @default 65536 */
  constructor(readonly maxFrameBytes: number = Limits.MAX_FRAME_BYTES) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1 || maxFrameBytes > 0xffffffff)
      throw new RangeError('maxFrameBytes must be an integer in [1, 2^32-1]')
  }

  /** Bytes held that do not yet form a whole frame. */
  get pending(): number {
    return this.buffered
  }

  /** Feed one chunk; returns every complete frame body it completes (possibly none). */
  push(chunk: Uint8Array): Buffer[] {
    if (chunk.length === 0) return []
    this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))
    this.buffered += chunk.length
    const out: Buffer[] = []
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < HEADER_BYTES) break
        const len = this.peekHeader()
        if (len > this.maxFrameBytes) {
          this.reset()
          throw new TesseraError(
            TesseraErrorCode.TESSERA_FRAME_TOO_LARGE,
            `frame of ${len} bytes exceeds the limit of ${this.maxFrameBytes}`,
          )
        }
        this.take(HEADER_BYTES)
        this.need = len
      }
      if (this.buffered < this.need) break
      out.push(this.take(this.need))
      this.need = -1
    }
    return out
  }

  /** Drop everything buffered. */
  reset(): void {
    this.chunks = []
    this.buffered = 0
    this.need = -1
  }

  private peekHeader(): number {
    const first = this.chunks[0]!
    if (first.length >= HEADER_BYTES) return first.readUInt32BE(0)
    return Buffer.concat(this.chunks, HEADER_BYTES).readUInt32BE(0)
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0)
    const first = this.chunks[0]!
    if (first.length === n) {
      this.chunks.shift()
      this.buffered -= n
      return first
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n)
      this.buffered -= n
      return first.subarray(0, n)
    }
    const all = Buffer.concat(this.chunks)
    const rest = all.subarray(n)
    this.chunks = rest.length ? [rest] : []
    this.buffered = rest.length
    return all.subarray(0, n)
  }
}
