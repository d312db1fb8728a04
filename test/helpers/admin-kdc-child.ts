/**
 * A KDC with the admin service on an on-disk realm, as a child process (the kill -9 test,
 * test/integration/admin-crash.test.ts): `node --import tsx admin-kdc-child.ts DIR`. It
 * prints `ready` on stdout once listening (realm.json then holds its ports) and runs until
 * killed; SIGTERM closes it cleanly.
 */
import { startKdc } from '../../src/admin/start.js'

const dir = process.argv[2]
if (!dir) throw new Error('usage: admin-kdc-child.ts DIR')
const kdc = await startKdc({
  dir,
  config: { kdf: { N: 1024 }, log: { console: false }, ports: { as: 0, tgs: 0, time: 0, admin: 0 } },
  log: false,
})
process.stdout.write('ready\n')
process.once('SIGTERM', () => {
  void kdc.close().then(() => process.exit(0))
})
