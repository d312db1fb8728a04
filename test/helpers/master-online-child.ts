/**
 * Child process of the online master-key crash test: a KDC with the admin service on the realm
 * directory DIR (`node --import tsx master-online-child.ts DIR`), whose control socket runs
 * reseals in batches of 2 and, once the second batch of a run has landed, prints `BATCHES` and
 * hangs there, to be killed (kill -9). Prints `ready` once listening.
 */
import { adminService } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'

const dir = process.argv[2]
if (!dir) throw new Error('usage: master-online-child.ts DIR')
let batches = 0
await startKdc({
  dir,
  config: { kdf: { N: 1024 }, log: { console: false }, ports: { as: 0, tgs: 0, time: 0, admin: 0 } },
  log: false,
  admin: adminService({
    masterKeyControl: {
      batchSize: 2,
      afterBatch: async () => {
        if (++batches === 2) {
          process.stdout.write('BATCHES\n')
          await new Promise(() => {})
        }
      },
    },
  }),
})
process.stdout.write('ready\n')
