/** Run the `kdc` and `kadmin` CLIs in-process with captured output, as the master-key suites do. */
import { PassThrough } from 'node:stream'
import { main as kadminMain } from '../../src/cli/kadmin.js'
import { main as kdcMain } from '../../src/cli/kdc.js'

/** `kdc ARGV` in-process (USER=op for the audit log): its exit code, stdout and stderr. */
export async function runKdcCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = ''
  let err = ''
  const code = await kdcMain(argv, {
    stdout: { write: (s: string) => (out += s) } as unknown as NodeJS.WritableStream,
    stderr: { write: (s: string) => (err += s) } as unknown as NodeJS.WritableStream,
    env: { USER: 'op' },
  })
  return { code, out, err }
}

/** `kadmin ARGV` in-process with `env`, a stdin that is not a terminal: its exit code, stdout and stderr. */
export async function runKadminCli(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough()
  const err = new PassThrough()
  let o = ''
  let e = ''
  out.on('data', (c: Buffer) => {
    o += c.toString()
  })
  err.on('data', (c: Buffer) => {
    e += c.toString()
  })
  const stdin = Object.assign(new PassThrough(), { isTTY: false }) as unknown as NodeJS.ReadStream
  const code = await kadminMain(argv, { env, stdout: out, stderr: err, stdin })
  await new Promise((r) => setImmediate(r))
  return { code, out: o, err: e }
}
