/**
 * The transport handshake's key schedule (Noise-NK style; PROTOCOL.md §3) and the
 * counter-nonce sealing of transport frames.
 *
 *   h        = SHA-256("tessera-nk-v1" || S_pub || Ec_pub || Es_pub)
 *   es       = X25519(Ec, S) = X25519(S, Ec)
 *   ee       = X25519(Ec, Es) = X25519(Es, Ec)
 *   okm      = HKDF-SHA256(ikm = es || ee, salt = h, info = "tessera-nk-v1 keys", L = 96)
 *   k_c2s, k_s2c, k_confirm = okm[0:32], okm[32:64], okm[64:96]
 *   confirm  = secretbox(h, nonce = 24 zero bytes, k_confirm)
 */
import { backend } from './backend.js'
import { constantTimeEqual, hkdf, sha256, wipe } from './keys.js'
import { type KeyPair, x25519, x25519KeyPair } from './sign.js'

const PROTOCOL_NAME = Buffer.from('tessera-nk-v1', 'ascii')
const KEYS_INFO = 'tessera-nk-v1 keys'
const ZERO_NONCE = new Uint8Array(24)

/** Keys that protect one connection. */
export interface TransportKeys {
  /** Key for frames client -> server. */
  c2s: Uint8Array
  /** Key for frames server -> client. */
  s2c: Uint8Array
  /** Transcript hash: binds the connection to the KDC key and both ephemerals. */
  h: Uint8Array
}

function schedule(es: Uint8Array, ee: Uint8Array, h: Uint8Array): TransportKeys & { confirmKey: Uint8Array } {
  const ikm = new Uint8Array(64)
  ikm.set(es, 0)
  ikm.set(ee, 32)
  const okm = hkdf(ikm, h, KEYS_INFO, 96)
  wipe(ikm, es, ee)
  return { c2s: okm.slice(0, 32), s2c: okm.slice(32, 64), confirmKey: okm.slice(64, 96), h }
}

/** Transcript hash of a handshake. */
export function transcriptHash(serverStatic: Uint8Array, clientEph: Uint8Array, serverEph: Uint8Array): Uint8Array {
  return sha256(PROTOCOL_NAME, serverStatic, clientEph, serverEph)
}

/** Server side: given the client's ephemeral public key, produce HS_RESP fields and the keys. Throws RangeError on a bad key. */
export function serverHandshake(
  staticKey: KeyPair,
  clientEph: Uint8Array,
  eph: KeyPair = x25519KeyPair(),
): { e: Uint8Array; confirm: Uint8Array; keys: TransportKeys } {
  if (clientEph.length !== 32) throw new RangeError('client ephemeral key must be 32 bytes')
  const es = x25519(staticKey.secretKey, clientEph)
  const ee = x25519(eph.secretKey, clientEph)
  const h = transcriptHash(staticKey.publicKey, clientEph, eph.publicKey)
  const { confirmKey, ...keys } = schedule(es, ee, h)
  const confirm = backend().secretbox(h, ZERO_NONCE, confirmKey)
  wipe(confirmKey, eph.secretKey)
  return { e: eph.publicKey, confirm, keys }
}

/** Client side, after HS_RESP: derive keys and check the server's confirmation. Returns null if it does not verify. */
export function clientHandshakeFinish(
  serverStatic: Uint8Array,
  eph: KeyPair,
  serverEph: Uint8Array,
  confirm: Uint8Array,
): TransportKeys | null {
  if (serverEph.length !== 32) return null
  let es: Uint8Array
  let ee: Uint8Array
  try {
    es = x25519(eph.secretKey, serverStatic)
    ee = x25519(eph.secretKey, serverEph)
  } catch {
    return null
  }
  const h = transcriptHash(serverStatic, eph.publicKey, serverEph)
  const { confirmKey, ...keys } = schedule(es, ee, h)
  const opened = backend().secretboxOpen(confirm, ZERO_NONCE, confirmKey)
  wipe(confirmKey)
  if (opened === null || !constantTimeEqual(opened, h)) return null
  wipe(eph.secretKey)
  return keys
}

/** Nonce of transport frame number `counter`: uint64be(counter) || 16 zero bytes. */
export function counterNonce(counter: number): Uint8Array {
  const n = new Uint8Array(24)
  const v = new DataView(n.buffer)
  v.setUint32(0, Math.floor(counter / 0x100000000))
  v.setUint32(4, counter >>> 0)
  return n
}

/** Seal transport frame number `counter` (tag || ciphertext; the nonce is implicit). */
export function sealFrame(key: Uint8Array, counter: number, plain: Uint8Array): Uint8Array {
  return backend().secretbox(plain, counterNonce(counter), key)
}

/** Open transport frame number `counter`; null if tampered, replayed or out of order. */
export function openFrame(key: Uint8Array, counter: number, box: Uint8Array): Uint8Array | null {
  if (box.length < 16) return null
  return backend().secretboxOpen(box, counterNonce(counter), key)
}
