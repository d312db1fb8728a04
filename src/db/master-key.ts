/** The realm master key: a stash file (0600) or a passphrase, never stored in the database. */
import { randomBytes } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import { open as fsOpen, unlink } from 'node:fs/promises'
import { type KdfParams, passwordToKey, randomKey } from '../crypto/index.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'

/** Length of the master key, bytes. */
export const MASTER_KEY_BYTES = 32

/**
 * scrypt parameters of {@link masterKeyFromPassphrase}. Pinned here rather than taken from
 * DEFAULT_KDF_PARAMS: if those were raised, every existing database would stop opening.
 */
export const MASTER_KDF_PARAMS: Readonly<KdfParams> = Object.freeze({ alg: 'scrypt', N: 32768, r: 8, p: 1 })

/**
 * Create a stash file holding 32 fresh random bytes, mode 0600, and return the key.
 * The file is created exclusively: TesseraError(TESSERA_EXISTS) if it is already there,
 * so an existing master key is never overwritten.
 */
export async function createStash(path: string): Promise<Uint8Array> {
  const key = randomKey()
  let fh: Awaited<ReturnType<typeof fsOpen>>
  try {
    fh = await fsOpen(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `stash file ${path} already exists; refusing to overwrite a master key`, {
        cause: err,
      })
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot create stash file ${path}`, { cause: err })
  }
  try {
    // The mode given to open() is reduced by the umask but never widened; chmod makes it exact.
    await fh.chmod(0o600)
    await fh.writeFile(key)
    await fh.sync()
    await fh.close()
  } catch (err) {
    await fh.close().catch(() => {})
    await unlink(path).catch(() => {})
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot write stash file ${path}`, { cause: err })
  }
  return key
}

/**
 * Read a stash file. Throws TesseraError(TESSERA_CONFIG) if it is missing, unreadable,
 * readable or writable by group or others (on POSIX systems), or not exactly 32 bytes.
 */
export async function readStash(path: string): Promise<Uint8Array> {
  const buf = await readStashFile(path, (size) => size === MASTER_KEY_BYTES, `a ${MASTER_KEY_BYTES}-byte master key`)
  const key = new Uint8Array(buf)
  buf.fill(0)
  return key
}

/**
 * The bytes of a stash file after the checks every stash gets: it exists, is a regular file
 * not accessible by group or others (on POSIX systems; checked on the open handle, so the
 * file checked is the file read) and of a size `sizeOk` accepts. The caller wipes the buffer.
 */
async function readStashFile(path: string, sizeOk: (size: number) => boolean, what: string): Promise<Buffer> {
  let fh: Awaited<ReturnType<typeof fsOpen>>
  try {
    fh = await fsOpen(path, 'r')
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'cannot be opened'
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} ${why}`, { cause: err })
  }
  try {
    const st = await fh.stat()
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
      throw new TesseraError(
        TesseraErrorCode.TESSERA_CONFIG,
        `stash file ${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
      )
    if (!st.isFile() || !sizeOk(st.size)) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} is not ${what}`)
    const buf = await fh.readFile()
    if (!sizeOk(buf.length)) {
      buf.fill(0)
      throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} is not ${what}`)
    }
    return buf
  } catch (err) {
    if (err instanceof TesseraError) throw err
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot read stash file ${path}`, { cause: err })
  } finally {
    await fh.close().catch(() => {})
  }
}

/** Master key from a passphrase: scrypt ({@link MASTER_KDF_PARAMS}) salted with `"tessera-master:" + realm`. */
export function masterKeyFromPassphrase(passphrase: string, realm: string): Promise<Uint8Array> {
  if (typeof passphrase !== 'string' || passphrase.length === 0)
    return Promise.reject(new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'master passphrase is empty'))
  return passwordToKey(passphrase, `tessera-master:${realm}`, MASTER_KDF_PARAMS)
}

/** One master key of a stash: its version (1 for the key `kdc init` made) and the 32 bytes. */
export interface MasterKeyEntry {
  kvno: number
  key: Uint8Array
}

// A stash holding other than one kvno-1 key (a master-key rotation, docs/operations.md):
// "TSTASH02" || count (uint8) || count x (uint32be kvno || 32-byte key). A plain 32-byte file is kvno 1.
const STASH_MAGIC = Buffer.from('TSTASH02', 'ascii')
const STASH_ENTRY_BYTES = 4 + MASTER_KEY_BYTES
/** Most master keys a stash holds (MIT keeps a handful; two during a rotation). */
export const MAX_STASH_KEYS = 8

/** The bytes of a stash holding `entries` (the legacy 32-byte form for a lone kvno 1). */
export function encodeStash(entries: readonly MasterKeyEntry[]): Uint8Array {
  if (entries.length === 0 || entries.length > MAX_STASH_KEYS) throw new RangeError(`a stash holds 1 to ${MAX_STASH_KEYS} keys`)
  for (const e of entries)
    if (!Number.isSafeInteger(e.kvno) || e.kvno < 1 || e.kvno > 0xffffffff || e.key.length !== MASTER_KEY_BYTES)
      throw new RangeError('a stash entry is a kvno >= 1 and a 32-byte key')
  if (new Set(entries.map((e) => e.kvno)).size !== entries.length) throw new RangeError('duplicate master key kvno')
  if (entries.length === 1 && entries[0]!.kvno === 1) return new Uint8Array(entries[0]!.key)
  const out = Buffer.alloc(STASH_MAGIC.length + 1 + entries.length * STASH_ENTRY_BYTES)
  STASH_MAGIC.copy(out, 0)
  out[STASH_MAGIC.length] = entries.length
  let o = STASH_MAGIC.length + 1
  for (const e of entries) {
    out.writeUInt32BE(e.kvno, o)
    out.set(e.key, o + 4)
    o += STASH_ENTRY_BYTES
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length)
}

function decodeStash(buf: Uint8Array, path: string): MasterKeyEntry[] {
  const bad = () => new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} is not a master key stash`)
  if (buf.length === MASTER_KEY_BYTES) return [{ kvno: 1, key: new Uint8Array(buf) }]
  if (buf.length < STASH_MAGIC.length + 1 || !Buffer.from(buf.subarray(0, STASH_MAGIC.length)).equals(STASH_MAGIC)) throw bad()
  const n = buf[STASH_MAGIC.length]!
  if (n < 1 || n > MAX_STASH_KEYS || buf.length !== STASH_MAGIC.length + 1 + n * STASH_ENTRY_BYTES) throw bad()
  const out: MasterKeyEntry[] = []
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length)
  for (let i = 0, o = STASH_MAGIC.length + 1; i < n; i++, o += STASH_ENTRY_BYTES)
    out.push({ kvno: view.getUint32(o), key: new Uint8Array(buf.subarray(o + 4, o + STASH_ENTRY_BYTES)) })
  if (out.some((e) => e.kvno < 1) || new Set(out.map((e) => e.kvno)).size !== n) throw bad()
  return out
}

/**
 * Every master key of a stash file (one, or several during a master-key rotation). Same
 * checks as {@link readStash}: mode 0600 on POSIX, the exact size of its form.
 */
export async function readStashKeys(path: string): Promise<MasterKeyEntry[]> {
  const buf = await readStashFile(path, (size) => size <= 64 + MAX_STASH_KEYS * STASH_ENTRY_BYTES, 'a master key stash')
  try {
    return decodeStash(new Uint8Array(buf.buffer, buf.byteOffset, buf.length), path)
  } finally {
    buf.fill(0)
  }
}

/**
 * Replace a stash file atomically with `entries`: a temporary file (0600, fsynced) renamed
 * over it, then the directory fsynced, so a crash leaves the old stash or the new one, never half.
 */
export async function writeStashKeys(path: string, entries: readonly MasterKeyEntry[]): Promise<void> {
  const bytes = encodeStash(entries)
  // An unpredictable name, created exclusively: never written through a file or link someone
  // who can write in the directory planted at the temporary name (as writeKeytab).
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  const { rename } = await import('node:fs/promises')
  const nodePath = await import('node:path')
  let fh: Awaited<ReturnType<typeof fsOpen>> | undefined
  let created = false
  try {
    fh = await fsOpen(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600)
    created = true
    await fh.chmod(0o600)
    await fh.writeFile(bytes)
    await fh.sync()
    await fh.close()
    fh = undefined
    await rename(tmp, path)
    const dir = await fsOpen(nodePath.dirname(path), 'r')
    await dir.sync().catch(() => {})
    await dir.close()
  } catch (err) {
    await fh?.close().catch(() => {})
    // Only a file this call made: what stands at the name after a refused O_EXCL is not ours to remove.
    if (created) await unlink(tmp).catch(() => {})
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot write stash file ${path}`, { cause: err })
  } finally {
    bytes.fill(0)
  }
}
