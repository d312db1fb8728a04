/**
 * A KDC on a realm directory whose rotation scheduler looks at the clock every few ms: the
 * child process test/integration/rotation-crash.test.ts kills with SIGKILL mid-schedule.
 * Usage: node --import tsx test/helpers/rotation-child.ts DIR. Prints "ready" once serving.
 */
import { adminService } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'

const dir = process.argv[2]
if (dir === undefined) throw new Error('usage: rotation-child.ts DIR')
await startKdc({
  dir,
  config: { ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false }, kdf: { N: 1024 } },
  admin: adminService({ scheduler: { pollMs: 2 }, minRotateEveryMs: 1 }),
})
process.stdout.write('ready\n')
// The scheduler's timer is unref'd: keep the process alive until it is killed.
setInterval(() => {}, 60_000)
