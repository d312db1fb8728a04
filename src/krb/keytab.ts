/**
 * Keytab: a service's long-term keys on disk, several key versions (and principals)
 * per file, so tickets sealed with an older kvno keep working after a key rotation.
 *
 * File format (proto/PROTOCOL.md §14.1):
 *
 *   magic   4 bytes  "TSKT" (0x54 0x53 0x4b 0x54)
 *   version 1 byte   0x01
 *   body    the rest: one plain MessagePack map
 *           { entries: [ { realm, name: [str..], kvno, key: bin(32), kdf?, salt?, createdAt } ] }
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto'
import { constants as fsc } from 'node:fs'
import { type FileHandle, open, rename, unlink } from 'node:fs/promises'
import path from 'node:path'
import { type Static, Type } from '@sinclair/typebox'
import { KdfParamsSchema, Key32, PrincipalName, Realm, Time } from '../../proto/messages.js'
import { SchemaError, validate } from '../../proto/validate.js'
import { checkKdfParams, type KdfParams } from '../crypto/index.js'
import { checkPrincipalId, formatPrincipal, parsePrincipal } from '../db/names.js'
import type { PrincipalId } from '../db/types.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { decode, encode } from '../wire/codec.js'

/** File magic: ASCII "TSKT". */
export const KEYTAB_MAGIC = Uint8Array.of(0x54, 0x53, 0x4b, 0x54)
/** Format version written (and the only one read). */
export const KEYTAB_VERSION = 1
/** magic(4) || version(1) */
const HEADER_BYTES = 5
/** Largest keytab file read, bytes: far above any real keytab, low enough to refuse junk. */
export const MAX_KEYTAB_BYTES = 4 * 1024 * 1024
/** Most entries in one keytab. */
export const MAX_KEYTAB_ENTRIES = 16384

/** One entry on disk (the MessagePack shape). Every object forbids extra fields. */
export const KeytabEntrySchema = Type.Object(
  {
    realm: Realm,
    name: PrincipalName,
    kvno: Type.Integer({ minimum: 0, maximum: 0xffffffff }),
    key: Key32,
    kdf: Type.Optional(KdfParamsSchema),
    salt: Type.Optional(Type.String({ maxLength: 1024 })),
    createdAt: Time,
  },
  { additionalProperties: false },
)
/** The MessagePack body of a keytab file. */
export const KeytabBodySchema = Type.Object(
  { entries: Type.Array(KeytabEntrySchema, { maxItems: MAX_KEYTAB_ENTRIES }) },
  { additionalProperties: false },
)
type KeytabEntryWire = Static<typeof KeytabEntrySchema>

/** One key of one principal. */
export interface KeytabEntry {
  realm: string
  /** Name components, e.g. ["HTTP", "www.example.com"]. */
  name: string[]
  kvno: number
  /** 32-byte key (secret). */
  key: Uint8Array
  /** Present for password-derived keys. */
  kdf?: KdfParams
  /** Salt used with kdf. */
  salt?: string
  /** When the key version was created, ms since epoch. */
  createdAt: number
}

/** A principal given as `name/instance@REALM` or as { realm, components }. */
export type PrincipalRef = string | PrincipalId

function keytabError(message: string, cause?: unknown): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_KEYTAB, message, cause === undefined ? undefined : { cause })
}

function toId(p: PrincipalRef): PrincipalId {
  return typeof p === 'string' ? parsePrincipal(p) : p
}

function sameId(e: KeytabEntry, id: PrincipalId): boolean {
  return e.realm === id.realm && e.name.length === id.components.length && e.name.every((c, i) => c === id.components[i])
}

function copyEntry(e: KeytabEntry): KeytabEntry {
  const out: KeytabEntry = { realm: e.realm, name: [...e.name], kvno: e.kvno, key: Uint8Array.from(e.key), createdAt: e.createdAt }
  if (e.kdf !== undefined) out.kdf = { ...e.kdf }
  if (e.salt !== undefined) out.salt = e.salt
  return out
}

/** Throws TESSERA_KEYTAB unless `e` is a well-formed entry. */
function checkEntry(e: KeytabEntry): void {
  try {
    validate(KeytabEntrySchema, e)
    checkPrincipalId({ realm: e.realm, components: e.name })
    if (e.kdf !== undefined) checkKdfParams(e.kdf)
  } catch (err) {
    if (err instanceof SchemaError || err instanceof TesseraError || err instanceof RangeError)
      throw keytabError(`invalid keytab entry: ${err.message}`, err)
    throw err
  }
}

/** A set of keys: one entry per (principal, kvno). Entries are copied in and out of it. */
export class Keytab {
  readonly #entries: KeytabEntry[] = []
  /** The file it was read from (set by readKeytab); undefined for a keytab made in memory. */
  file: string | undefined

  constructor(entries: Iterable<KeytabEntry> = []) {
    for (const e of entries) this.add(e)
  }

  /** Every entry (copies), in insertion order. */
  get entries(): KeytabEntry[] {
    return this.#entries.map(copyEntry)
  }

  /** Number of entries. */
  get size(): number {
    return this.#entries.length
  }

  /** The distinct principals held, as `name@REALM`. */
  principals(): string[] {
    return [...new Set(this.#entries.map((e) => formatPrincipal({ realm: e.realm, components: e.name })))]
  }

  /**
   * Add an entry (copied). An entry with the same principal and kvno is replaced, so
   * re-exporting a key is idempotent. Throws TESSERA_KEYTAB on a malformed entry.
   */
  add(entry: KeytabEntry): this {
    checkEntry(entry)
    const e = copyEntry(entry)
    const id = { realm: e.realm, components: e.name }
    const i = this.#entries.findIndex((x) => sameId(x, id) && x.kvno === e.kvno)
    if (i >= 0) {
      this.#entries[i]!.key.fill(0)
      this.#entries[i] = e
    } else this.#entries.push(e)
    return this
  }

  /** Remove the entries of `principal` (only version `kvno` when given). Returns how many were removed. */
  remove(principal: PrincipalRef, kvno?: number): number {
    const id = toId(principal)
    let removed = 0
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const e = this.#entries[i]!
      if (sameId(e, id) && (kvno === undefined || e.kvno === kvno)) {
        e.key.fill(0)
        this.#entries.splice(i, 1)
        removed++
      }
    }
    return removed
  }

  /** The key of `principal` with version `kvno`, or undefined. */
  find(principal: PrincipalRef, kvno: number): KeytabEntry | undefined {
    const id = toId(principal)
    const e = this.#entries.find((x) => sameId(x, id) && x.kvno === kvno)
    return e && copyEntry(e)
  }

  /** The newest (highest kvno) key of `principal`, or undefined. */
  latest(principal: PrincipalRef): KeytabEntry | undefined {
    const id = toId(principal)
    let best: KeytabEntry | undefined
    for (const e of this.#entries) if (sameId(e, id) && (!best || e.kvno > best.kvno)) best = e
    return best && copyEntry(best)
  }

  /** Every key version held for `principal`, ascending. */
  kvnos(principal: PrincipalRef): number[] {
    const id = toId(principal)
    return this.#entries.filter((e) => sameId(e, id)).map((e) => e.kvno).sort((a, b) => a - b)
  }

  /** True when the keytab holds at least one key of `principal`. */
  has(principal: PrincipalRef): boolean {
    const id = toId(principal)
    return this.#entries.some((e) => sameId(e, id))
  }

  /** Overwrite every key in memory (best effort) and empty the keytab. */
  wipe(): void {
    for (const e of this.#entries) e.key.fill(0)
    this.#entries.length = 0
  }
}

/** Add `entry` to `keytab` (replacing the same principal and kvno) and return the keytab. */
export function addKeytabEntry(keytab: Keytab, entry: KeytabEntry): Keytab {
  return keytab.add(entry)
}

/** The bytes of a keytab file. */
export function encodeKeytab(keytab: Keytab): Uint8Array {
  const entries: KeytabEntryWire[] = keytab.entries.map((e) => {
    const w: KeytabEntryWire = { realm: e.realm, name: e.name, kvno: e.kvno, key: e.key, createdAt: e.createdAt }
    if (e.kdf !== undefined) w.kdf = { alg: e.kdf.alg, N: e.kdf.N, r: e.kdf.r, p: e.kdf.p }
    if (e.salt !== undefined) w.salt = e.salt
    return w
  })
  const body = encode({ entries })
  for (const e of entries) e.key.fill(0)
  const out = new Uint8Array(HEADER_BYTES + body.length)
  out.set(KEYTAB_MAGIC, 0)
  out[4] = KEYTAB_VERSION
  out.set(body, HEADER_BYTES)
  body.fill(0)
  return out
}

/** Parse the bytes of a keytab file. Throws TESSERA_KEYTAB. */
export function decodeKeytab(bytes: Uint8Array, where = 'keytab'): Keytab {
  if (bytes.length < HEADER_BYTES || !KEYTAB_MAGIC.every((b, i) => bytes[i] === b))
    throw keytabError(`${where} is not a Tessera keytab (bad magic)`)
  if (bytes[4] !== KEYTAB_VERSION)
    throw keytabError(`${where} has keytab format version ${bytes[4]}; this version of Tessera reads version ${KEYTAB_VERSION}`)
  let body: Static<typeof KeytabBodySchema>
  try {
    body = validate(KeytabBodySchema, decode(bytes.subarray(HEADER_BYTES), { maxEntries: MAX_KEYTAB_ENTRIES }))
  } catch (err) {
    throw keytabError(`${where} is corrupt: ${(err as Error).message}`, err)
  }
  const kt = new Keytab()
  try {
    for (const w of body.entries) {
      const e: KeytabEntry = { realm: w.realm, name: w.name, kvno: w.kvno, key: w.key, createdAt: w.createdAt }
      if (w.kdf !== undefined) e.kdf = w.kdf
      if (w.salt !== undefined) e.salt = w.salt
      kt.add(e) // copies the key: decoded binaries are views into `bytes`
    }
  } catch (err) {
    kt.wipe()
    throw err instanceof TesseraError ? keytabError(`${where}: ${err.message}`, err) : err
  }
  return kt
}

/**
 * Read a keytab file. Refuses (TESSERA_KEYTAB) a file that group or others may read or
 * write, as ssh does with private keys: such a key may already be known to someone else.
 */
export async function readKeytab(file: string): Promise<Keytab> {
  let fh: FileHandle
  try {
    fh = await open(file, fsc.O_RDONLY)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable by this user' : (err as Error).message
    throw keytabError(`cannot read keytab ${file}: it ${why}`, err)
  }
  let bytes: Buffer | undefined
  try {
    // fstat on the open handle: the file checked is the file read.
    const st = await fh.stat()
    if (!st.isFile()) throw keytabError(`keytab ${file} is not a regular file`)
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
      throw keytabError(
        `keytab ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); ` +
          `refusing to use it. Run: chmod 600 ${file}`,
      )
    if (st.size > MAX_KEYTAB_BYTES) throw keytabError(`keytab ${file} is too large (${st.size} bytes)`)
    bytes = await fh.readFile()
    const kt = decodeKeytab(bytes, `keytab ${file}`)
    kt.file = path.resolve(file)
    return kt
  } finally {
    bytes?.fill(0)
    await fh.close()
  }
}

/**
 * Write a keytab file with mode 0600, atomically: a temporary file in the same directory
 * is written, flushed and renamed over `file`, so a reader sees the old or the new keytab,
 * never half of one. Throws TESSERA_KEYTAB.
 */
export async function writeKeytab(file: string, keytab: Keytab): Promise<void> {
  const dir = path.dirname(file)
  const tmp = path.join(dir, `.${path.basename(file)}.${Buffer.from(nodeRandomBytes(6)).toString('hex')}.tmp`)
  const bytes = encodeKeytab(keytab)
  let fh: FileHandle | undefined
  try {
    // O_EXCL: never write through a file (or symlink) someone placed at the temporary name.
    fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
    // The umask can only clear bits, but be explicit: the mode is part of the contract.
    await fh.chmod(0o600)
    await fh.writeFile(bytes)
    await fh.sync()
    await fh.close()
    fh = undefined
    await rename(tmp, file)
  } catch (err) {
    await fh?.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    throw keytabError(`cannot write keytab ${file}: ${(err as Error).message}`, err)
  } finally {
    bytes.fill(0)
  }
  // Make the rename durable (best effort: not every platform can fsync a directory).
  try {
    const d = await open(dir, fsc.O_RDONLY)
    try {
      await d.sync()
    } finally {
      await d.close()
    }
  } catch {
    // ignore
  }
}
