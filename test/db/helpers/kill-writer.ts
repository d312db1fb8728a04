/**
 * Child process of the kill -9 durability test: creates principals w0, w1, ... in the
 * database at argv[2] (master key hex argv[3]) and prints "acked <n>" after each write
 * resolves, until it is killed.
 */
import { PrincipalDb } from '../../../src/db/principal-db.js'
import { makeRecord } from './records.js'

const [location, keyHex] = process.argv.slice(2)
if (location === undefined || keyHex === undefined) throw new Error('usage: kill-writer <location> <master key hex>')
const db = await PrincipalDb.open({ location, masterKey: Buffer.from(keyHex, 'hex') })
for (let n = 0; ; n++) {
  await db.create(makeRecord(`w${n}`))
  process.stdout.write(`acked ${n}\n`)
}
