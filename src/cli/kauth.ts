/** `kauth`: principals, policies, key rotation (its issue has not landed yet). */
import yargs from 'yargs'

/** Run kauth with argv; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let code = 0
  await yargs(argv)
    .scriptName('kauth')
    .usage('$0 <command>\n\nTessera kauth.')
    .command('*', false, {}, () => {
      process.stderr.write('kauth: not yet implemented in this version of Tessera\n')
      code = 69
    })
    .strict()
    .help()
    .parseAsync()
  return code
}
