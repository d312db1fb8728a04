/** CredentialCache: round trip, file mode, refusals, expiry, destroy, concurrent writers. */
import { spawn } from 'node:child_process'
import { chmod, chown, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { CredentialCache, defaultCcachePath } from '../../src/client/ccache.js'
import type { Credentials } from '../../src/client/kdc-client.js'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { CLI_REALM, fakeCreds } from '../helpers/cli-creds.js'
import { decode, encode } from '../../src/wire/codec.js'
import { tempDir } from '../helpers/cli-kdc.js'

const HOUR = 3600_000
const WRITER = fileURLToPath(new URL('../helpers/cli-ccache-writer.ts', import.meta.url))
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

async function rejectsWith(p: Promise<unknown>, code: string): Promise<TesseraError> {
  try {
    await p
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code, (err as Error).message).to.equal(code)
    return err as TesseraError
  }
  throw new Error(`expected a TesseraError ${code}, but the promise resolved`)
}

function sameCreds(got: Credentials | undefined, want: Credentials): void {
  expect(got, 'entry present').to.not.equal(undefined)
  expect(Buffer.from(got!.sessionKey).equals(Buffer.from(want.sessionKey)), 'session key intact').to.equal(true)
  expect(Buffer.from(got!.ticket.enc).equals(Buffer.from(want.ticket.enc)), 'ticket body intact').to.equal(true)
  expect(got!.ticket.sname).to.deep.equal(want.ticket.sname)
  expect(got!.ticket.kvno).to.equal(want.ticket.kvno)
  for (const k of ['crealm', 'cname', 'srealm', 'sname', 'flags', 'authtime', 'starttime', 'endtime', 'renewTill'] as const)
    expect(got![k], k).to.deep.equal(want[k])
}

describe('CredentialCache', () => {
  let dir: string
  let file: string

  beforeEach(async () => {
    dir = await tempDir('tessera-ccache-')
    file = path.join(dir, 'cc')
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('never follows a symbolic link planted at the cache path (load and logout)', async () => {
    const victim = path.join(dir, 'victim')
    await writeFile(victim, 'precious', { mode: 0o600 })
    await symlink(victim, file)
    await rejectsWith(new CredentialCache(file).load(), TesseraErrorCode.TESSERA_CCACHE)
    await rejectsWith(new CredentialCache(file).destroy(), TesseraErrorCode.TESSERA_CCACHE)
    expect(await readFile(victim, 'utf8')).to.equal('precious')
  })

  it('refuses a cache file that belongs to another user', async function () {
    if (typeof process.getuid !== 'function' || process.getuid() !== 0) this.skip() // only root can chown
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    await chown(file, 12345, 12345)
    await rejectsWith(cc.load(), TesseraErrorCode.TESSERA_CCACHE)
  })

  it('loads undefined when there is no cache', async () => {
    expect(await new CredentialCache(file).load()).to.equal(undefined)
    expect(await new CredentialCache(file).find(['krbtgt', CLI_REALM])).to.equal(undefined)
  })

  it('round-trips initialize, store, find and load with session keys and tickets intact', async () => {
    const cc = new CredentialCache(file)
    const tgt = fakeCreds({ flags: 0x40800000, renewTill: Date.now() + 48 * HOUR })
    const http = fakeCreds({ service: ['HTTP', 'www.example.test'] })
    const db = fakeCreds({ service: ['postgres', 'db.example.test'] })
    await cc.initialize(tgt)
    await cc.store(http)
    await cc.store(db)

    const other = new CredentialCache(file)
    const contents = await other.load()
    expect(contents!.crealm).to.equal(CLI_REALM)
    expect(contents!.cname).to.deep.equal(['alice'])
    expect(contents!.entries).to.have.length(3)
    sameCreds(await other.find(['krbtgt', CLI_REALM]), tgt)
    sameCreds(await other.find(['HTTP', 'www.example.test'], CLI_REALM), http)
    sameCreds(await other.find(['postgres', 'db.example.test']), db)
    expect(await other.find(['HTTP', 'www.example.test'], 'OTHER.REALM')).to.equal(undefined)
    expect(await other.find(['HTTP', 'nowhere'])).to.equal(undefined)
  })

  it('replaces the entry of a service stored twice', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    await cc.store(fakeCreds({ service: ['HTTP', 'www'] }))
    const newer = fakeCreds({ service: ['HTTP', 'www'], ticket: { realm: CLI_REALM, sname: ['HTTP', 'www'], kvno: 2, enc: new Uint8Array(64).fill(7) } })
    await cc.store(newer)
    const c = await cc.load()
    expect(c!.entries).to.have.length(2)
    sameCreds(await cc.find(['HTTP', 'www']), newer)
  })

  it('initialize replaces everything (a fresh login)', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    await cc.store(fakeCreds({ service: ['HTTP', 'www'] }))
    await cc.initialize(fakeCreds({ cname: ['bob'] }))
    const c = await cc.load()
    expect(c!.cname).to.deep.equal(['bob'])
    expect(c!.entries).to.have.length(1)
  })

  it('creates the file with mode 0600 and leaves no temp or lock files', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    await cc.store(fakeCreds({ service: ['HTTP', 'www'] }))
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    expect(await readdir(dir)).to.deep.equal(['cc'])
    const raw = await readFile(file)
    expect(raw.subarray(0, 4).toString('ascii')).to.equal('TSCC')
    expect(raw[4]).to.equal(1)
  })

  it('creates a missing directory of its path, private (the default ~/.cache/tessera on first use)', async () => {
    const deep = path.join(dir, 'home', '.cache', 'tessera', 'ccache')
    const cc = new CredentialCache(deep)
    const tgt = fakeCreds()
    await cc.initialize(tgt)
    expect((await stat(path.dirname(deep))).mode & 0o777).to.equal(0o700)
    expect((await stat(deep)).mode & 0o777).to.equal(0o600)
    sameCreds(await cc.find(tgt.sname, tgt.srealm), tgt)
  })

  it('refuses a directory anyone may write to without the sticky bit; a sticky one (like /tmp) is allowed', async () => {
    const open = path.join(dir, 'open')
    await mkdir(open)
    await chmod(open, 0o777)
    await rejectsWith(new CredentialCache(path.join(open, 'cc')).initialize(fakeCreds()), TesseraErrorCode.TESSERA_CCACHE)
    expect(await readdir(open), 'nothing written').to.deep.equal([])
    await chmod(open, 0o1777)
    await new CredentialCache(path.join(open, 'cc')).initialize(fakeCreds())
    expect(await readdir(open)).to.deep.equal(['cc'])
  })

  it('defaults to the runtime dir, then the user cache dir, and to /tmp only with no home', () => {
    expect(defaultCcachePath({ XDG_RUNTIME_DIR: '/run/user/7', HOME: '/home/a' })).to.equal('/run/user/7/tessera_ccache')
    expect(defaultCcachePath({ HOME: '/home/a' })).to.equal('/home/a/.cache/tessera/ccache')
    expect(defaultCcachePath({ HOME: '/home/a', XDG_CACHE_HOME: '/c' })).to.equal('/c/tessera/ccache')
    // Never a shared, sticky /tmp while a home exists (another user could pre-create the file or its lock).
    expect(defaultCcachePath({ HOME: '/home/a' }).startsWith('/tmp')).to.equal(false)
  })

  it('keeps resumption tickets across stores, drops malformed or expired ones without failing', async () => {
    const now = Date.now()
    const good = { id: 'h|1|aa', tk: new Uint8Array(84).fill(1), rms: new Uint8Array(32).fill(2), receivedAtMs: now - 1000, lifetimeS: 600 }
    const cc = new CredentialCache(file)
    const tgt = fakeCreds()
    await cc.initialize(tgt, [good, { ...good, id: 'old', receivedAtMs: now - 700_000 }])
    expect((await cc.load())!.resume!.map((t) => t.id)).to.deep.equal(['h|1|aa'])
    await cc.store(fakeCreds({ service: ['HTTP', 'www'] }))
    expect((await cc.load())!.resume!.map((t) => t.id), 'kept by a store without resume').to.deep.equal(['h|1|aa'])
    // A hand-edited cache with garbage in `resume`: the credentials still load.
    const raw = await readFile(file)
    const body = decode(raw.subarray(5)) as Record<string, unknown>
    body.resume = [{ id: 5 }, 'x', { ...good, rms: new Uint8Array(3) }]
    await writeFile(file, Buffer.concat([raw.subarray(0, 5), encode(body)]), { mode: 0o600 })
    const c = await cc.load()
    expect(c!.entries).to.have.length(2)
    expect(c!.resume).to.equal(undefined)
  })

  it('refuses a cache readable by others with TESSERA_CCACHE', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    await chmod(file, 0o644)
    const err = await rejectsWith(cc.load(), TesseraErrorCode.TESSERA_CCACHE)
    expect(err.message).to.contain('readable by others')
    await rejectsWith(cc.find(['krbtgt', CLI_REALM]), TesseraErrorCode.TESSERA_CCACHE)
    await rejectsWith(cc.store(fakeCreds({ service: ['HTTP', 'www'] })), TesseraErrorCode.TESSERA_CCACHE)
    await chmod(file, 0o640)
    await rejectsWith(cc.load(), TesseraErrorCode.TESSERA_CCACHE)
  })

  it('drops expired entries on load and on write (injected clock)', async () => {
    let now = Date.now()
    const cc = new CredentialCache(file, () => now)
    const t0 = now
    await cc.initialize(fakeCreds({ endtime: t0 + 10 * HOUR }, t0))
    await cc.store(fakeCreds({ service: ['HTTP', 'short'], endtime: t0 + HOUR }, t0))
    await cc.store(fakeCreds({ service: ['HTTP', 'long'], endtime: t0 + 5 * HOUR }, t0))
    expect((await cc.load())!.entries).to.have.length(3)

    now = t0 + 2 * HOUR
    const c = await cc.load()
    expect(c!.entries.map((e) => e.sname[1])).to.deep.equal([CLI_REALM, 'long'])
    expect(await cc.find(['HTTP', 'short'])).to.equal(undefined)

    now = t0 + HOUR // an entry exactly at its endtime is expired
    expect(await cc.find(['HTTP', 'short'])).to.equal(undefined)

    now = t0 + 6 * HOUR
    await cc.store(fakeCreds({ service: ['HTTP', 'new'], endtime: now + HOUR }, now))
    now = t0 // even with the clock turned back, the dropped entries are gone from the file
    const after = await cc.load()
    expect(after!.entries.map((e) => e.sname[1]).sort()).to.deep.equal([CLI_REALM, 'new'].sort())

    now = t0 + 20 * HOUR
    expect((await cc.load())!.entries).to.deep.equal([])
  })

  it('refuses to store credentials of another principal in the cache', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    const err = await rejectsWith(cc.store(fakeCreds({ cname: ['bob'], service: ['HTTP', 'www'] })), TesseraErrorCode.TESSERA_CCACHE)
    expect(err.message).to.contain('another principal')
    await rejectsWith(cc.store(fakeCreds({ crealm: 'OTHER.TEST', service: ['HTTP', 'www'] })), TesseraErrorCode.TESSERA_CCACHE)
    expect((await cc.load())!.entries).to.have.length(1)
    expect(await readdir(dir)).to.deep.equal(['cc'])
  })

  describe('corrupt files', () => {
    const cases: [string, () => Buffer][] = [
      ['an empty file', () => Buffer.alloc(0)],
      ['a short file', () => Buffer.from('TSC')],
      ['wrong magic', () => Buffer.concat([Buffer.from('KRB5'), Buffer.from([1, 0x80])])],
      ['a nil body', () => Buffer.concat([Buffer.from('TSCC'), Buffer.from([1, 0xc0])])],
      [
        'an entry with an invalid ticket',
        () => Buffer.concat([Buffer.from('TSCC'), Buffer.from([1]), encode({ crealm: 'X', cname: ['a'], entries: [{ ticket: 42 }] })]),
      ],
      ['an unknown version', () => Buffer.concat([Buffer.from('TSCC'), Buffer.from([9, 0x80])])],
      ['a truncated body', () => Buffer.concat([Buffer.from('TSCC'), Buffer.from([1, 0x83, 0xa6])])],
      ['a body that is not a map', () => Buffer.concat([Buffer.from('TSCC'), Buffer.from([1, 0x2a])])],
      ['a map without entries', () => Buffer.concat([Buffer.from('TSCC'), Buffer.from([1, 0x80])])],
      ['random bytes', () => Buffer.from(Array.from({ length: 200 }, (_, i) => (i * 97 + 13) & 0xff))],
    ]
    for (const [name, bytes] of cases)
      it(`rejects ${name} with TESSERA_CCACHE`, async () => {
        await writeFile(file, bytes(), { mode: 0o600 })
        await rejectsWith(new CredentialCache(file).load(), TesseraErrorCode.TESSERA_CCACHE)
      })

    it('rejects a cache whose tail was cut off with TESSERA_CCACHE', async () => {
      const cc = new CredentialCache(file)
      await cc.initialize(fakeCreds())
      const raw = await readFile(file)
      await writeFile(file, raw.subarray(0, raw.length - 30), { mode: 0o600 })
      await rejectsWith(cc.load(), TesseraErrorCode.TESSERA_CCACHE)
    })

    it('rejects a store into a corrupt cache and leaves it as it was', async () => {
      await writeFile(file, Buffer.from('not a cache at all'), { mode: 0o600 })
      const cc = new CredentialCache(file)
      await rejectsWith(cc.store(fakeCreds()), TesseraErrorCode.TESSERA_CCACHE)
      expect((await readFile(file)).toString()).to.equal('not a cache at all')
      expect(await readdir(dir)).to.deep.equal(['cc'])
    })
  })

  it('destroy removes the cache: true, then false', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    expect(await cc.destroy()).to.equal(true)
    expect(await readdir(dir)).to.deep.equal([])
    expect(await cc.load()).to.equal(undefined)
    expect(await cc.destroy()).to.equal(false)
  })

  it('serialises concurrent stores within one process', async () => {
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds())
    await Promise.all(Array.from({ length: 20 }, (_, i) => new CredentialCache(file).store(fakeCreds({ service: ['svc', `p${i}`] }))))
    expect((await cc.load())!.entries).to.have.length(21)
  })

  it('keeps every entry when 4 processes store 20 entries each at once', async function () {
    this.timeout(30000)
    const WRITERS = 4
    const EACH = 20
    await new CredentialCache(file).initialize(fakeCreds())
    const children = Array.from({ length: WRITERS }, (_, id) => {
      const child = spawn(process.execPath, ['--import', 'tsx', WRITER, file, String(id), String(EACH)], {
        cwd: ROOT,
        stdio: ['pipe', 'pipe', 'pipe'],
      })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
      })
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString()
      })
      const ready = new Promise<void>((resolve, reject) => {
        const check = () => {
          if (out.includes('ready')) resolve()
        }
        child.stdout.on('data', check)
        child.once('exit', (code) => reject(new Error(`writer ${id} exited (${code}) before it was ready: ${err}`)))
      })
      const exited = new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
        child.once('exit', (code) => resolve({ code, out, err })),
      )
      return { child, ready, exited }
    })
    const killer = setTimeout(() => {
      for (const c of children) c.child.kill('SIGKILL')
    }, 25000)
    try {
      await Promise.all(children.map((c) => c.ready))
      for (const c of children) c.child.stdin.end('go\n')
      const results = await Promise.all(children.map((c) => c.exited))
      for (const [i, r] of results.entries()) expect(r.code, `writer ${i}: ${r.err}`).to.equal(0)
    } finally {
      clearTimeout(killer)
    }
    const c = await new CredentialCache(file).load()
    const names = c!.entries.map((e) => e.sname.join('/'))
    expect(names).to.have.length(1 + WRITERS * EACH)
    for (let id = 0; id < WRITERS; id++) for (let i = 0; i < EACH; i++) expect(names).to.include(`svc/w${id}-${i}`)
    expect(await readdir(dir)).to.deep.equal(['cc'])
  })
})
