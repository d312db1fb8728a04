/** The byte string a TIME_REP signature covers (PROTOCOL.md, time service). */

const CONTEXT = Buffer.from('tessera-time-v1', 'ascii')

/** "tessera-time-v1" || nonce(32) || uint64be(recv µs) || uint64be(xmit µs) || uint32be(radius µs) */
export function timeSignatureInput(nonce: Uint8Array, recvUs: number, xmitUs: number, radiusUs: number): Uint8Array {
  const out = Buffer.alloc(CONTEXT.length + 32 + 8 + 8 + 4)
  let o = CONTEXT.copy(out, 0)
  out.set(nonce, o)
  o += 32
  out.writeBigUInt64BE(BigInt(recvUs), o)
  o += 8
  out.writeBigUInt64BE(BigInt(xmitUs), o)
  o += 8
  out.writeUInt32BE(radiusUs >>> 0, o)
  return out
}
