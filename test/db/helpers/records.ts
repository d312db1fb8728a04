/** Shared fixtures of the db tests: records, expectations on error codes, temp dirs. */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { randomKey } from '../../../src/crypto/index.js'
import { parsePrincipal } from '../../../src/db/names.js'
import type { PrincipalRecord } from '../../../src/db/types.js'
import { TesseraError } from '../../../src/errors.js'

export const REALM = 'EXAMPLE.COM'

/** A minimal valid record for `text` (default realm EXAMPLE.COM) with one random key. */
export function makeRecord(text: string, over: Partial<PrincipalRecord> = {}): PrincipalRecord {
  const id = parsePrincipal(text, REALM)
  return {
    realm: id.realm,
    components: id.components,
    attributes: { requiresPreauth: true },
    maxLife: 10 * 3600_000,
    maxRenewableLife: 7 * 24 * 3600_000,
    keys: [{ kvno: 1, key: randomKey(), createdAt: 1000 }],
    createdAt: 1000,
    createdBy: 'test/admin',
    modifiedAt: 1000,
    modifiedBy: 'test/admin',
    failureCount: 0,
    ...over,
  }
}

/** Assert that `p` rejects with a TesseraError of `code` (or any error with that `code`). */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<Error> {
  try {
    await p
  } catch (err) {
    expect(err, `expected ${code}`).to.be.instanceOf(Error)
    expect((err as { code?: unknown }).code).to.equal(code)
    return err as Error
  }
  expect.fail(`expected a rejection with ${code}`)
}

/** Assert that `fn` throws a TesseraError of `code`. */
export function throwsWith(fn: () => unknown, code: string): void {
  try {
    fn()
  } catch (err) {
    expect(err).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(code)
    return
  }
  expect.fail(`expected a throw with ${code}`)
}

/** A fresh temp dir, and its removal. */
export async function tempDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-db-'))
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) }
}

/** True when `hay` contains the byte string `needle`. */
export function containsBytes(hay: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength).indexOf(Buffer.from(needle)) >= 0
}
