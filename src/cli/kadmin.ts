/** `kadmin`: principals, policies, key rotation (its issue has not landed yet). */
import yargs from 'yargs'
import { Exit, exitCodesEpilogue } from './common.js'

/** Streams of one kadmin run (tests pass their own). */
export interface KadminIo {
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
}

/** What works today instead, so that the message is true when it is printed. */
export const KADMIN_UNAVAILABLE =
  'kadmin: not available in this version of Tessera.\n' +
  'Meanwhile, with the daemon stopped, a program can add principals and export keytabs of a realm directory\n' +
  'through the library: const kdc = await startKdc({ dir }); await kdc.addPrincipal(name, { password });\n' +
  'await kdc.exportKeytab(name, file); await kdc.close()   (see docs/operations.md)\n'

/** Run kadmin with argv; resolves with the exit code. */
export async function main(argv: string[], io: KadminIo = {}): Promise<number> {
  const out = io.stdout ?? process.stdout
  const err = io.stderr ?? process.stderr
  let code: number = Exit.OK
  let usageError = false
  await yargs()
    .scriptName('kadmin')
    .usage('$0 <command>\n\nManage principals, policies and keys of a Tessera realm (not available yet).')
    .command('* [words..]', false, {}, () => {
      if (usageError) return
      err.write(KADMIN_UNAVAILABLE)
      code = Exit.FAILURE
    })
    .epilogue(exitCodesEpilogue())
    .strict()
    .help()
    .exitProcess(false)
    .fail((msg, e) => {
      if (e) throw e
      if (usageError) return
      usageError = true
      err.write(`kadmin: ${msg}\nRun kadmin --help for usage.\n`)
      code = Exit.USAGE
    })
    .parseAsync(argv, {}, (_e, _a, output) => {
      if (output && !usageError) out.write(`${output}\n`)
    })
  return code
}
