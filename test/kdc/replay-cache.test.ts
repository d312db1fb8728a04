/** ReplayCache (src/krb/replay-cache.ts) with an injected clock. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { ReplayCache } from '../../src/krb/replay-cache.js'

const SKEW = 300_000
const T0 = 1_800_000_000_000

function cache(over: Partial<ConstructorParameters<typeof ReplayCache>[0]> = {}) {
  const clock = { t: T0 }
  const rc = new ReplayCache({ maxClockSkewMs: SKEW, now: () => clock.t, ...over })
  return { rc, clock }
}

describe('ReplayCache', () => {
  it('says fresh the first time and replay the second', () => {
    const { rc } = cache()
    expect(rc.check('a', T0)).to.equal('fresh')
    expect(rc.check('a', T0)).to.equal('replay')
    expect(rc.check('b', T0)).to.equal('fresh')
    expect(rc.entries).to.equal(2)
  })

  it('says cold for an authenticator older than the cache (a previous process may have seen it)', () => {
    const { rc } = cache()
    expect(rc.startedAt).to.equal(T0)
    expect(rc.check('old', T0 - 1)).to.equal('cold')
    expect(rc.check('old', T0 - 1)).to.equal('cold')
    expect(rc.entries).to.equal(0)
    expect(rc.check('new', T0)).to.equal('fresh')
  })

  it('keeps saying cold after the start for authenticators dated before it', () => {
    const { rc, clock } = cache()
    clock.t = T0 + 60_000
    expect(rc.check('x', T0 - 10)).to.equal('cold')
    expect(rc.check('x', T0 + 59_000)).to.equal('fresh')
  })

  it('moves the cold boundary back with a wall clock stepped back since the start (else every honest authenticator is cold)', () => {
    const mono = { t: 0 }
    const { rc, clock } = cache({ monoMs: () => mono.t, followClockStepBack: true })
    mono.t = 10_000
    clock.t = T0 + 10_000
    expect(rc.check('a', clock.t)).to.equal('fresh')
    // NTP steps the wall clock back by 1 h; the monotonic clock goes on.
    mono.t = 20_000
    clock.t = T0 + 20_000 - 3600_000
    expect(rc.check('b', clock.t)).to.equal('fresh')
    expect(rc.check('b', clock.t)).to.equal('replay')
    expect(rc.check('a', T0 + 10_000), 'seen before the step').to.equal('replay')
    // what predates the start, on the stepped clock, is still cold
    expect(rc.check('c', T0 - 3600_000 - 1)).to.equal('cold')
    // a wall clock merely behind by less than a second is no step
    const j = cache({ monoMs: () => mono.t, followClockStepBack: true })
    mono.t += 500
    expect(j.rc.check('d', T0 - 1)).to.equal('cold')
    // without followClockStepBack (a service's cache) the boundary never moves
    const s = cache({ monoMs: () => mono.t })
    mono.t += 20_000
    s.clock.t = T0 - 3600_000
    expect(s.rc.check('e', s.clock.t)).to.equal('cold')
  })

  it('remembers an entry for as long as its authenticator passes the skew check', () => {
    const { rc, clock } = cache()
    expect(rc.check('a', T0)).to.equal('fresh')
    clock.t = T0 + SKEW
    expect(rc.check('a', T0), 'still within ctime + skew').to.equal('replay')
  })

  it('drops whole buckets once they expire', () => {
    const { rc, clock } = cache({ bucketMs: 10_000 })
    for (let i = 0; i < 100; i++) rc.check(`id${i}`, T0 + i * 100)
    expect(rc.entries).to.equal(100)
    clock.t = T0 + SKEW + 60_000
    rc.sweep()
    expect(rc.entries).to.equal(0)
    // an expired id can be "fresh" again only in a new bucket: its old ctime would fail the skew check anyway
    expect(rc.check('id0', clock.t)).to.equal('fresh')
  })

  it('sweeps on its own as time passes', () => {
    const { rc, clock } = cache({ bucketMs: 10_000 })
    rc.check('a', T0)
    rc.check('b', T0)
    clock.t = T0 + SKEW + 30_000
    rc.check('c', clock.t)
    expect(rc.entries).to.equal(1)
  })

  it('says full rather than evicting when maxEntries is reached', () => {
    const { rc, clock } = cache({ maxEntries: 1000 })
    for (let i = 0; i < 1000; i++) expect(rc.check(`f${i}`, T0)).to.equal('fresh')
    expect(rc.check('one-more', T0)).to.equal('full')
    expect(rc.check('f0', T0), 'old entries are kept').to.equal('replay')
    expect(rc.entries).to.equal(1000)
    clock.t = T0 + SKEW + 20_000
    expect(rc.check('one-more', clock.t), 'room again once entries expire').to.equal('fresh')
  })

  it('stays bounded under 100k inserts spread over time', () => {
    const { rc, clock } = cache({ maxEntries: 50_000, bucketMs: 10_000 })
    const verdicts = { fresh: 0, replay: 0, cold: 0, full: 0 }
    let max = 0
    for (let i = 0; i < 100_000; i++) {
      clock.t = T0 + i * 20 // 2000 s in all, ~6.7 skew windows
      verdicts[rc.check(`k${i}`, clock.t)]++
      if (rc.entries > max) max = rc.entries
    }
    expect(max).to.be.at.most(50_000)
    // ~ (skew + bucket) / 20 ms live at once: well under the cap, so nothing is refused
    expect(verdicts.full).to.equal(0)
    expect(verdicts.fresh).to.equal(100_000)
    expect(rc.entries).to.be.at.most((SKEW + 20_000) / 20)
  })

  it('stays at maxEntries under 100k inserts at one instant', () => {
    const { rc } = cache({ maxEntries: 10_000 })
    let full = 0
    for (let i = 0; i < 100_000; i++) if (rc.check(`k${i}`, T0) === 'full') full++
    expect(rc.entries).to.equal(10_000)
    expect(full).to.equal(90_000)
  })
})

describe('ReplayCache fair share', () => {
  it('stops one client at its share once the cache is half full, and keeps serving the others', () => {
    const now = 1_800_000_000_000
    const rc = new ReplayCache({ maxClockSkewMs: 300_000, maxEntries: 1000, now: () => now })
    // Below half full, nobody is limited.
    for (let i = 0; i < 500; i++) expect(rc.check(`a${i}`, now, `user${i % 10}`)).to.equal('fresh')
    // Half full: a flooding client gets 125 entries (12.5 %), then 'full'.
    let granted = 0
    for (let i = 0; i < 400; i++) if (rc.check(`flood${i}`, now, 'mallory') === 'fresh') granted++
    expect(granted).to.equal(125)
    expect(rc.check('flood-more', now, 'mallory')).to.equal('full')
    expect(rc.check('honest', now, 'alice')).to.equal('fresh')
  })

  it('gives a client its share back when its entries expire', () => {
    let now = 1_800_000_000_000
    const rc = new ReplayCache({ maxClockSkewMs: 60_000, maxEntries: 100, now: () => now })
    for (let i = 0; i < 50; i++) rc.check(`x${i}`, now, 'other')
    for (let i = 0; i < 13; i++) expect(rc.check(`m${i}`, now, 'mallory')).to.equal('fresh')
    expect(rc.check('m-next', now, 'mallory')).to.equal('full')
    now += 2 * 60_000 + 20_000
    rc.sweep()
    expect(rc.entries).to.equal(0)
    expect(rc.check('m-later', now, 'mallory')).to.equal('fresh')
  })
})

describe('ReplayCache replay file', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-rcache-'))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))
  const quiet = { warn() {} }

  it('writes only authenticators dated ahead of the clock, and a new cache over the file refuses them as replays', () => {
    const file = path.join(dir, 'svc.rcache')
    const clock = { t: T0 }
    const rc = new ReplayCache({ maxClockSkewMs: SKEW, now: () => clock.t, file, logger: quiet })
    expect(rc.check('before-start', T0 - 1)).to.equal('cold')
    clock.t = T0 + 10
    expect(rc.check('present', T0 + 10)).to.equal('fresh')
    expect(rc.check('behind', T0 + 5)).to.equal('fresh')
    expect(rc.check('ahead', T0 + 10 + 60_000)).to.equal('fresh')
    expect(readFileSync(file, 'latin1').split('\n').filter(Boolean)).to.have.length(2) // header + 'ahead'
    clock.t = T0 + 20
    const restarted = new ReplayCache({ maxClockSkewMs: SKEW, now: () => clock.t, file, logger: quiet })
    expect(restarted.check('present', T0 + 10)).to.equal('cold')
    expect(restarted.check('behind', T0 + 5)).to.equal('cold')
    expect(restarted.check('ahead', T0 + 10 + 60_000)).to.equal('replay')
    rc.close()
    restarted.close()
  })

  it('compacts the file as entries expire: 5000 ahead-dated acceptances over 500 s (skew 60 s) leave far fewer records', () => {
    const file = path.join(dir, 'svc.rcache')
    const skew = 60_000
    const clock = { t: T0 }
    const rc = new ReplayCache({ maxClockSkewMs: skew, now: () => clock.t, file, logger: quiet })
    for (let i = 0; i < 5000; i++) {
      clock.t += 100
      expect(rc.check(`id${i}`, clock.t + 1000)).to.equal('fresh')
    }
    rc.close()
    const lines = readFileSync(file, 'latin1').split('\n').filter(Boolean)
    expect(lines[0]).to.equal('tessera-rcache-v1')
    // Compacted once at 4096 records (about 610 live then), 904 appended since.
    expect(lines.length).to.be.below(2000)
    const again = new ReplayCache({ maxClockSkewMs: skew, now: () => clock.t, file, logger: quiet })
    expect(again.check('id4999', clock.t + 1000)).to.equal('replay')
    again.close()
  })

  it('refuses (full) an authenticator dated ahead when the file cannot be written, and serves the others', () => {
    const logged: string[] = []
    const clock = { t: T0 }
    const rc = new ReplayCache({
      maxClockSkewMs: SKEW,
      now: () => clock.t,
      file: path.join(dir, 'missing-dir', 'svc.rcache'),
      logger: { warn: (m: string) => logged.push(m) },
    })
    expect(logged.join('\n')).to.match(/cannot be written/)
    clock.t += 10
    expect(rc.check('ahead', clock.t + 2000)).to.equal('full')
    expect(rc.check('present', clock.t)).to.equal('fresh')
    expect(rc.check('behind', clock.t - 5)).to.equal('fresh')
  })
})
