/** Shared CLI plumbing: exit codes, reading secrets (file, env, no-echo prompt, stdin), printing errors for people. */
import { readFile, stat } from 'node:fs/promises'
import { ErrorCode } from '../../proto/error-codes.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { defaultRealmFilePath, loadRealmFile, type RealmFile } from '../krb/realm-file.js'

/** Exit codes shared by the CLIs (kdc, kadmin, kauth). */
export const Exit = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  AUTH: 3,
  UNREACHABLE: 4,
  CONFIG: 5,
  NO_CREDENTIALS: 6,
  /** Standard output was closed before everything was written (`kauth list | head -1`): 128 + SIGPIPE. */
  OUTPUT_CLOSED: 141,
} as const

/** What each exit code means, in the order of --help and docs/cli.md. */
export const EXIT_MEANINGS: readonly (readonly [number, string])[] = [
  [Exit.OK, 'success'],
  [Exit.FAILURE, 'failure (the message says why)'],
  [Exit.USAGE, 'usage: unknown command or option, bad argument or principal name'],
  [Exit.AUTH, 'authentication refused: wrong password or key, account revoked'],
  [Exit.UNREACHABLE, 'no KDC reachable (connection refused or timed out)'],
  [Exit.CONFIG, 'configuration: realm/config/password file, keytab, port in use'],
  [Exit.NO_CREDENTIALS, 'no usable credentials (none cached, or expired): run kauth login'],
  [Exit.OUTPUT_CLOSED, 'standard output closed early (e.g. piped into head)'],
]

/** The "Exit status" epilogue of every CLI's --help. */
export function exitCodesEpilogue(): string {
  return `Exit status:\n${EXIT_MEANINGS.map(([c, m]) => `  ${String(c).padStart(3)}  ${m}`).join('\n')}`
}

const AUTH_CODES: ReadonlySet<number> = new Set([
  ErrorCode.KDC_ERR_PREAUTH_FAILED,
  ErrorCode.KDC_ERR_CLIENT_REVOKED,
  ErrorCode.KDC_ERR_KEY_EXPIRED,
  ErrorCode.KDC_ERR_NAME_EXP,
])

// The KDC cannot use the cached ticket (damaged, from a twin realm, expired): log in again.
const STALE_TICKET_CODES: ReadonlySet<number> = new Set([ErrorCode.KRB_AP_ERR_BAD_INTEGRITY, ErrorCode.KRB_AP_ERR_TKT_EXPIRED])

/** The exit code for an error, the same for every CLI. */
export function exitCodeFor(e: unknown): number {
  if (e instanceof KrbProtocolError) {
    if (AUTH_CODES.has(e.code)) return Exit.AUTH
    if (STALE_TICKET_CODES.has(e.code)) return Exit.NO_CREDENTIALS
    return Exit.FAILURE
  }
  if (e instanceof TesseraError) {
    switch (e.code) {
      case TesseraErrorCode.TESSERA_NETWORK:
      case TesseraErrorCode.TESSERA_TIMEOUT:
        return Exit.UNREACHABLE
      case TesseraErrorCode.TESSERA_CONFIG:
      case TesseraErrorCode.TESSERA_KEYTAB:
      case TesseraErrorCode.TESSERA_REALM_EXISTS:
      case TesseraErrorCode.TESSERA_DB_LOCKED:
        return Exit.CONFIG
      case TesseraErrorCode.TESSERA_NO_CREDENTIALS:
        return Exit.NO_CREDENTIALS
      case TesseraErrorCode.TESSERA_BAD_NAME:
        return Exit.USAGE
    }
  }
  return Exit.FAILURE
}

/**
 * Exit quietly when standard output is closed under us (`kauth list | head -1`): node
 * ignores SIGPIPE, so a write to a closed pipe is an EPIPE error that would otherwise end
 * the process with a stack trace. A C tool would die of SIGPIPE; we exit with its status.
 * Errors on stderr are ignored: there is nowhere left to report them.
 */
export function exitQuietlyWhenOutputCloses(
  stdout: NodeJS.WriteStream = process.stdout,
  stderr: NodeJS.WriteStream = process.stderr,
  exit: (code: number) => void = (code) => process.exit(code),
): void {
  stdout.on('error', (err: NodeJS.ErrnoException) => {
    exit(err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED' ? Exit.OUTPUT_CLOSED : Exit.FAILURE)
  })
  stderr.on('error', () => {})
}

/** Read a secret from a file: the first line, without its newline. */
export async function readSecretFile(file: string): Promise<string> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG', `cannot read password file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      cause: err,
    })
  }
  const line = text.split(/\r?\n/)[0] ?? ''
  if (line.length === 0) throw new TesseraError('TESSERA_CONFIG', `${file} is empty`)
  return line
}

/** Warn-worthy: a secret file others can read. */
export async function isPrivateFile(file: string): Promise<boolean> {
  const s = await stat(file)
  return (s.mode & 0o077) === 0
}

/** Read a password file, warning on `err` when others can read it. */
export async function readPasswordFile(file: string, err: NodeJS.WritableStream, prog: string): Promise<string> {
  const secret = await readSecretFile(file)
  if (!(await isPrivateFile(file))) err.write(`${prog}: warning: ${file} is readable by other users (chmod 600 it)\n`)
  return secret
}

/** Prompt on the TTY without echo. Rejects if stdin is not a TTY. */
export function promptHidden(question: string, input: NodeJS.ReadStream = process.stdin, output: NodeJS.WriteStream = process.stderr): Promise<string> {
  if (!input.isTTY) return Promise.reject(new TesseraError('TESSERA_CONFIG', 'no terminal to prompt for a password'))
  return new Promise((resolve, reject) => {
    output.write(question)
    input.setRawMode(true)
    input.resume()
    let value = ''
    const done = (err?: Error) => {
      input.setRawMode(false)
      input.pause()
      input.off('data', onData)
      input.off('end', onEnd)
      output.write('\n')
      if (err) reject(err)
      else resolve(value)
    }
    const onEnd = () => done(new TesseraError('TESSERA_ABORTED', 'input closed'))
    const onData = (buf: Buffer) => {
      for (const ch of buf.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done()
        if (ch === '\u0003') return done(new TesseraError('TESSERA_ABORTED', 'interrupted'))
        // Ctrl-D: end of input, as on a line the terminal would have delivered.
        if (ch === '\u0004') return value.length > 0 ? done() : done(new TesseraError('TESSERA_ABORTED', 'no password given'))
        // Escape sequences (arrow keys) and other control characters are not password characters.
        if (ch < ' ' && ch !== '\b') continue
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1)
        else value += ch
      }
    }
    input.on('data', onData)
    input.once('end', onEnd)
  })
}

/** Read all of stdin (piped input), first line. */
export async function readStdinLine(input: NodeJS.ReadStream = process.stdin): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of input) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? ''
}

/** One line for a person; the stack only with --debug. */
export function formatError(err: unknown, debug = false): string {
  if (debug && err instanceof Error) return err.stack ?? err.message
  if (err instanceof KrbProtocolError) return `${err.message} (${err.codeName})`
  if (err instanceof TesseraError) return `${err.message}`
  if (err instanceof Error) return err.message
  return String(err)
}

/**
 * The realm file a CLI uses: `--realm-file`, else TESSERA_REALM_FILE, else the default path
 * (the one decision `realmFilePath` makes for apps). A missing file is TESSERA_CONFIG naming
 * the path, where it came from, and `hint` (what this CLI's user can do about it).
 */
export async function loadRealmForCli(flag: string | undefined, env: NodeJS.ProcessEnv, prog: string, hint: string): Promise<RealmFile> {
  const [file, from] = flag
    ? [flag, 'from --realm-file']
    : env.TESSERA_REALM_FILE
      ? [env.TESSERA_REALM_FILE, 'from TESSERA_REALM_FILE']
      : [defaultRealmFilePath(env), 'the default path; neither --realm-file nor TESSERA_REALM_FILE is set']
  try {
    return await loadRealmFile(file)
  } catch (e) {
    if ((e as { cause?: NodeJS.ErrnoException }).cause?.code !== 'ENOENT') throw e
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `no realm file at ${file} (${from}); point ${prog} at your realm's realm.json with ${hint}`, {
      cause: e,
    })
  }
}
