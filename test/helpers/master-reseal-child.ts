/**
 * Child process of the master-key crash test: runs `reseal` on DIR in batches of 3 and, once
 * the first batch has landed, says so on stdout and waits to be killed (kill -9).
 */
import { runMasterKeyStep } from '../../src/admin/master-rotation.js'

const dir = process.argv[2]!
let batches = 0
await runMasterKeyStep({
  dir,
  step: 'reseal',
  user: 'crash-test',
  batchSize: 3,
  afterBatch: async () => {
    if (++batches === 2) {
      process.stdout.write('BATCHES\n')
      await new Promise(() => {})
    }
  },
})
process.stdout.write('DONE\n')
