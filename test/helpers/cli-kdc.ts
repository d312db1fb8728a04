/**
 * Shared setup of the kauth, credential-cache and time suites: an in-memory KDC on
 * 127.0.0.1 with its realm.json in a temp directory, kauth runs with captured
 * output and piped stdin.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { main } from '../../src/cli/kauth.js'
import { type RunningKdc, type StartKdcOptions, startKdc } from '../../src/kdc/kdc.js'
import { type RealmFile, realmFileJson } from '../../src/krb/realm-file.js'
import { CLI_REALM } from './cli-creds.js'

export { CLI_REALM }
export const PASSWORDS = { alice: 'pw-alice-1', bob: 'pw-bob-2' } as const

/** A fresh temp directory; remove it with rm(dir, { recursive: true }). */
export function tempDir(prefix = 'tessera-cli-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix))
}

/** Write `rf` as realm.json into `dir` (or to `file`); returns the path. */
export async function writeRealm(dir: string, rf: RealmFile, name = 'realm.json'): Promise<string> {
  const file = path.join(dir, name)
  await writeFile(file, `${JSON.stringify(realmFileJson(rf), null, 2)}\n`)
  return file
}

/** A running in-memory KDC with alice and bob, and a temp dir holding its realm.json. */
export interface CliKdc {
  kdc: RunningKdc
  dir: string
  realmPath: string
  /** Environment for kauth: realm file, cache path and HOME in the temp dir. */
  env(ccache?: string): NodeJS.ProcessEnv
  close(): Promise<void>
}

/** Start an in-memory KDC (fast KDF, no console log) with alice and bob. */
export async function startCliKdc(extra: Omit<StartKdcOptions, 'dir'> = {}): Promise<CliKdc> {
  const kdc = await startKdc({
    ...extra,
    config: { kdf: { N: 1024 }, log: { console: false }, preauthFailureFloorMs: 20, ...extra.config },
  })
  await kdc.addPrincipal('alice', { password: PASSWORDS.alice })
  await kdc.addPrincipal('bob', { password: PASSWORDS.bob })
  const dir = await tempDir()
  const realmPath = await writeRealm(dir, kdc.realmFile)
  return {
    kdc,
    dir,
    realmPath,
    env: (ccache = path.join(dir, 'ccache')) => ({ TESSERA_REALM_FILE: realmPath, TESSERA_CCACHE: ccache, HOME: dir }),
    async close() {
      await kdc.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** stdin for a kauth run: piped text, not a TTY. */
export function pipedStdin(text: string): NodeJS.ReadStream {
  const r = Readable.from([Buffer.from(text)])
  return Object.assign(r, { isTTY: false }) as unknown as NodeJS.ReadStream
}

/** Outcome of one in-process kauth run. */
export interface KauthRun {
  code: number
  stdout: string
  stderr: string
  ms: number
}

/** Run kauth's main() in-process with captured stdout/stderr. */
export async function runKauth(argv: string[], env: NodeJS.ProcessEnv, stdin?: NodeJS.ReadStream): Promise<KauthRun> {
  const out = new PassThrough()
  const err = new PassThrough()
  const o: Buffer[] = []
  const e: Buffer[] = []
  out.on('data', (c: Buffer) => o.push(c))
  err.on('data', (c: Buffer) => e.push(c))
  const start = performance.now()
  const code = await main(argv, { env, stdout: out, stderr: err, ...(stdin ? { stdin } : {}) })
  const ms = performance.now() - start
  await new Promise((r) => setImmediate(r))
  return { code, stdout: Buffer.concat(o).toString('utf8'), stderr: Buffer.concat(e).toString('utf8'), ms }
}

// TCP fixtures shared with the KDC tests.
export { allPorts, BlackHole, closedPort } from './kdc-helpers.js'
