import { expect } from 'chai'
import { randomBytes } from '../../src/crypto/index.js'
import { EventLog } from '../../src/db/event-log.js'
import { PrincipalDb } from '../../src/db/principal-db.js'

const ev = (i: number, time = 1000 + i) => ({ type: 'created', principal: `p${i}@R`, time })

describe('EventLog', () => {
  let db: PrincipalDb
  beforeEach(async () => {
    db = await PrincipalDb.open({ masterKey: randomBytes(32) })
  })
  afterEach(async () => {
    await db.close()
  })

  it('numbers events 1, 2, 3 … and reads them back after a reopen, numbering on', async () => {
    let log = await EventLog.open({ db, now: () => 2000 })
    await log.append([ev(1), ev(2)])
    await log.append([ev(3)])
    expect((await log.read(0, 10)).map((e) => e.seq)).to.deep.equal([1, 2, 3])
    log = await EventLog.open({ db, now: () => 2000 })
    expect(log.last).to.equal(3)
    await log.append([ev(4)])
    expect((await log.read(2, 10)).map((e) => [e.seq, e.principal])).to.deep.equal([
      [3, 'p3@R'],
      [4, 'p4@R'],
    ])
  })

  it('keeps at most maxEvents, the oldest removed first', async () => {
    const log = await EventLog.open({ db, maxEvents: 100, now: () => 2000 })
    for (let i = 1; i <= 130; i++) await log.append([ev(i)])
    expect(log.first).to.equal(31)
    expect(log.last).to.equal(130)
    const all = await log.read(0, 1000)
    expect(all.map((e) => e.seq)).to.deep.equal(Array.from({ length: 100 }, (_, i) => i + 31))
  })

  it('removes events past the retention at the next write and when opened', async () => {
    let now = 10_000
    const log = await EventLog.open({ db, retentionMs: 60_000, now: () => now })
    await log.append([ev(1, now), ev(2, now)])
    now += 120_000
    await log.append([ev(3, now)])
    expect(log.first).to.equal(3)
    now += 120_000
    const again = await EventLog.open({ db, retentionMs: 60_000, now: () => now })
    expect(again.first).to.equal(4)
    expect(again.last).to.equal(3)
    expect(await again.read(0, 10)).to.deep.equal([])
  })

  it('wakes a waiter when an event lands, and every waiter on close', async () => {
    const log = await EventLog.open({ db })
    const w = log.wait(0, 10_000)
    await log.append([ev(1)])
    expect(await w).to.equal(true)
    const w2 = log.wait(1, 10_000)
    log.close()
    expect(await w2).to.equal(false)
  })
})
