/** realm.json: parse, validate, round trip, and clear errors for every malformed field. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { loadRealmFile, parseRealmFile, realmFileJson, signingKeyAt, transportKeyAt } from '../../src/krb/realm-file.js'

const good = {
  realm: 'EXAMPLE.TEST',
  kdcs: [{ host: '127.0.0.1', as: 7701, tgs: 7702, time: 7703, admin: 7704 }],
  transportKey: '11'.repeat(32),
  signingKey: '22'.repeat(32),
  maxClockSkewMs: 300000,
}

function refuses(value: unknown, word: string): void {
  let err: unknown
  try {
    parseRealmFile(value)
  } catch (e) {
    err = e
  }
  expect(err, JSON.stringify(value)).to.be.instanceOf(TesseraError)
  expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_CONFIG)
  expect((err as TesseraError).message).to.include(word)
}

describe('realm file', () => {
  it('round-trips through realmFileJson and parseRealmFile', () => {
    const rf = parseRealmFile(good)
    expect(rf.transportKey).to.have.length(32)
    expect(realmFileJson(rf)).to.deep.equal(good)
  })

  it('defaults maxClockSkewMs to 5 minutes', () => {
    const { maxClockSkewMs: _, ...rest } = good
    expect(parseRealmFile(rest).maxClockSkewMs).to.equal(300000)
  })

  it('refuses each malformed field with TESSERA_CONFIG naming it', () => {
    refuses(null, 'not a JSON object')
    refuses({ ...good, realm: '' }, 'realm')
    refuses({ ...good, kdcs: [] }, 'kdcs')
    refuses({ ...good, kdcs: [42] }, 'kdcs[0]')
    refuses({ ...good, kdcs: [{ ...good.kdcs[0], host: '' }] }, 'kdcs[0].host')
    refuses({ ...good, kdcs: [{ ...good.kdcs[0], tgs: 0 }] }, 'kdcs[0].tgs')
    refuses({ ...good, kdcs: [{ ...good.kdcs[0], admin: 70000 }] }, 'kdcs[0].admin')
    refuses({ ...good, transportKey: 'zz'.repeat(32) }, 'transportKey')
    refuses({ ...good, signingKey: '22'.repeat(31) }, 'signingKey')
    refuses({ ...good, maxClockSkewMs: 10 }, 'maxClockSkewMs')
  })

  describe('during an identity-key rotation (PROTOCOL.md §11)', () => {
    const staged = { ...good, nextTransportKey: '33'.repeat(32), nextSigningKey: '44'.repeat(32), nextKeysActiveFrom: 1_900_000_000_000 }

    it('round-trips the next keys and their activation time', () => {
      const rf = parseRealmFile(staged)
      expect(Buffer.from(rf.nextTransportKey!).toString('hex')).to.equal(staged.nextTransportKey)
      expect(rf.nextKeysActiveFrom).to.equal(staged.nextKeysActiveFrom)
      expect(realmFileJson(rf)).to.deep.equal(staged)
      const { nextSigningKey: _s, ...transportOnly } = staged
      expect(realmFileJson(parseRealmFile(transportOnly))).to.deep.equal(transportOnly)
    })

    it('names the current keys before the activation time and the next ones from it on', () => {
      const rf = parseRealmFile(staged)
      const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
      expect(hex(transportKeyAt(rf, staged.nextKeysActiveFrom - 1))).to.equal(good.transportKey)
      expect(hex(signingKeyAt(rf, staged.nextKeysActiveFrom - 1))).to.equal(good.signingKey)
      expect(hex(transportKeyAt(rf, staged.nextKeysActiveFrom))).to.equal(staged.nextTransportKey)
      expect(hex(signingKeyAt(rf, staged.nextKeysActiveFrom))).to.equal(staged.nextSigningKey)
      // A file without next keys names its keys at any time.
      expect(hex(transportKeyAt(parseRealmFile(good), Number.MAX_SAFE_INTEGER))).to.equal(good.transportKey)
    })

    it('refuses malformed next keys, a next key without activation time, and an activation time alone', () => {
      refuses({ ...staged, nextTransportKey: 'zz' }, 'nextTransportKey')
      refuses({ ...staged, nextSigningKey: 42 }, 'nextSigningKey')
      const { nextKeysActiveFrom: _t, ...noTime } = staged
      refuses(noTime, 'nextKeysActiveFrom')
      refuses({ ...staged, nextKeysActiveFrom: -1 }, 'nextKeysActiveFrom')
      refuses({ ...good, nextKeysActiveFrom: 5 }, 'nextKeysActiveFrom')
    })
  })

  it('names the file when it cannot be read or is not JSON', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-rf-'))
    try {
      const missing = path.join(dir, 'missing.json')
      const e1 = await loadRealmFile(missing).then(() => undefined, (e: unknown) => e as TesseraError)
      expect(e1?.code).to.equal(TesseraErrorCode.TESSERA_CONFIG)
      expect(e1?.message).to.include(missing)
      const broken = path.join(dir, 'broken.json')
      await writeFile(broken, '{ "realm": ')
      const e2 = await loadRealmFile(broken).then(() => undefined, (e: unknown) => e as TesseraError)
      expect(e2?.message).to.include('not valid JSON')
      const bad = path.join(dir, 'bad.json')
      await writeFile(bad, JSON.stringify({ ...good, signingKey: 'x' }))
      const e3 = await loadRealmFile(bad).then(() => undefined, (e: unknown) => e as TesseraError)
      expect(e3?.message).to.include(bad)
      expect(e3?.message).to.include('signingKey')
      const ok = path.join(dir, 'ok.json')
      await writeFile(ok, JSON.stringify(good))
      expect((await loadRealmFile(ok)).realm).to.equal('EXAMPLE.TEST')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('refuses port 0 and an every-interface host, saying what to do (a client can use neither)', () => {
    const kdc = good.kdcs[0]!
    refuses({ ...good, kdcs: [{ ...kdc, as: 0 }] }, 'kdc start writes the ports it bound')
    for (const host of ['0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0']) refuses({ ...good, kdcs: [{ ...kdc, host }] }, '--advertise-host')
    expect(parseRealmFile({ ...good, kdcs: [{ ...kdc, host: '::1' }] }).kdcs[0]!.host).to.equal('::1')
    expect(parseRealmFile({ ...good, kdcs: [{ ...kdc, host: '10.0.0.1' }] }).kdcs[0]!.host).to.equal('10.0.0.1')
  })

  it('decides the path the same way for the CLIs and the library: TESSERA_REALM_FILE, then the default', async () => {
    const { defaultRealmFilePath, realmFilePath } = await import('../../src/index.js')
    expect(realmFilePath({ TESSERA_REALM_FILE: '/etc/r.json', HOME: '/home/a' })).to.equal('/etc/r.json')
    expect(realmFilePath({ HOME: '/home/a' })).to.equal('/home/a/.config/tessera/realm.json')
    expect(realmFilePath({ HOME: '/home/a', XDG_CONFIG_HOME: '/x' })).to.equal('/x/tessera/realm.json')
    expect(defaultRealmFilePath({ TESSERA_REALM_FILE: '/etc/r.json', HOME: '/home/a' })).to.equal('/home/a/.config/tessera/realm.json')
  })
})
