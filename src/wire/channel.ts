/**
 * Encrypted transport (PROTOCOL.md §3): after the handshake every frame body is
 * secretbox(msgpack(message), nonce = uint64be(counter) || 0^16, direction key).
 * Counters start at 0 in each direction and never repeat, so a replayed, dropped,
 * reordered or modified frame fails to open.
 */
import { ErrorCode } from '../../proto/error-codes.js'
import type { KrbError, Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { SchemaError, validateMessage } from '../../proto/validate.js'
import { openFrame, sealFrame, type TransportKeys } from '../crypto/index.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { type DecodeOptions, decode, encode } from './codec.js'
import { frame } from './frame-reader.js'

/** Decode and validate one plain message body. Throws TesseraError(TESSERA_DECODE | TESSERA_VALIDATION). */
export function decodeMessage(body: Uint8Array, opts?: DecodeOptions): Message {
  const value = decode(body, opts)
  try {
    return validateMessage(value)
  } catch (err) {
    if (err instanceof SchemaError)
      throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `invalid message: ${err.message}`, { cause: err })
    throw err
  }
}

/** True for the four handshake messages, which never travel inside a sealed frame. */
export function isHandshakeMessage(msg: Message): boolean {
  return msg.t === MsgType.HS_INIT || msg.t === MsgType.HS_RESP || msg.t === MsgType.HS_RESUME || msg.t === MsgType.HS_RESUMED
}

/** A framed plain message (used only for the handshake and pre-handshake errors). */
export function plainFrame(msg: Message): Buffer {
  return frame(encode(msg))
}

/** Build a KRB_ERROR message. */
export function krbError(code: number, text: string, stime: number = Date.now(), edata?: KrbError['edata']): KrbError {
  const m: KrbError = { v: PROTOCOL_VERSION, t: MsgType.KRB_ERROR, code, text: text.slice(0, 512), stime }
  if (edata) m.edata = edata
  return m
}

/** One direction-keyed, counter-nonced sealing state of an established connection. */
export class SealedCodec {
  private sendCounter = 0
  private recvCounter = 0
  private destroyed = false
  private readonly sendKey: Uint8Array
  private readonly recvKey: Uint8Array

  constructor(
    keys: TransportKeys,
    readonly role: 'client' | 'server',
    private readonly decodeOpts?: DecodeOptions,
  ) {
    this.sendKey = role === 'client' ? keys.c2s : keys.s2c
    this.recvKey = role === 'client' ? keys.s2c : keys.c2s
  }

  /**
   * Seal and frame a message for sending. Throws RangeError if it cannot be encoded
   * (the counter is then not used up), TESSERA_CHANNEL_CLOSED after destroy().
   */
  seal(msg: Message): Buffer {
    // The keys are wiped on destroy: sealing under a zeroed key would be sending in clear.
    if (this.destroyed) throw new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'channel is closed')
    if (this.sendCounter >= Number.MAX_SAFE_INTEGER) throw new RangeError('transport counter exhausted')
    // Encode first: a message that fails to encode must not use up a counter, or every
    // later frame would be sealed under a nonce the peer does not expect.
    const plain = encode(msg)
    return frame(sealFrame(this.sendKey, this.sendCounter++, plain))
  }

  /**
   * Open the next received frame body. Throws TESSERA_INTEGRITY if it does not open
   * under the next counter (tampered, replayed, reordered or injected), else
   * TESSERA_DECODE / TESSERA_VALIDATION; TESSERA_CHANNEL_CLOSED after destroy().
   */
  open(body: Uint8Array): Message {
    if (this.destroyed) throw new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'channel is closed')
    const plain = openFrame(this.recvKey, this.recvCounter, body)
    if (plain === null) throw new TesseraError(TesseraErrorCode.TESSERA_INTEGRITY, 'sealed frame failed to open')
    this.recvCounter++
    return decodeMessage(plain, this.decodeOpts)
  }

  /** Wipe the keys (after close). */
  destroy(): void {
    this.destroyed = true
    this.sendKey.fill(0)
    this.recvKey.fill(0)
  }
}

/** The wire error code a local decode/transport failure maps to. */
export function wireCodeFor(err: unknown): number {
  if (err instanceof TesseraError) {
    switch (err.code) {
      case TesseraErrorCode.TESSERA_FRAME_TOO_LARGE:
        return ErrorCode.KRB_ERR_FIELD_TOOLONG
      case TesseraErrorCode.TESSERA_INTEGRITY:
        return ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY
      case TesseraErrorCode.TESSERA_DECODE:
      case TesseraErrorCode.TESSERA_VALIDATION:
        return ErrorCode.TSR_ERR_MALFORMED
      case TesseraErrorCode.TESSERA_HANDSHAKE:
        return ErrorCode.TSR_ERR_HANDSHAKE
      case TesseraErrorCode.TESSERA_TIMEOUT:
        return ErrorCode.TSR_ERR_TIMEOUT
    }
  }
  return ErrorCode.KRB_ERR_GENERIC
}

