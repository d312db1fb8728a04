/** The realm master key: a stash file (0600) or a passphrase, never stored in the database. */
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
  let fh: Awaited<ReturnType<typeof fsOpen>>
  try {
    fh = await fsOpen(path, 'r')
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'cannot be opened'
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} ${why}`, { cause: err })
  }
  try {
    // fstat on the open handle, so the checked file is the file read.
    const st = await fh.stat()
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
      throw new TesseraError(
        TesseraErrorCode.TESSERA_CONFIG,
        `stash file ${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
      )
    if (!st.isFile() || st.size !== MASTER_KEY_BYTES)
      throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} is not a ${MASTER_KEY_BYTES}-byte master key`)
    const buf = await fh.readFile()
    if (buf.length !== MASTER_KEY_BYTES)
      throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `stash file ${path} is not a ${MASTER_KEY_BYTES}-byte master key`)
    const key = new Uint8Array(buf)
    buf.fill(0)
    return key
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
