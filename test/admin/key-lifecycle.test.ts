/** Key lifecycle rules (src/admin/key-lifecycle.ts, src/db/key-states.ts) and the ACL letters of the rotation operations. */
import { expect } from 'chai'
import { Acl, explain } from '../../src/admin/acl.js'
import { addKeyVersion, nextRotationStep, raiseSealLife } from '../../src/admin/key-lifecycle.js'
import { keyStateAt, sealingKeyAt, ticketsEndBy } from '../../src/db/key-states.js'
import { parsePrincipal } from '../../src/db/names.js'
import type { KeyVersion, PrincipalRecord } from '../../src/db/types.js'

const H = 3600_000
const T = 1_800_000_000_000

function key(kvno: number, extra: Partial<KeyVersion> = {}): KeyVersion {
  return { kvno, key: new Uint8Array(32), createdAt: T, ...extra }
}

function record(keys: KeyVersion[], maxLife = 10 * H): PrincipalRecord {
  return {
    realm: 'R.TEST',
    components: ['svc', 'h'],
    attributes: {},
    maxLife,
    maxRenewableLife: 7 * 24 * H,
    keys,
    createdAt: T,
    createdBy: 't',
    modifiedAt: T,
    modifiedBy: 't',
    failureCount: 0,
  }
}

describe('key states', () => {
  it('seals with the newest activated version and switches at the activation time', () => {
    const keys = [key(1), key(2, { activatesAt: T + H })]
    expect(sealingKeyAt(keys, T + H - 1)!.kvno).to.equal(1)
    expect(sealingKeyAt(keys, T + H)!.kvno).to.equal(2)
    expect([0, 1].map((i) => keyStateAt(keys, i, T))).to.deep.equal(['current', 'next'])
    expect([0, 1].map((i) => keyStateAt(keys, i, T + H))).to.deep.equal(['previous', 'current'])
  })

  it('bounds the tickets of a version written before rotation by its successor and the fallback life', () => {
    const keys = [key(1), key(2, { createdAt: T + H })]
    expect(ticketsEndBy(keys, 0, 24 * H)).to.equal(T + 25 * H)
    expect(ticketsEndBy(keys, 1, 24 * H)).to.equal(undefined)
  })
})

describe('addKeyVersion', () => {
  it('records sealedUntil = activation of the new version + sealLife, and the retirement asked', () => {
    const r = record([key(1, { sealLifeMs: 2 * H })])
    addKeyVersion(r, key(2, { activatesAt: T + H }), { now: T, keepold: true, retire: 30 * 60_000, fallbackLifeMs: 24 * H })
    expect(r.keys[0]).to.include({ sealedUntil: T + 3 * H, retiresAt: T + H + 30 * 60_000 })
    expect(r.keys[1]).to.include({ activatesAt: T + H, sealLifeMs: 10 * H })
  })

  it('retires every older version at once for an emergency, and drops a staged one', () => {
    const r = record([key(1, { sealedUntil: T + H }), key(2), key(3, { activatesAt: T + 5 * H })])
    addKeyVersion(r, key(4), { now: T + 60_000, keepold: true, retire: 'now', fallbackLifeMs: 24 * H })
    expect(r.keys.map((k) => [k.kvno, k.retiresAt])).to.deep.equal([
      [1, T + 60_000],
      [2, T + 60_000],
      [4, undefined],
    ])
  })
})

describe('raiseSealLife', () => {
  it('raises the bound of the current version and of a staged successor, not of older ones', () => {
    const r = record([key(1, { sealLifeMs: H, sealedUntil: T + H }), key(2, { sealLifeMs: H, sealedUntil: T + 3 * H }), key(3, { activatesAt: T + 2 * H, sealLifeMs: H })])
    raiseSealLife(r, 5 * H, T + H + 1)
    expect(r.keys.map((k) => [k.sealLifeMs, k.sealedUntil])).to.deep.equal([
      [H, T + H],
      [5 * H, T + 7 * H],
      [5 * H, undefined],
    ])
  })
})

describe('nextRotationStep', () => {
  it('stages stageAhead before the due time, then records the activation, then purges after grace and tickets', () => {
    const r = record([key(1, { sealLifeMs: H })])
    r.rotation = { everyMs: 24 * H, stageAheadMs: H, graceMs: 2 * H }
    expect(nextRotationStep(r, T, 24 * H)).to.deep.equal({ kind: 'stage', at: T + 23 * H, activatesAt: T + 24 * H })
    addKeyVersion(r, key(2, { createdAt: T + 23 * H, activatesAt: T + 24 * H }), { now: T + 23 * H, keepold: true, retire: 2 * H, fallbackLifeMs: 24 * H })
    expect(nextRotationStep(r, T + 23 * H, 24 * H)).to.deep.equal({ kind: 'activate', at: T + 24 * H, kvno: 2 })
    r.activatedKvno = 2
    expect(nextRotationStep(r, T + 24 * H, 24 * H)).to.deep.equal({ kind: 'purge', at: T + 26 * H, kvnos: [] })
    expect(nextRotationStep(r, T + 26 * H, 24 * H)).to.deep.equal({ kind: 'purge', at: T + 26 * H, kvnos: [1] })
  })
})

describe('ACL of the rotation operations', () => {
  const REALM = 'R.TEST'
  const p = (s: string) => parsePrincipal(s, REALM)
  const acl = Acl.parse('ops@R.TEST c *\nmod@R.TEST m *\nboth@R.TEST mc *\n', { realm: REALM })
  const table: [string, 'rotate' | 'purgekeys' | 'modprinc', { force?: boolean; rotation?: boolean }, boolean][] = [
    ['ops', 'rotate', {}, true],
    ['mod', 'rotate', {}, false],
    ['mod', 'purgekeys', {}, true],
    ['ops', 'purgekeys', {}, false],
    ['mod', 'purgekeys', { force: true }, false],
    ['both', 'purgekeys', { force: true }, true],
    ['mod', 'modprinc', { rotation: true }, false],
    ['both', 'modprinc', { rotation: true }, true],
  ]
  for (const [actor, op, o, allowed] of table)
    it(`${allowed ? 'allows' : 'refuses'} ${op} ${JSON.stringify(o)} to ${actor}`, () => {
      expect(explain(acl, p(actor), op, p('svc/h'), o).allowed).to.equal(allowed)
    })
})
