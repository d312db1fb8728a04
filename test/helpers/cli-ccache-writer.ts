/**
 * Child process of the credential-cache concurrency test: stores `count` entries for
 * distinct services (svc/w<id>-<i>) into one cache, as fast as it can.
 * Usage: node --import tsx cli-ccache-writer.ts <cache file> <id> <count>
 */
import { CredentialCache } from '../../src/client/ccache.js'
import { fakeCreds } from './cli-creds.js'

const [file, id, count] = process.argv.slice(2)
if (!file || !id || !count) {
  process.stderr.write('usage: cli-ccache-writer.ts <cache> <id> <count>\n')
  process.exit(2)
}
const cc = new CredentialCache(file)
// Start together: the parent sends "go" once every writer is loaded.
await new Promise<void>((resolve) => {
  process.stdin.once('data', () => resolve())
  process.stdout.write('ready\n')
})
for (let i = 0; i < Number(count); i++) await cc.store(fakeCreds({ service: ['svc', `w${id}-${i}`] }))
process.stdout.write('done\n')
process.exit(0)
