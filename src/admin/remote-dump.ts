/**
 * `dump` over the admin listener: the running KDC takes the snapshot (its LevelDB iterator
 * is one consistent view while it serves) into a private file, and the client reads it back
 * in chunks that fit one ADMIN_REP (PROTOCOL.md §8.5.4 `dump`).
 */
import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from '../crypto/index.js'
import { formatPrincipal } from '../db/names.js'
import { NotAuthorizedError, TesseraError, TesseraErrorCode } from '../errors.js'
import { dumpDatabase } from './dump.js'
import type { Actor, AdminContext } from './operations.js'

/** Bytes of dump per reply (an ADMIN_REP holds at most 60,000 bytes sealed). */
export const DUMP_CHUNK_BYTES = 48 * 1024
/** A dump not read to its end within this time is deleted, ms. */
export const DUMP_SESSION_MS = 10 * 60_000
/** Dumps being read at once, per KDC. */
const MAX_SESSIONS = 4

interface Session {
  file: string
  owner: string
  size: number
  timer: NodeJS.Timeout
}

/** What the first `dump` reply holds. */
export interface DumpStart {
  session: string
  size: number
  entries: number
  sha256: string
  data: Uint8Array
}

function ownerOf(actor: Actor): string {
  return actor.kind === 'local' ? `local:${actor.user}` : formatPrincipal(actor.principal)
}

/** The dump sessions of one admin service. */
export class RemoteDumps {
  readonly #sessions = new Map<string, Session>()
  readonly #root: string | undefined
  #dir: string | undefined

  /** `root`: the realm directory (dumps go to ROOT/dumps, 0700); absent: a private temp directory. */
  constructor(root?: string) {
    this.#root = root
  }

  /** `dump {}`: take the snapshot, return its first chunk. `dump { session, offset }`: the next one. */
  async handle(ctx: AdminContext, actor: Actor, args: { session?: string; offset?: number }): Promise<DumpStart | { data: Uint8Array }> {
    if (args.session === undefined) {
      if (args.offset !== undefined) throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, 'dump: offset goes with session')
      return this.#start(ctx, actor)
    }
    const s = this.#sessions.get(args.session)
    // A session is its owner's only; another caller learns nothing about it.
    if (s === undefined || s.owner !== ownerOf(actor))
      throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, 'no such dump session (finished, expired, or not yours)')
    const offset = args.offset ?? 0
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > s.size)
      throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `dump: offset must be within 0..${s.size}`)
    const data = await readChunk(s.file, offset)
    if (offset + data.length >= s.size) await this.#end(args.session)
    return { data }
  }

  async #start(ctx: AdminContext, actor: Actor): Promise<DumpStart> {
    if (this.#sessions.size >= MAX_SESSIONS)
      throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `${MAX_SESSIONS} dumps are being read already; try later`)
    const dir = await this.#directory()
    const id = randomBytes(16)
    const session = Buffer.from(id).toString('hex')
    const file = path.join(dir, `${session}.dump`)
    // dumpDatabase checks the permissions (i, l and e on everything) and audits the dump.
    let r: { entries: number; sha256: string }
    try {
      r = await dumpDatabase(ctx, actor, file)
    } catch (err) {
      if (err instanceof NotAuthorizedError) throw err
      await rm(file, { force: true })
      throw err
    }
    const size = (await stat(file)).size
    const timer = setTimeout(() => void this.#end(session), DUMP_SESSION_MS)
    timer.unref()
    this.#sessions.set(session, { file, owner: ownerOf(actor), size, timer })
    const data = await readChunk(file, 0)
    if (data.length >= size) await this.#end(session)
    return { session, size, entries: r.entries, sha256: r.sha256, data }
  }

  async #directory(): Promise<string> {
    if (this.#dir !== undefined) return this.#dir
    if (this.#root !== undefined) {
      const d = path.join(this.#root, 'dumps')
      await mkdir(d, { recursive: true, mode: 0o700 })
      this.#dir = d
    } else this.#dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-dumps-'))
    return this.#dir
  }

  async #end(session: string): Promise<void> {
    const s = this.#sessions.get(session)
    if (s === undefined) return
    this.#sessions.delete(session)
    clearTimeout(s.timer)
    await rm(s.file, { force: true })
  }

  /** Delete every dump not yet read. */
  async close(): Promise<void> {
    await Promise.all([...this.#sessions.keys()].map((s) => this.#end(s)))
    if (this.#root === undefined && this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true })
  }
}

async function readChunk(file: string, offset: number): Promise<Uint8Array> {
  const fh = await open(file, 'r')
  try {
    const buf = Buffer.alloc(DUMP_CHUNK_BYTES)
    const { bytesRead } = await fh.read(buf, 0, DUMP_CHUNK_BYTES, offset)
    return new Uint8Array(buf.buffer, buf.byteOffset, bytesRead)
  } finally {
    await fh.close()
  }
}
