/** `kadmin`: principals, policies, key rotation (its issue has not landed yet). */
import yargs from 'yargs'

/** Run kadmin with argv; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let code = 0
  await yargs(argv)
    .scriptName('kadmin')
    .usage('$0 <command>\n\nManage principals, policies and keys of a Tessera realm.')
    .command('*', false, {}, () => {
      process.stderr.write('kadmin: not yet implemented in this version of Tessera\n')
      code = 69
    })
    .strict()
    .help()
    .parseAsync()
  return code
}
