/**
 * The transport handshake's key schedule (Noise-NK style; PROTOCOL.md §3) and the
 * counter-nonce sealing of transport frames.
 *
 *   h        = SHA-256("tessera-nk-v1" || S_pub || Ec_pub || Es_pub)
 *   es       = X25519(Ec, S) = X25519(S, Ec)
 *   ee       = X25519(Ec, Es) = X25519(Es, Ec)
 *   okm      = HKDF-SHA256(ikm = es || ee, salt = h, info = "tessera-nk-v1 keys", L = 160)
 *   k_c2s, k_s2c, k_confirm = okm[0:32], okm[32:64], okm[64:96]
 *   k_res, rms = okm[96:128], okm[128:160]   (resumption ticket delivery, resumption secret)
 *   confirm  = secretbox(h, nonce = 24 zero bytes, k_confirm)
 *
 * Resumption (PROTOCOL.md §3.6) replaces es || ee by a resumption secret carried in a
 * ticket only the server can open:
 *
 *   h        = SHA-256("tessera-resume-v1" || S_pub || cr || uint32be(age) || tk)
 *   k_early  = HKDF-SHA256(rms, salt = h, info = "tessera-resume-v1 early", L = 32)
 *   xh       = SHA-256("tessera-resume-v1 x" || 0x01 || x)   with early data x (the sealed bytes sent)
 *            = SHA-256("tessera-resume-v1 x" || 0x00)        without
 *   h2       = SHA-256(h || xh || ns)
 *   okm      = HKDF-SHA256(rms, salt = h2, info = "tessera-resume-v1 keys", L = 160)   (split as above)
 *   confirm  = secretbox(h2, zero nonce, k_confirm)
 */
import { backend } from './backend.js'
import { constantTimeEqual, hkdf, sha256, wipe } from './keys.js'
import { type KeyPair, x25519, x25519KeyPair } from './sign.js'

const PROTOCOL_NAME = Buffer.from('tessera-nk-v1', 'ascii')
const KEYS_INFO = 'tessera-nk-v1 keys'
const RESUME_NAME = Buffer.from('tessera-resume-v1', 'ascii')
const RESUME_EARLY_INFO = 'tessera-resume-v1 early'
const RESUME_KEYS_INFO = 'tessera-resume-v1 keys'
const RESUME_X_NAME = Buffer.from('tessera-resume-v1 x', 'ascii')
const X_PRESENT = Uint8Array.of(1)
const X_ABSENT = Uint8Array.of(0)
const ZERO_NONCE = new Uint8Array(24)
/** Largest resumption ticket a client may present, bytes. */
export const MAX_RESUMPTION_TICKET_BYTES = 256

/** Keys that protect one connection. */
export interface TransportKeys {
  /** Key for frames client -> server. */
  c2s: Uint8Array
  /** Key for frames server -> client. */
  s2c: Uint8Array
  /** Transcript hash: binds the connection to the KDC key and both ephemerals (or the resumption). */
  h: Uint8Array
  /** Key that seals a resumption ticket handed to the client (used once, zero nonce). */
  res?: Uint8Array
  /** Resumption secret of this connection: what a ticket issued on it carries. */
  rms?: Uint8Array
}

/** A connection's key set and its confirmation key (kept apart: no per-connection object copy). */
export interface KeySchedule {
  keys: TransportKeys
  confirmKey: Uint8Array
}

function split(okm: Uint8Array, h: Uint8Array): KeySchedule {
  const keys: TransportKeys = {
    c2s: Uint8Array.from(okm.subarray(0, 32)),
    s2c: Uint8Array.from(okm.subarray(32, 64)),
    h,
  }
  const confirmKey = Uint8Array.from(okm.subarray(64, 96))
  if (okm.length >= 160) {
    keys.res = Uint8Array.from(okm.subarray(96, 128))
    keys.rms = Uint8Array.from(okm.subarray(128, 160))
  }
  wipe(okm)
  return { keys, confirmKey }
}

function schedule(es: Uint8Array, ee: Uint8Array, h: Uint8Array): KeySchedule {
  const ikm = new Uint8Array(64)
  ikm.set(es, 0)
  ikm.set(ee, 32)
  const okm = hkdf(ikm, h, KEYS_INFO, 160)
  wipe(ikm, es, ee)
  return split(okm, h)
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
  const { confirmKey, keys } = schedule(es, ee, h)
  const confirm = confirmBox(confirmKey, h)
  wipe(eph.secretKey)
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
  const { confirmKey, keys } = schedule(es, ee, h)
  if (!checkConfirm(confirmKey, h, confirm)) {
    wipeTransportKeys(keys)
    return null
  }
  wipe(eph.secretKey)
  return keys
}

/** Wipe every key of a connection's key set (the transcript hash is not secret). */
export function wipeTransportKeys(keys: TransportKeys): void {
  wipe(keys.c2s, keys.s2c, keys.res, keys.rms)
}

/**
 * The ticket box of HS_RESP / HS_RESUMED: secretbox(uint32be(lifetime_s) || tk, zero nonce, k_res).
 * k_res is used for this one box only. Wipes k_res.
 */
export function sealTicketBox(res: Uint8Array, lifetimeS: number, tk: Uint8Array): Uint8Array {
  const plain = new Uint8Array(4 + tk.length)
  new DataView(plain.buffer).setUint32(0, lifetimeS >>> 0)
  plain.set(tk, 4)
  const box = backend().secretbox(plain, ZERO_NONCE, res)
  wipe(res)
  return box
}

/** Open a ticket box; null if it does not open or is malformed. Wipes k_res. */
export function openTicketBox(res: Uint8Array, box: Uint8Array): { lifetimeS: number; tk: Uint8Array } | null {
  const plain = box.length >= 16 ? backend().secretboxOpen(box, ZERO_NONCE, res) : null
  wipe(res)
  if (plain === null || plain.length < 5 || plain.length > 4 + MAX_RESUMPTION_TICKET_BYTES) return null
  const lifetimeS = new DataView(plain.buffer, plain.byteOffset).getUint32(0)
  const tk = Uint8Array.from(plain.subarray(4))
  wipe(plain)
  return { lifetimeS, tk }
}

/** First resumption step, both sides: the transcript hash h and the early-data key. */
export function resumeEarly(
  serverStatic: Uint8Array,
  cr: Uint8Array,
  age: number,
  tk: Uint8Array,
  rms: Uint8Array,
): { h: Uint8Array; earlyKey: Uint8Array } {
  if (cr.length !== 32) throw new RangeError('client random must be 32 bytes')
  if (!Number.isInteger(age) || age < 0 || age > 0xffffffff) throw new RangeError('ticket age must be a uint32')
  // The age is bound into h (so into k_early): rewriting it to slip a recorded HS_RESUME
  // past the age check after its cr is forgotten makes the early request fail to open.
  const ageBytes = new Uint8Array(4)
  new DataView(ageBytes.buffer).setUint32(0, age)
  const h = sha256(RESUME_NAME, serverStatic, cr, ageBytes, tk)
  return { h, earlyKey: hkdf(rms, h, RESUME_EARLY_INFO, 32) }
}

/**
 * The early-data hash xh of HS_RESUME: SHA-256("tessera-resume-v1 x" || 0x01 || x) over
 * the sealed early request as sent, or SHA-256("tessera-resume-v1 x" || 0x00) without one.
 */
export function earlyDataHash(x: Uint8Array | undefined): Uint8Array {
  return x === undefined ? sha256(RESUME_X_NAME, X_ABSENT) : sha256(RESUME_X_NAME, X_PRESENT, x)
}

/**
 * Second resumption step, both sides: the connection keys from h, the early request `x`
 * as sent in HS_RESUME (undefined without one), the server random and rms. `x` is bound
 * into h2, so a man in the middle who strips or adds early data fails the key
 * confirmation: the client never takes the reply to a later request for the reply to an
 * `x` the server did not see. Without `withTicket` only okm[0:96] is derived (no k_res,
 * no rms'): HKDF output is a prefix of the longer one, so this is the same schedule, two
 * HMACs cheaper.
 */
export function resumeKeys(
  h: Uint8Array,
  x: Uint8Array | undefined,
  ns: Uint8Array,
  rms: Uint8Array,
  withTicket = true,
): KeySchedule {
  if (ns.length !== 32) throw new RangeError('server random must be 32 bytes')
  const h2 = sha256(h, earlyDataHash(x), ns)
  return split(hkdf(rms, h2, RESUME_KEYS_INFO, withTicket ? 160 : 96), h2)
}

/** The key confirmation: secretbox(h, zero nonce, k_confirm). Wipes k_confirm. */
export function confirmBox(confirmKey: Uint8Array, h: Uint8Array): Uint8Array {
  const box = backend().secretbox(h, ZERO_NONCE, confirmKey)
  wipe(confirmKey)
  return box
}

/** Check a key confirmation in constant time. Wipes k_confirm. */
export function checkConfirm(confirmKey: Uint8Array, h: Uint8Array, confirm: Uint8Array): boolean {
  const opened = confirm.length >= 16 ? backend().secretboxOpen(confirm, ZERO_NONCE, confirmKey) : null
  wipe(confirmKey)
  return opened !== null && constantTimeEqual(opened, h)
}

/** Seal / open the early request of HS_RESUME (zero nonce: k_early is used once). */
export function sealEarly(earlyKey: Uint8Array, plain: Uint8Array): Uint8Array {
  return backend().secretbox(plain, ZERO_NONCE, earlyKey)
}

/** Open the early request; null if it does not open. */
export function openEarly(earlyKey: Uint8Array, box: Uint8Array): Uint8Array | null {
  if (box.length < 16) return null
  return backend().secretboxOpen(box, ZERO_NONCE, earlyKey)
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

const KEY_ID_NAME = Buffer.from('tessera-key-id-v1', 'ascii')
/** Length of an identity key id, bytes. */
export const IDENTITY_KEY_ID_BYTES = 8

/**
 * The id of a KDC identity public key (X25519 transport or Ed25519 signing; PROTOCOL.md §3.7):
 * SHA-256("tessera-key-id-v1" || public key)[0:8]. HS_INIT `k` and TIME_REQ `k` name a key by it.
 */
export function identityKeyId(publicKey: Uint8Array): Uint8Array {
  // Asked on every handshake (which held key does HS_INIT `k` name?) for the same few keys:
  // remembered per key object, with the bytes it was computed from (a changed key is recomputed).
  const known = keyIds.get(publicKey)
  if (known !== undefined && constantTimeEqual(known.of, publicKey)) return Uint8Array.from(known.id)
  const id = Uint8Array.from(sha256(KEY_ID_NAME, publicKey).subarray(0, IDENTITY_KEY_ID_BYTES))
  keyIds.set(publicKey, { of: Uint8Array.from(publicKey), id: Uint8Array.from(id) })
  return id
}

const keyIds = new WeakMap<Uint8Array, { of: Uint8Array; id: Uint8Array }>()

