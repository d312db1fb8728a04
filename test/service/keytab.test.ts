import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'
import {
  addKeytabEntry,
  decodeKeytab,
  encodeKeytab,
  KEYTAB_MAGIC,
  Keytab,
  type KeytabEntry,
  readKeytab,
  writeKeytab,
} from '../../src/krb/keytab.js'
import { decode, encode } from '../../src/wire/codec.js'
import { rejection, thrown } from './helpers.js'

const key = (b: number) => new Uint8Array(32).fill(b)
const entry = (kvno: number, b = kvno, name = ['HTTP', 'www.example.com'], realm = 'EXAMPLE.COM'): KeytabEntry => ({
  realm,
  name,
  kvno,
  key: key(b),
  createdAt: 1_700_000_000_000 + kvno,
})

function expectKeytabError(err: Error): void {
  expect(err).to.be.instanceOf(TesseraError)
  expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_KEYTAB)
}

describe('Keytab', () => {
  it('finds a key by principal and kvno, as a string or an id', () => {
    const kt = new Keytab([entry(1), entry(2), entry(1, 9, ['host', 'db'])])
    expect(kt.find('HTTP/www.example.com@EXAMPLE.COM', 2)?.key).to.deep.equal(key(2))
    expect(kt.find({ realm: 'EXAMPLE.COM', components: ['host', 'db'] }, 1)?.key).to.deep.equal(key(9))
    expect(kt.find('HTTP/www.example.com@EXAMPLE.COM', 3)).to.equal(undefined)
    expect(kt.find('HTTP/www.example.com@OTHER.COM', 1)).to.equal(undefined)
  })

  it('returns the highest kvno as latest, whatever the insertion order', () => {
    const kt = new Keytab([entry(3), entry(5), entry(4)])
    expect(kt.latest('HTTP/www.example.com@EXAMPLE.COM')?.kvno).to.equal(5)
    expect(kt.kvnos('HTTP/www.example.com@EXAMPLE.COM')).to.deep.equal([3, 4, 5])
    expect(kt.latest('nobody@EXAMPLE.COM')).to.equal(undefined)
  })

  it('replaces an entry with the same principal and kvno on add', () => {
    const kt = new Keytab([entry(1)])
    addKeytabEntry(kt, entry(1, 7))
    expect(kt.size).to.equal(1)
    expect(kt.find('HTTP/www.example.com@EXAMPLE.COM', 1)?.key).to.deep.equal(key(7))
  })

  it('copies keys in and out', () => {
    const e = entry(1)
    const kt = new Keytab([e])
    e.key.fill(0)
    const got = kt.find('HTTP/www.example.com@EXAMPLE.COM', 1)!
    got.key.fill(0)
    expect(kt.find('HTTP/www.example.com@EXAMPLE.COM', 1)?.key).to.deep.equal(key(1))
  })

  it('lists its principals and removes entries', () => {
    const kt = new Keytab([entry(1), entry(2), entry(1, 1, ['host', 'db'])])
    expect(kt.principals()).to.deep.equal(['HTTP/www.example.com@EXAMPLE.COM', 'host/db@EXAMPLE.COM'])
    expect(kt.remove('HTTP/www.example.com@EXAMPLE.COM', 1)).to.equal(1)
    expect(kt.remove('host/db@EXAMPLE.COM')).to.equal(1)
    expect(kt.size).to.equal(1)
  })

  const bad: [string, Partial<KeytabEntry> & Record<string, unknown>][] = [
    ['a short key', { key: new Uint8Array(31) }],
    ['a negative kvno', { kvno: -1 }],
    ['an empty name', { name: [] }],
    ['a bad realm', { realm: 'BAD REALM' }],
    ['a name component with "/"', { name: ['a/b'] }],
    ['out-of-range KDF parameters', { kdf: { alg: 'scrypt', N: 3, r: 8, p: 1 } }],
    ['an extra field', { extra: 1 }],
  ]
  for (const [what, patch] of bad)
    it(`refuses an entry with ${what} (TESSERA_KEYTAB)`, () => {
      expectKeytabError(thrown(() => new Keytab([{ ...entry(1), ...patch } as KeytabEntry])))
    })
})

describe('keytab format', () => {
  it('is "TSKT", version 1, then a plain MessagePack map of entries', () => {
    const e: KeytabEntry = { ...entry(2), kdf: { alg: 'scrypt', N: 1024, r: 8, p: 1 }, salt: 'EXAMPLE.COMHTTP/www.example.com' }
    const bytes = encodeKeytab(new Keytab([e]))
    expect(Buffer.from(bytes.subarray(0, 5)).toString('hex')).to.equal('54534b5401')
    const body = decode(bytes.subarray(5)) as { entries: Record<string, unknown>[] }
    expect(Object.keys(body)).to.deep.equal(['entries'])
    expect(body.entries).to.have.length(1)
    const w = body.entries[0]!
    expect(Object.keys(w)).to.deep.equal(['realm', 'name', 'kvno', 'key', 'createdAt', 'kdf', 'salt'])
    expect(w.realm).to.equal('EXAMPLE.COM')
    expect(w.name).to.deep.equal(['HTTP', 'www.example.com'])
    expect(w.kvno).to.equal(2)
    expect(new Uint8Array(w.key as Uint8Array)).to.deep.equal(key(2))
    expect(w.createdAt).to.equal(1_700_000_000_002)
    const back = decodeKeytab(bytes).find('HTTP/www.example.com@EXAMPLE.COM', 2)!
    expect(back).to.deep.equal({ ...e, key: key(2) })
  })

  it('encodes a one-entry keytab to the exact bytes documented in PROTOCOL.md §14.1', () => {
    const bytes = encodeKeytab(new Keytab([{ realm: 'R', name: ['s'], kvno: 1, key: new Uint8Array(32), createdAt: 0 }]))
    expect(Buffer.from(bytes).toString('hex')).to.equal(
      '54534b5401' +
        '81a7656e747269657391' +
        '85a57265616c6da152a46e616d6591a173a46b766e6f01a36b6579c420' +
        '00'.repeat(32) +
        'a9637265617465644174' +
        '00',
    )
  })

  const corrupt: [string, Uint8Array][] = [
    ['an empty file', new Uint8Array(0)],
    ['a bad magic', Uint8Array.of(0x4b, 0x54, 0x53, 0x54, 1, 0x80)],
    ['an unknown version', Uint8Array.of(...KEYTAB_MAGIC, 2, 0x81)],
    ['a truncated body', encodeKeytab(new Keytab([entry(1)])).subarray(0, 40)],
    ['a body that is not a map of entries', Uint8Array.of(...KEYTAB_MAGIC, 1, ...encode([1, 2]))],
    ['an entry with a missing key', Uint8Array.of(...KEYTAB_MAGIC, 1, ...encode({ entries: [{ realm: 'R', name: ['s'], kvno: 1, createdAt: 0 }] }))],
  ]
  for (const [what, bytes] of corrupt)
    it(`refuses ${what} (TESSERA_KEYTAB)`, () => {
      expectKeytabError(thrown(() => decodeKeytab(bytes)))
    })
})

describe('readKeytab / writeKeytab', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-keytab-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('writes mode 0600 and reads back every entry', async () => {
    const file = path.join(dir, 'http.keytab')
    await writeKeytab(file, new Keytab([entry(1), entry(2), entry(1, 3, ['host', 'db'])]))
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    const kt = await readKeytab(file)
    expect(kt.size).to.equal(3)
    expect(kt.find('HTTP/www.example.com@EXAMPLE.COM', 1)?.key).to.deep.equal(key(1))
    expect(kt.latest('HTTP/www.example.com@EXAMPLE.COM')?.kvno).to.equal(2)
    expect(kt.find('host/db@EXAMPLE.COM', 1)?.key).to.deep.equal(key(3))
  })

  it('replaces an existing keytab atomically and leaves no temporary file', async () => {
    const file = path.join(dir, 'http.keytab')
    await writeKeytab(file, new Keytab([entry(1)]))
    await writeKeytab(file, new Keytab([entry(1), entry(2)]))
    expect((await readKeytab(file)).kvnos('HTTP/www.example.com@EXAMPLE.COM')).to.deep.equal([1, 2])
    expect(await readdir(dir)).to.deep.equal(['http.keytab'])
  })

  it('fixes the mode of a keytab it replaces', async () => {
    const file = path.join(dir, 'http.keytab')
    await writeFile(file, 'old', { mode: 0o644 })
    await writeKeytab(file, new Keytab([entry(1)]))
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
  })

  if (process.platform !== 'win32') {
    for (const mode of [0o644, 0o640, 0o604, 0o660])
      it(`refuses to read a keytab with mode ${mode.toString(8).padStart(4, '0')} (TESSERA_KEYTAB)`, async () => {
        const file = path.join(dir, 'open.keytab')
        await writeKeytab(file, new Keytab([entry(1)]))
        await chmod(file, mode)
        const err = await rejection(readKeytab(file))
        expectKeytabError(err)
        expect(err.message).to.match(/chmod 600/)
      })
  }

  it('reports a missing file with TESSERA_KEYTAB', async () => {
    const err = await rejection(readKeytab(path.join(dir, 'none.keytab')))
    expectKeytabError(err)
    expect(err.message).to.match(/does not exist/)
  })

  it('refuses a directory (TESSERA_KEYTAB)', async () => {
    expectKeytabError(await rejection(readKeytab(dir)))
  })

  it('reports a corrupt file with its path', async () => {
    const file = path.join(dir, 'junk.keytab')
    await writeFile(file, 'not a keytab at all', { mode: 0o600 })
    const err = await rejection(readKeytab(file))
    expectKeytabError(err)
    expect(err.message).to.include(file)
  })

  it('refuses to write into a missing directory (TESSERA_KEYTAB)', async () => {
    expectKeytabError(await rejection(writeKeytab(path.join(dir, 'no', 'such.keytab'), new Keytab([entry(1)]))))
  })

  it('writes exactly encodeKeytab()', async () => {
    const file = path.join(dir, 'x.keytab')
    const kt = new Keytab([entry(1)])
    await writeKeytab(file, kt)
    expect(new Uint8Array(await readFile(file))).to.deep.equal(encodeKeytab(kt))
  })
})
