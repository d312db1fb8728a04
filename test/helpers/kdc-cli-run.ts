/** Run the `kdc` CLI in-process with captured output, as the master-key suites do. */
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
