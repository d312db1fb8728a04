import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { Level } from 'level'
import { MemoryLevel } from 'memory-level'
import { ed25519KeyPair, randomKey, x25519KeyPair } from '../../src/crypto/index.js'
import { formatPrincipal, parsePrincipal, principalKey } from '../../src/db/names.js'
import { DEFAULT_POLICY } from '../../src/db/policy.js'
import { type AnyLevel, cacheEntryBytes, globMatch, PrincipalDb, type PrincipalDbOptions } from '../../src/db/principal-db.js'
import type { Policy, PrincipalId, PrincipalRecord, RealmRecord } from '../../src/db/types.js'
import { TesseraErrorCode } from '../../src/errors.js'
import { decode, encode } from '../../src/wire/codec.js'
import { containsBytes, makeRecord, REALM, rejectsWith, tempDir } from './helpers/records.js'

const KILL_WRITER = fileURLToPath(new URL('./helpers/kill-writer.ts', import.meta.url))

/** One place to keep a database between opens: a memory-level instance or a LevelDB directory. */
interface Store {
  /** Options that open this store. */
  options: Partial<PrincipalDbOptions>
  /** A raw handle on the same data, for looking under PrincipalDb (open it, use it, close it). */
  raw(): AnyLevel
}

interface Backend {
  name: string
  persistent: boolean
  store(): Promise<Store>
  cleanup(): Promise<void>
}

function memoryBackend(): Backend {
  return {
    name: 'memory-level',
    persistent: false,
    async store() {
      const db = new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' })
      return { options: { db }, raw: () => db }
    },
    async cleanup() {},
  }
}

function levelBackend(): Backend {
  let remove: (() => Promise<void>) | undefined
  let root = ''
  let n = 0
  return {
    name: 'level',
    persistent: true,
    async store() {
      if (!remove) ({ dir: root, remove } = await tempDir())
      const location = join(root, `db${n++}`, 'nested')
      return { options: { location }, raw: () => new Level<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' }) }
    },
    async cleanup() {
      await remove?.()
      remove = undefined
    },
  }
}

const alice = parsePrincipal('alice', REALM)
const lockout: Policy = {
  name: 'lockout',
  minLength: 8,
  minClasses: 1,
  maxFailures: 5,
  failureCountIntervalMs: 60_000,
  lockoutDurationMs: 300_000,
  maxPasswordLifeMs: 0,
}

for (const backend of [memoryBackend(), levelBackend()]) {
  describe(`PrincipalDb (${backend.name})`, () => {
    const masterKey = randomKey()
    let store: Store
    let db: PrincipalDb
    let clock = 1_000_000
    const open = (extra: Partial<PrincipalDbOptions> = {}) =>
      PrincipalDb.open({ ...store.options, masterKey, now: () => clock, ...extra })

    beforeEach(async () => {
      clock = 1_000_000
      store = await backend.store()
      db = await open()
    })
    afterEach(() => db.close())
    after(() => backend.cleanup())

    describe('principals', () => {
      it('creates a principal and gets it back with its keys', async () => {
        const rec = makeRecord('alice', { keys: [1, 2, 3].map((kvno) => ({ kvno, key: randomKey(), createdAt: kvno })) })
        rec.keys[0]!.retiresAt = 5000
        rec.keys[1]!.kdf = { alg: 'scrypt', N: 32768, r: 8, p: 1 }
        rec.keys[1]!.salt = 'EXAMPLE.COMalice'
        await db.create(rec)
        expect(await db.get(alice)).to.deep.equal(rec)
      })

      it('keeps case significant', async () => {
        await db.create(makeRecord('alice'))
        expect(await db.get(parsePrincipal('Alice', REALM))).to.equal(undefined)
        expect(await db.get(parsePrincipal('alice', 'example.com'))).to.equal(undefined)
        await db.create(makeRecord('Alice'))
        expect(await db.count()).to.equal(2)
      })

      it('returns undefined for an unknown principal and for an invalid name', async () => {
        expect(await db.get(alice)).to.equal(undefined)
        expect(await db.get({ realm: REALM, components: ['a/b'] })).to.equal(undefined)
        expect(await db.get({ realm: REALM, components: ['\ud800'] })).to.equal(undefined)
      })

      it('does not let a lone surrogate reach the record stored under U+FFFD', async () => {
        await db.create(makeRecord('\ufffd'))
        expect(await db.get({ realm: REALM, components: ['\ufffd'] })).not.to.equal(undefined)
        expect(await db.get({ realm: REALM, components: ['\ud800'] })).to.equal(undefined)
        await rejectsWith(db.delete({ realm: REALM, components: ['\ud800'] }), TesseraErrorCode.TESSERA_BAD_NAME)
      })

      it('refuses a second create with TESSERA_EXISTS', async () => {
        await db.create(makeRecord('alice'))
        await rejectsWith(db.create(makeRecord('alice')), TesseraErrorCode.TESSERA_EXISTS)
      })

      it('bulk-creates principals stored as create() stores them (createMany)', async () => {
        await db.putPolicy(lockout)
        const one = makeRecord('one', { policy: 'lockout' })
        const many = ['two', 'three', 'HTTP/www.example.com'].map((n) => makeRecord(n, { policy: 'lockout' }))
        await db.create(one)
        // A name looked up before it exists is cached as absent: the bulk write must drop that.
        expect(await db.get(many[0]!)).to.equal(undefined)
        await db.createMany(many)
        for (const r of many) expect(await db.get(r)).to.deep.equal(r)
        expect(await db.count()).to.equal(4)
        await db.close()
        const raw = store.raw()
        await raw.open()
        const principals = raw.sublevel<string, Uint8Array>('principals', { valueEncoding: 'view' })
        const shape = async (r: PrincipalId) => {
          const s = decode((await principals.get(principalKey(r)))!) as Record<string, unknown> & { keys: Record<string, unknown>[] }
          for (const k of many.concat(one).flatMap((x) => x.keys)) expect(containsBytes(await principals.get(principalKey(r)) as Uint8Array, k.key)).to.equal(false)
          return { ...s, components: [], keys: s.keys.map((k) => ({ ...k, sealed: (k.sealed as Uint8Array).length })) }
        }
        expect(await shape(many[0]!)).to.deep.equal(await shape(one))
        const refs = raw.sublevel<string, Uint8Array>('policy-refs', { valueEncoding: 'view' })
        expect(await refs.keys().all()).to.have.length(4)
        await raw.close()
        db = await open()
        for (const r of many) expect(await db.get(r)).to.deep.equal(r)
      })

      it('writes nothing of a createMany when one of its principals exists (TESSERA_EXISTS)', async () => {
        await db.create(makeRecord('bob'))
        await rejectsWith(db.createMany([makeRecord('alice'), makeRecord('bob')]), TesseraErrorCode.TESSERA_EXISTS)
        await rejectsWith(db.createMany([makeRecord('carol'), makeRecord('carol')]), TesseraErrorCode.TESSERA_EXISTS)
        await rejectsWith(db.createMany([makeRecord('dave', { policy: 'nope' })]), TesseraErrorCode.TESSERA_NOT_FOUND)
        expect((await db.list()).map((id) => formatPrincipal(id))).to.deep.equal(['bob@EXAMPLE.COM'])
      })

      it('refuses an invalid name with TESSERA_BAD_NAME', async () => {
        const rec = makeRecord('alice')
        await rejectsWith(db.create({ ...rec, components: ['bad@name'] }), TesseraErrorCode.TESSERA_BAD_NAME)
        await rejectsWith(db.create({ ...rec, components: ['e\u0301'] }), TesseraErrorCode.TESSERA_BAD_NAME)
        await rejectsWith(db.create({ ...rec, realm: 'BAD REALM' }), TesseraErrorCode.TESSERA_BAD_NAME)
        expect(await db.count()).to.equal(0)
      })

      it('refuses a key that is not 32 bytes with RangeError', async () => {
        const rec = makeRecord('alice', { keys: [{ kvno: 1, key: new Uint8Array(16), createdAt: 0 }] })
        try {
          await db.create(rec)
          expect.fail('accepted')
        } catch (err) {
          expect(err).to.be.instanceOf(RangeError)
        }
        expect(await db.count()).to.equal(0)
      })

      it('returns a frozen record from get', async () => {
        await db.create(makeRecord('alice'))
        const rec = await db.get(alice)
        expect(Object.isFrozen(rec)).to.equal(true)
        expect(Object.isFrozen(rec?.keys)).to.equal(true)
        expect(() => {
          ;(rec as { failureCount: number }).failureCount = 9
        }).to.throw(TypeError)
      })

      it('updates a principal, setting modifiedAt and modifiedBy', async () => {
        await db.create(makeRecord('alice'))
        clock = 2_000_000
        const newKey = randomKey()
        const out = await db.update(
          alice,
          (r) => {
            r.keys.push({ kvno: 2, key: newKey, createdAt: clock })
            r.attributes.disabled = true
          },
          'root/admin',
        )
        expect(out.modifiedAt).to.equal(2_000_000)
        expect(out.modifiedBy).to.equal('root/admin')
        const got = await db.get(alice)
        expect(got).to.deep.equal(out)
        expect(got?.keys.map((k) => k.kvno)).to.deep.equal([1, 2])
        expect(got?.keys[1]?.key).to.deep.equal(newKey)
        expect(got?.attributes.disabled).to.equal(true)
      })

      it('serves the new record after an update (cache invalidation)', async () => {
        await db.create(makeRecord('alice'))
        const before = await db.get(alice)
        expect(await db.get(alice)).to.equal(before) // cached: same object
        await db.update(alice, (r) => {
          r.maxLife = 42
        }, 'root/admin')
        const after = await db.get(alice)
        expect(after).not.to.equal(before)
        expect(after?.maxLife).to.equal(42)
      })

      it('never caches a read that overlapped a write', async () => {
        await db.create(makeRecord('alice'))
        for (let i = 0; i < 20; i++) {
          const reads = [db.get(alice), db.get(alice)]
          const write = db.update(alice, (r) => {
            r.maxLife = i
          }, 'x')
          await Promise.all([...reads, write])
          expect((await db.get(alice))?.maxLife).to.equal(i)
        }
      })

      it('rejects update of a missing principal with TESSERA_NOT_FOUND', async () => {
        await rejectsWith(db.update(alice, () => {}, 'x'), TesseraErrorCode.TESSERA_NOT_FOUND)
      })

      it('leaves the record unchanged when mutate throws or renames', async () => {
        const rec = makeRecord('alice')
        await db.create(rec)
        try {
          await db.update(alice, () => {
            throw new Error('nope')
          }, 'x')
          expect.fail('resolved')
        } catch (err) {
          expect((err as Error).message).to.equal('nope')
        }
        try {
          await db.update(alice, (r) => {
            r.components = ['mallory']
          }, 'x')
          expect.fail('resolved')
        } catch (err) {
          expect(err).to.be.instanceOf(RangeError)
        }
        expect(await db.get(alice)).to.deep.equal(rec)
        expect(await db.get(parsePrincipal('mallory', REALM))).to.equal(undefined)
      })

      it('serializes concurrent updates of one principal', async () => {
        await db.create(makeRecord('alice', { maxLife: 0 }))
        await Promise.all(
          Array.from({ length: 25 }, () =>
            db.update(alice, async (r) => {
              const v = r.maxLife
              await new Promise((resolve) => setImmediate(resolve))
              r.maxLife = v + 1
            }, 'x'),
          ),
        )
        expect((await db.get(alice))?.maxLife).to.equal(25)
      })

      it('deletes a principal', async () => {
        await db.create(makeRecord('alice'))
        await db.get(alice)
        await db.delete(alice)
        expect(await db.get(alice)).to.equal(undefined)
        expect(await db.count()).to.equal(0)
        await rejectsWith(db.delete(alice), TesseraErrorCode.TESSERA_NOT_FOUND)
      })
    })

    describe('list', () => {
      const names = [
        'alice@EXAMPLE.COM',
        'bob@EXAMPLE.COM',
        'bob/admin@EXAMPLE.COM',
        'HTTP/www.example.com@EXAMPLE.COM',
        'HTTP/api.example.com@EXAMPLE.COM',
        'krbtgt/EXAMPLE.COM@EXAMPLE.COM',
        'alice@OTHER.ORG',
        'carol@EXAMPLE.COMX',
      ]
      const sorted = (ids: PrincipalId[]) => ids.map(formatPrincipal).sort()
      beforeEach(async () => {
        for (const n of names) await db.create(makeRecord(n))
      })

      it('lists every principal and counts them', async () => {
        expect(sorted(await db.list())).to.deep.equal([...names].sort())
        expect(await db.count()).to.equal(names.length)
      })

      it('lists one realm only (not a realm that merely starts the same)', async () => {
        expect(sorted(await db.list({ realm: 'OTHER.ORG' }))).to.deep.equal(['alice@OTHER.ORG'])
        expect(await db.list({ realm: 'EXAMPLE.COM' })).to.have.length(6)
        expect(await db.list({ realm: 'NONE' })).to.deep.equal([])
      })

      it("matches '*' over name/instance, or over the full name when the pattern has '@'", async () => {
        expect(sorted(await db.list({ glob: 'HTTP/*' }))).to.deep.equal([
          'HTTP/api.example.com@EXAMPLE.COM',
          'HTTP/www.example.com@EXAMPLE.COM',
        ])
        expect(sorted(await db.list({ glob: '*/admin' }))).to.deep.equal(['bob/admin@EXAMPLE.COM'])
        expect(sorted(await db.list({ glob: 'alice' }))).to.deep.equal(['alice@EXAMPLE.COM', 'alice@OTHER.ORG'])
        expect(sorted(await db.list({ glob: '*@OTHER.ORG' }))).to.deep.equal(['alice@OTHER.ORG'])
        expect(sorted(await db.list({ glob: 'b*', realm: 'EXAMPLE.COM' }))).to.deep.equal(['bob/admin@EXAMPLE.COM', 'bob@EXAMPLE.COM'])
        expect(await db.list({ glob: 'nobody*' })).to.deep.equal([])
      })

      it('stops at limit', async () => {
        expect(await db.list({ limit: 3 })).to.have.length(3)
        expect(await db.list({ limit: 0 })).to.deep.equal([])
        expect(await db.list({ glob: 'HTTP/*', limit: 1 })).to.have.length(1)
      })
    })

    describe('storage', () => {
      it('keeps principal and realm secret keys sealed at rest', async () => {
        const recs = ['alice', 'bob', 'krbtgt/EXAMPLE.COM'].map((n) => makeRecord(n))
        for (const r of recs) await db.create(r)
        await db.update(alice, (r) => {
          r.keys.push({ kvno: 2, key: randomKey(), createdAt: 0 })
        }, 'x')
        const realm: RealmRecord = { realm: REALM, createdAt: 1, transportKey: x25519KeyPair(), signingKey: ed25519KeyPair() }
        await db.putRealm(realm)
        const secrets = [
          ...recs.flatMap((r) => r.keys.map((k) => k.key)),
          ...((await db.get(alice))?.keys.map((k) => k.key) ?? []),
          realm.transportKey.secretKey,
          realm.signingKey.secretKey,
          masterKey,
        ]
        expect(secrets).to.have.length(8)
        await db.close()
        const raw = store.raw()
        await raw.open()
        let values = 0
        for await (const [, value] of raw.iterator({ valueEncoding: 'view' }) as AsyncIterable<[string, Uint8Array]>) {
          values++
          for (const s of secrets) expect(containsBytes(value, s), 'key bytes found at rest').to.equal(false)
        }
        await raw.close()
        expect(values).to.be.greaterThan(4)
        db = await open()
        expect((await db.get(alice))?.keys).to.have.length(2)
      })

      it('refuses a sealed key moved into another principal with TESSERA_INTEGRITY', async () => {
        await db.create(makeRecord('mallory'))
        await db.create(makeRecord('krbtgt/EXAMPLE.COM'))
        await db.close()
        // An attacker with write access to the files but not the master key copies the record
        // of a principal whose key they know over krbtgt's, fixing up the name fields: the
        // binding inside each sealed key still names mallory, and that is checked on open.
        const raw = store.raw()
        await raw.open()
        const principals = raw.sublevel<string, Uint8Array>('principals', { valueEncoding: 'view' })
        const krbtgt = parsePrincipal('krbtgt/EXAMPLE.COM', REALM)
        const stolen = decode((await principals.get(principalKey(parsePrincipal('mallory', REALM))))!) as Record<string, unknown>
        await principals.put(principalKey(krbtgt), encode({ ...stolen, components: krbtgt.components }))
        await raw.close()
        db = await open()
        await rejectsWith(db.get(krbtgt), TesseraErrorCode.TESSERA_INTEGRITY)
        expect(await db.get(parsePrincipal('mallory', REALM))).not.to.equal(undefined)
      })

      it('refuses a record stored under another principal\'s key (its own name not fixed up) with TESSERA_DB', async () => {
        await db.create(makeRecord('mallory'))
        await db.create(makeRecord('victim'))
        await db.close()
        // The record is copied as it is, name fields and all: the name it holds is not the key it is under.
        const raw = store.raw()
        await raw.open()
        const principals = raw.sublevel<string, Uint8Array>('principals', { valueEncoding: 'view' })
        const victim = parsePrincipal('victim', REALM)
        const moved = await principals.get(principalKey(parsePrincipal('mallory', REALM)))
        await principals.put(principalKey(victim), moved!)
        await raw.close()
        db = await open()
        const err = await rejectsWith(db.get(victim), TesseraErrorCode.TESSERA_DB)
        expect(err.message).to.include('name does not match its key')
        // A name field that is not a list of strings is refused the same way, not with a TypeError.
        await db.close()
        const raw2 = store.raw()
        await raw2.open()
        const p2 = raw2.sublevel<string, Uint8Array>('principals', { valueEncoding: 'view' })
        const rec = decode((await p2.get(principalKey(parsePrincipal('mallory', REALM))))!) as Record<string, unknown>
        await p2.put(principalKey(victim), encode({ ...rec, components: [7] }))
        await raw2.close()
        db = await open()
        await rejectsWith(db.get(victim), TesseraErrorCode.TESSERA_DB)
        expect(await db.get(parsePrincipal('mallory', REALM))).not.to.equal(undefined)
      })

      it('refuses a wrong master key with TESSERA_CONFIG and still opens with the right one', async () => {
        await db.create(makeRecord('alice'))
        await db.close()
        const err = await rejectsWith(open({ masterKey: randomKey() }), TesseraErrorCode.TESSERA_CONFIG)
        expect(err.message).to.include('master key does not match this database')
        db = await open()
        expect(await db.get(alice)).not.to.equal(undefined)
      })

      it('keeps data across close and reopen', async () => {
        const rec = makeRecord('alice', { policy: 'lockout' })
        await db.putPolicy(lockout)
        await db.create(rec)
        await db.recordFailure(alice, clock, lockout)
        await db.close()
        db = await open()
        const got = await db.get(alice)
        expect(got?.keys).to.deep.equal(rec.keys)
        expect(got?.failureCount).to.equal(1)
        expect(await db.getPolicy('lockout')).to.deep.equal(lockout)
      })

      it('lets calls already running finish before close() closes the store', async () => {
        await db.create(makeRecord('alice'))
        const running = Array.from({ length: 10 }, () => db.recordFailure(alice, clock, undefined))
        await db.close()
        expect((await Promise.all(running)).map((o) => o.failureCount).sort((a, b) => a - b)).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        db = await open()
        expect((await db.get(alice))?.failureCount).to.equal(10)
      })

      it('refuses calls after close with TESSERA_DB', async () => {
        await db.close()
        await rejectsWith(Promise.resolve().then(() => db.get(alice)), TesseraErrorCode.TESSERA_DB)
        await rejectsWith(db.create(makeRecord('alice')), TesseraErrorCode.TESSERA_DB)
        await db.close()
      })
    })

    describe('the pass at open', () => {
      const names = (ids: PrincipalId[]) => ids.map((id) => formatPrincipal(id)).sort()
      const scheduledRec = (n: string) => makeRecord(n, { rotation: { everyMs: 86_400_000, stageAheadMs: 3_600_000 } })

      it('finds the principals the rotation scheduler may have a step for, and follows every write', async () => {
        const staged = makeRecord('HTTP/staged', { keys: [{ kvno: 1, key: randomKey(), createdAt: 1 }, { kvno: 2, key: randomKey(), createdAt: 2, activatesAt: 5000 }] })
        const recorded = makeRecord('HTTP/recorded', { ...staged, components: ['HTTP', 'recorded'], activatedKvno: 2 })
        await db.createMany([scheduledRec('HTTP/a'), makeRecord('plain'), staged, recorded])
        await db.create(scheduledRec('HTTP/b'))
        const expected = ['HTTP/a@EXAMPLE.COM', 'HTTP/b@EXAMPLE.COM', 'HTTP/staged@EXAMPLE.COM']
        expect(names(await db.scheduledPrincipals())).to.deep.equal(expected)
        if (backend.persistent) {
          await db.close()
          db = await open()
          expect(names(await db.scheduledPrincipals()), 'found again by the pass at open').to.deep.equal(expected)
          expect(db.cacheStats().entries, 'the pass keeps no record').to.equal(0)
        }
        await db.update(parsePrincipal('HTTP/a', REALM), (r) => {
          delete r.rotation
        }, 'x')
        await db.update(parsePrincipal('plain', REALM), (r) => {
          r.rotation = { everyMs: 1000, stageAheadMs: 0 }
        }, 'x')
        await db.rename(parsePrincipal('HTTP/b', REALM), parsePrincipal('HTTP/c', REALM), 'x')
        await db.delete(parsePrincipal('HTTP/staged', REALM))
        expect(names(await db.scheduledPrincipals())).to.deep.equal(['HTTP/c@EXAMPLE.COM', 'plain@EXAMPLE.COM'])
      })

      it('answers keyCensus from the pass until a principal is written, then scans again', async () => {
        await db.createMany([makeRecord('HTTP/old', { keys: [{ kvno: 1, key: randomKey(), createdAt: 50 }] }), makeRecord('HTTP/new'), makeRecord('krbtgt/EXAMPLE.COM', { keys: [{ kvno: 1, key: randomKey(), createdAt: 1 }] })])
        await db.create(makeRecord('alice', { keys: [{ kvno: 1, key: randomKey(), createdAt: 2, kdf: { alg: 'scrypt', N: 1024, r: 8, p: 1 }, salt: 's' }] }))
        await db.close()
        // Every read of many records goes through one of these (values() may skip _iterator).
        const raw = store.raw() as AnyLevel & Record<'_iterator' | '_values' | '_keys', (...a: unknown[]) => unknown>
        let iterators = 0
        for (const m of ['_iterator', '_values', '_keys'] as const) {
          const real = raw[m].bind(raw)
          raw[m] = (...a: unknown[]) => {
            iterators++
            return real(...a)
          }
        }
        db = await open({ db: raw })
        expect(await db.keyCensus()).to.deep.equal({ services: 2, oldestServiceKeyCreatedAt: 50 })
        const afterOpen = iterators
        expect(await db.keyCensus()).to.deep.equal({ services: 2, oldestServiceKeyCreatedAt: 50 })
        expect(iterators, 'no scan of its own').to.equal(afterOpen)
        await db.delete(parsePrincipal('HTTP/old', REALM))
        expect(await db.keyCensus()).to.deep.equal({ services: 1, oldestServiceKeyCreatedAt: 1000 })
        expect(iterators).to.be.greaterThan(afterOpen)
      })
    })

    describe('realm', () => {
      it('stores the realm record once and returns it with its keys', async () => {
        expect(await db.getRealm()).to.equal(undefined)
        const realm: RealmRecord = { realm: REALM, createdAt: 7, transportKey: x25519KeyPair(), signingKey: ed25519KeyPair() }
        await db.putRealm(realm)
        expect(await db.getRealm()).to.deep.equal(realm)
        await rejectsWith(db.putRealm(realm), TesseraErrorCode.TESSERA_EXISTS)
      })
    })

    describe('policies', () => {
      it('puts, gets, lists and deletes policies', async () => {
        await db.putPolicy(lockout)
        await db.putPolicy({ ...DEFAULT_POLICY, name: 'admin', minLength: 14 })
        expect(await db.getPolicy('lockout')).to.deep.equal(lockout)
        expect((await db.listPolicies()).map((p) => p.name)).to.deep.equal(['admin', 'lockout'])
        await db.putPolicy({ ...lockout, maxFailures: 3 })
        expect((await db.getPolicy('lockout'))?.maxFailures).to.equal(3)
        await db.deletePolicy('lockout')
        expect(await db.getPolicy('lockout')).to.equal(undefined)
        await rejectsWith(db.deletePolicy('lockout'), TesseraErrorCode.TESSERA_NOT_FOUND)
      })

      it('refuses invalid policies', async () => {
        await rejectsWith(db.putPolicy({ ...lockout, name: '' }), TesseraErrorCode.TESSERA_BAD_NAME)
        await rejectsWith(db.putPolicy({ ...lockout, name: 'a\nb' }), TesseraErrorCode.TESSERA_BAD_NAME)
        await rejectsWith(db.putPolicy({ ...lockout, minLength: -1 }), TesseraErrorCode.TESSERA_VALIDATION)
        await rejectsWith(db.putPolicy({ ...lockout, minClasses: 5 }), TesseraErrorCode.TESSERA_VALIDATION)
        await rejectsWith(db.putPolicy({ ...lockout, maxFailures: 1.5 }), TesseraErrorCode.TESSERA_VALIDATION)
      })

      it('refuses a principal naming an unknown policy with TESSERA_NOT_FOUND', async () => {
        await rejectsWith(db.create(makeRecord('alice', { policy: 'nope' })), TesseraErrorCode.TESSERA_NOT_FOUND)
        await db.create(makeRecord('alice'))
        await rejectsWith(db.update(alice, (r) => {
          r.policy = 'nope'
        }, 'x'), TesseraErrorCode.TESSERA_NOT_FOUND)
        expect((await db.get(alice))?.policy).to.equal(undefined)
      })

      it('refuses to delete a policy in use with TESSERA_EXISTS until no principal uses it', async () => {
        await db.putPolicy(lockout)
        await db.putPolicy({ ...lockout, name: 'other' })
        await db.create(makeRecord('alice', { policy: 'lockout' }))
        await db.create(makeRecord('bob', { policy: 'lockout' }))
        await rejectsWith(db.deletePolicy('lockout'), TesseraErrorCode.TESSERA_EXISTS)
        await db.update(alice, (r) => {
          r.policy = 'other'
        }, 'x')
        await rejectsWith(db.deletePolicy('other'), TesseraErrorCode.TESSERA_EXISTS)
        await db.delete(parsePrincipal('bob', REALM))
        await db.deletePolicy('lockout')
        await db.update(alice, (r) => {
          delete r.policy
        }, 'x')
        await db.deletePolicy('other')
        expect(await db.listPolicies()).to.deep.equal([])
      })
    })

    describe('lockout', () => {
      it('tries the password against the record the caller has only while it is current', async () => {
        const erin = parsePrincipal('erin', REALM)
        await db.create(makeRecord('erin'))
        const had = (await db.get(erin))!
        const seen: Readonly<PrincipalRecord>[] = []
        const check = (r: Readonly<PrincipalRecord>) => {
          seen.push(r)
          return { ok: true as const }
        }
        await db.attemptPreauth(erin, clock, undefined, check, had)
        expect(seen[0]).to.equal(had)
        // A key change since the caller's read: its copy is stale, the current record is used.
        const next = randomKey()
        await db.update(erin, (r) => {
          r.keys = [{ kvno: 2, key: next, createdAt: 2 }]
        }, 'x')
        await db.attemptPreauth(erin, clock, undefined, check, had)
        expect(seen[1]).to.not.equal(had)
        expect(seen[1]!.keys[0]!.key).to.deep.equal(next)
      })

      it('decides a clean login on a cached record in the same turn, and anything that changes counters through a commit', async () => {
        const frank = parsePrincipal('frank', REALM)
        await db.create(makeRecord('frank'))
        const had = (await db.get(frank))!
        let tried = 0
        const good = () => {
          tried++
          return { ok: true as const }
        }
        const bad = () => {
          tried++
          return { ok: false as const, reason: 'wrong key' }
        }
        // Clean login: answered now, nothing to write.
        const clean = db.attemptPreauthNow(frank, clock, lockout, good, had)
        expect(clean).to.deep.equal({ outcome: 'ok' })
        // A failure is counted in this turn (the next attempt sees it) and resolves after its commit.
        const failed = db.attemptPreauthNow(frank, clock, lockout, bad, had)
        expect(failed).to.be.instanceOf(Promise)
        expect((await db.lockoutState(frank))!.failureCount).to.equal(1)
        // The login after it clears the counter: a write, so a promise too.
        const clearing = db.attemptPreauthNow(frank, clock, lockout, good, had)
        expect(clearing).to.be.instanceOf(Promise)
        expect(await failed).to.include({ outcome: 'failed', failureCount: 1 })
        expect(await clearing).to.deep.equal({ outcome: 'ok' })
        expect((await db.lockoutState(frank))!.failureCount).to.equal(0)
        // Locked: refused in this turn without trying the password.
        for (let i = 0; i < lockout.maxFailures; i++) await db.attemptPreauthNow(frank, clock, lockout, bad, had)
        const before = tried
        // (Each commit dropped the cached copy: read the current one, as the AS does.)
        const current = (await db.get(frank))!
        const locked = db.attemptPreauthNow(frank, clock, lockout, good, current)
        expect(locked).to.include({ outcome: 'locked' })
        expect(tried).to.equal(before)
        // A record the caller holds that is no longer the cached one takes the reading path.
        const stale = db.attemptPreauthNow(frank, clock, lockout, good, had)
        expect(stale).to.be.instanceOf(Promise)
        expect(await stale).to.include({ outcome: 'locked' })
      })

      beforeEach(() => db.create(makeRecord('alice')))

      it('counts 20 parallel failures exactly without a policy', async () => {
        const outs = await Promise.all(Array.from({ length: 20 }, () => db.recordFailure(alice, clock, undefined)))
        expect(outs.map((o) => o.failureCount).sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 20 }, (_, i) => i + 1))
        expect(outs.every((o) => !o.lockedNow && o.lockedUntil === undefined)).to.equal(true)
        const rec = await db.get(alice)
        expect(rec?.failureCount).to.equal(20)
        expect(rec?.lockedUntil).to.equal(undefined)
      })

      it('locks at maxFailures under 20 parallel failures, exactly once', async () => {
        const outs = await Promise.all(Array.from({ length: 20 }, () => db.recordFailure(alice, clock, lockout)))
        expect(outs.filter((o) => o.lockedNow)).to.have.length(1)
        expect(outs.find((o) => o.lockedNow)?.failureCount).to.equal(5)
        expect(outs.every((o) => o.failureCount <= 5)).to.equal(true)
        const rec = await db.get(alice)
        expect(rec?.failureCount).to.equal(5)
        expect(rec?.lockedUntil).to.equal(clock + lockout.lockoutDurationMs)
      })

      it('restarts the count at 1 once the window has passed', async () => {
        await db.recordFailure(alice, clock, lockout)
        await db.recordFailure(alice, clock + 10_000, lockout)
        expect((await db.recordFailure(alice, clock + 59_999, lockout)).failureCount).to.equal(3)
        const out = await db.recordFailure(alice, clock + 60_000, lockout)
        expect(out).to.deep.equal({ failureCount: 1, lockedNow: false })
        expect((await db.get(alice))?.failureWindowStart).to.equal(clock + 60_000)
      })

      it('never expires the window when failureCountIntervalMs is 0', async () => {
        const forever = { ...lockout, maxFailures: 0, failureCountIntervalMs: 0 }
        await db.recordFailure(alice, 0, forever)
        expect((await db.recordFailure(alice, 1e12, forever)).failureCount).to.equal(2)
      })

      it('locks for lockoutDurationMs, then counts afresh', async () => {
        for (let i = 0; i < 4; i++) expect((await db.recordFailure(alice, clock + i, lockout)).lockedNow).to.equal(false)
        const locked = await db.recordFailure(alice, clock + 4, lockout)
        expect(locked).to.deep.equal({ failureCount: 5, lockedUntil: clock + 4 + 300_000, lockedNow: true })
        const during = await db.recordFailure(alice, clock + 1000, lockout)
        expect(during).to.deep.equal({ failureCount: 5, lockedUntil: clock + 4 + 300_000, lockedNow: false })
        const after = await db.recordFailure(alice, clock + 4 + 300_000, lockout)
        expect(after).to.deep.equal({ failureCount: 1, lockedNow: false })
        expect((await db.get(alice))?.lockedUntil).to.equal(undefined)
      })

      it('locks until unlock() when lockoutDurationMs is 0', async () => {
        const manual = { ...lockout, maxFailures: 2, lockoutDurationMs: 0 }
        await db.recordFailure(alice, clock, manual)
        const out = await db.recordFailure(alice, clock, manual)
        expect(out.lockedUntil).to.equal(Number.MAX_SAFE_INTEGER)
        expect((await db.get(alice))?.lockedUntil).to.equal(Number.MAX_SAFE_INTEGER)
        clock = 5_000_000
        await db.unlock(alice, 'root/admin')
        const rec = await db.get(alice)
        expect(rec?.lockedUntil).to.equal(undefined)
        expect(rec?.failureCount).to.equal(0)
        expect(rec?.failureWindowStart).to.equal(undefined)
        expect(rec?.modifiedBy).to.equal('root/admin')
        expect(rec?.modifiedAt).to.equal(5_000_000)
      })

      it('does not write on success when there is nothing to reset', async () => {
        await db.recordSuccess(alice, clock)
        const rec = await db.get(alice)
        expect(rec?.lastSuccess).to.equal(undefined)
        expect(rec?.modifiedAt).to.equal(1000)
      })

      it('resets the failure count on success and records lastSuccess then', async () => {
        await db.recordFailure(alice, clock, lockout)
        await db.recordFailure(alice, clock, lockout)
        await db.recordSuccess(alice, clock + 5)
        const rec = await db.get(alice)
        expect(rec?.failureCount).to.equal(0)
        expect(rec?.failureWindowStart).to.equal(undefined)
        expect(rec?.lastSuccess).to.equal(clock + 5)
        expect(rec?.lastFailure).to.equal(clock)
        expect((await db.recordFailure(alice, clock + 6, lockout)).failureCount).to.equal(1)
      })

      it('does not lift an active lockout on success', async () => {
        for (let i = 0; i < 5; i++) await db.recordFailure(alice, clock, lockout)
        await db.recordSuccess(alice, clock + 1)
        expect((await db.get(alice))?.lockedUntil).to.equal(clock + 300_000)
      })

      it('writes lastSuccess on every success with trackLastSuccess', async () => {
        await db.close()
        db = await open({ trackLastSuccess: true })
        await db.recordSuccess(alice, 123)
        expect((await db.get(alice))?.lastSuccess).to.equal(123)
        await db.recordSuccess(alice, 456)
        expect((await db.get(alice))?.lastSuccess).to.equal(456)
      })

      it('rejects lockout calls on a missing principal with TESSERA_NOT_FOUND', async () => {
        const bob = parsePrincipal('bob', REALM)
        await rejectsWith(db.recordFailure(bob, clock, lockout), TesseraErrorCode.TESSERA_NOT_FOUND)
        await rejectsWith(db.recordSuccess(bob, clock), TesseraErrorCode.TESSERA_NOT_FOUND)
        await rejectsWith(db.unlock(bob, 'x'), TesseraErrorCode.TESSERA_NOT_FOUND)
      })
    })

    if (backend.persistent) {
      describe('LevelDB specifics', () => {
        it('maps LEVEL_LOCKED to TESSERA_DB_LOCKED when a second instance opens the directory', async () => {
          await db.create(makeRecord('alice'))
          const err = await rejectsWith(open(), TesseraErrorCode.TESSERA_DB_LOCKED)
          expect(err.message).to.include('another process')
          expect((err.cause as { code?: string }).code).to.equal('LEVEL_DATABASE_NOT_OPEN')
          expect(await db.get(alice)).not.to.equal(undefined)
          await db.close()
          db = await open()
          expect(await db.count()).to.equal(1)
        })

        it('keeps every acknowledged write after kill -9 of the writing process', async function () {
          this.timeout(15_000)
          await db.close()
          const location = store.options.location!
          const child = spawn(process.execPath, ['--import', 'tsx', KILL_WRITER, location, Buffer.from(masterKey).toString('hex')], {
            stdio: ['ignore', 'pipe', 'inherit'],
          })
          let lastAcked = -1
          const exited = new Promise((resolve) => child.once('exit', resolve))
          await new Promise<void>((resolve, reject) => {
            child.once('error', reject)
            child.once('exit', () => reject(new Error('writer exited early')))
            let buf = ''
            child.stdout.on('data', (chunk: Buffer) => {
              buf += chunk.toString()
              for (const m of buf.matchAll(/acked (\d+)\n/g)) lastAcked = Number(m[1])
              buf = buf.slice(buf.lastIndexOf('\n') + 1)
              if (lastAcked >= 30) {
                child.kill('SIGKILL')
                resolve()
              }
            })
          })
          await exited
          db = await open()
          for (let n = 0; n <= lastAcked; n++) expect(await db.get(parsePrincipal(`w${n}`, REALM)), `w${n}`).not.to.equal(undefined)
        })
      })
    }
  })
}

describe('PrincipalDb (in-memory default)', () => {
  it('opens without a location and works', async () => {
    const db = await PrincipalDb.open({ masterKey: randomKey() })
    await db.create(makeRecord('alice'))
    expect(await db.count()).to.equal(1)
    await db.close()
  })

  it('refuses a master key that is not 32 bytes with RangeError', async () => {
    try {
      await PrincipalDb.open({ masterKey: new Uint8Array(16) })
      expect.fail('opened')
    } catch (err) {
      expect(err).to.be.instanceOf(RangeError)
    }
  })
})

describe('PrincipalDb cache', () => {
  it('holds at most cacheBytes of records, and serves evicted and rewritten ones from the store correctly', async () => {
    const cacheBytes = 12 * cacheEntryBytes(400)
    const db = await PrincipalDb.open({ masterKey: randomKey(), cacheBytes })
    try {
      const recs = Array.from({ length: 40 }, (_, i) => makeRecord(`HTTP/n${i}`))
      await db.createMany(recs)
      for (const r of recs) expect(await db.get(r)).to.deep.equal(r)
      const st = db.cacheStats()
      expect(st.maxBytes).to.equal(cacheBytes)
      expect(st.bytes).to.be.within(1, cacheBytes)
      expect(st.entries).to.be.within(5, 30)
      // The first ones were evicted: read again from the store, as stored.
      const misses = st.misses
      expect(await db.get(recs[0]!)).to.deep.equal(recs[0])
      expect(db.cacheStats().misses).to.equal(misses + 1)
      // A write drops the cached copy, whether the record was evicted or not.
      const last = recs[39]!
      expect(db.peek(last)).to.not.equal(undefined)
      for (const r of [recs[1]!, last])
        await db.update(r, (x) => {
          x.maxLife = 7
        }, 'x')
      expect((await db.get(recs[1]!))?.maxLife).to.equal(7)
      expect((await db.get(last))?.maxLife).to.equal(7)
      // Counters written for a cached record keep it cached, within the bound.
      await db.recordFailure(last, 5, undefined)
      expect(db.peek(last)?.failureCount).to.equal(1)
      for (const r of recs) await db.get(r)
      expect(db.cacheStats().bytes).to.be.at.most(cacheBytes)
    } finally {
      await db.close()
    }
  })

  it('does not cache a read that started before a write and finished after it', async () => {
    const store = new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' })
    // One-shot gate: the next read gets its value from the store, then waits for release().
    let armed: Promise<void> | undefined
    let release = () => {}
    const raw = store as unknown as { _get(key: unknown, options: unknown): Promise<unknown> }
    const realGet = raw._get.bind(store)
    raw._get = async (key, options) => {
      const value = await realGet(key, options)
      const gate = armed
      armed = undefined
      if (gate) await gate
      return value
    }
    const db = await PrincipalDb.open({ db: store, masterKey: randomKey(), syncReads: false })
    try {
      await db.create(makeRecord('alice', { maxLife: 1 }))
      armed = new Promise((resolve) => {
        release = resolve
      })
      const slowRead = db.get(alice)
      await new Promise((resolve) => setImmediate(resolve))
      await db.update(alice, (r) => {
        r.maxLife = 2
      }, 'x')
      release()
      expect((await slowRead)?.maxLife).to.equal(1)
      expect((await db.get(alice))?.maxLife).to.equal(2)
    } finally {
      await db.close()
    }
  })
})

describe('PrincipalDb.getNow', () => {
  it('answers a miss in the same turn with synchronous reads (and caches it), a promise without them', async () => {
    for (const syncReads of [true, false]) {
      const db = await PrincipalDb.open({ masterKey: randomKey(), syncReads, cacheBytes: cacheEntryBytes(400) })
      try {
        const recs = [makeRecord('carol'), makeRecord('dave')]
        await db.createMany(recs)
        // dave was read last: carol is not in a one-entry cache.
        await db.get(recs[1]!)
        const got = db.getNow(recs[0]!)
        if (syncReads) {
          expect(got).to.not.be.instanceOf(Promise)
          expect(got).to.deep.equal(recs[0])
          expect(db.getNow(recs[0]!), 'cached: the same object').to.equal(got)
          expect(db.getNow(parsePrincipal('nobody', REALM))).to.equal(undefined)
        } else {
          expect(got).to.be.instanceOf(Promise)
          expect(await got).to.deep.equal(recs[0])
        }
      } finally {
        await db.close()
      }
    }
  })
})

describe('globMatch', () => {
  const cases: [string, string, boolean][] = [
    ['*', '', true],
    ['*', 'anything', true],
    ['a*', 'abc', true],
    ['*c', 'abc', true],
    ['a*c', 'abbbc', true],
    ['a*c', 'abbbd', false],
    ['a', 'ab', false],
    ['ab', 'a', false],
    ['*/admin', 'bob/admin', true],
    ['a.c', 'abc', false],
    ['(a+)+', '(a+)+', true],
    ['*a*a*a*a*a*b', 'a'.repeat(1000), false],
  ]
  for (const [pattern, text, want] of cases)
    it(`${want ? 'matches' : 'does not match'} ${JSON.stringify(pattern)} against ${JSON.stringify(text.slice(0, 20))}`, () => {
      expect(globMatch(pattern, text)).to.equal(want)
    })
})
