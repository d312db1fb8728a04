/** Shared CLI plumbing: reading secrets (file, env, no-echo prompt, stdin), printing errors for people. */
import { readFile, stat } from 'node:fs/promises'
import { KrbProtocolError, TesseraError } from '../errors.js'

/** Exit codes shared by the CLIs. */
export const Exit = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  AUTH: 3,
  UNREACHABLE: 4,
  CONFIG: 5,
  NO_CREDENTIALS: 6,
} as const

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
