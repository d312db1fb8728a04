/** `kdc init` / `kdc start` (src/cli/kdc.ts) in-process, and bin/kdc.ts as a real child process. */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { main } from '../../src/cli/kdc.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { loadRealmFile } from '../../src/krb/realm-file.js'
import { ADMIN_PASSWORD, expectKrb, FAST_CONFIG } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { ErrorCode } from '../../proto/error-codes.js'
import { Exit } from '../../src/cli/common.js'

/** `n` ports that were free a moment ago (bound on port 0, then released). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<net.Server>((resolve) => {
      const s = net.createServer()
      s.listen(0, '127.0.0.1', () => resolve(s))
    })),
  )
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  return ports
}

/** `kdc start` until its listening line: the four ports, and a function that stops it and resolves with its exit code. */
async function startUntilListening(argv: string[]): Promise<{ ports: number[]; out: Capture; err: Capture; stop: () => Promise<number> }> {
  let stop!: () => void
  const r = run(argv, {
    stopSignal: new Promise<void>((resolve) => {
      stop = resolve
    }),
  })
  const m = await Promise.race([r.out.waitFor(LISTENING_ANY), r.code.then((c) => Promise.reject(new Error(`exit ${c}: ${r.err.text}`)))])
  return {
    ports: m.slice(1, 5).map(Number),
    out: r.out,
    err: r.err,
    stop: () => {
      stop()
      return r.code
    },
  }
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const CLI_REALM = 'EXAMPLE.TEST'
const LISTENING = /^listening as=127\.0\.0\.1:(\d+) tgs=127\.0\.0\.1:(\d+) time=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)$/

/** A stream that keeps what is written and lets a test wait for a pattern. */
class Capture extends Writable {
  text = ''
  private waiters: (() => void)[] = []
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString()
    for (const w of this.waiters.splice(0)) w()
    cb()
  }
  async waitFor(re: RegExp, timeoutMs = 10000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const m = this.text.match(re)
      if (m) return m
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${re}; got ${JSON.stringify(this.text)}`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200))
        this.waiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    }
  }
}

interface Run {
  code: Promise<number>
  out: Capture
  err: Capture
}

function run(argv: string[], opts: { env?: NodeJS.ProcessEnv; stopSignal?: Promise<void> } = {}): Run {
  const out = new Capture()
  const err = new Capture()
  const io: Parameters<typeof main>[1] = { env: opts.env ?? {}, stdout: out, stderr: err }
  if (opts.stopSignal) io.stopSignal = opts.stopSignal
  return { code: main(argv, io), out, err }
}

/** Resolves true when nothing accepts connections on 127.0.0.1:port. */
function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', () => resolve(true))
  })
}

/** Run `fn` with console.log/console.error captured (yargs prints help there). */
async function quietConsole<T>(fn: () => Promise<T>): Promise<{ value: T; logged: string }> {
  const saved = { log: console.log, error: console.error, info: console.info }
  let logged = ''
  const grab = (...a: unknown[]) => {
    logged += `${a.map(String).join(' ')}\n`
  }
  console.log = grab
  console.error = grab
  console.info = grab
  try {
    return { value: await fn(), logged }
  } finally {
    Object.assign(console, saved)
  }
}

describe('kdc CLI (integration)', function () {
  this.timeout(30000)
  useProcessGuards()
  let tmp: string
  let cfg: string
  let pwFile: string

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-kdc-cli-'))
    cfg = path.join(tmp, 'kdc-config.json')
    await writeFile(cfg, JSON.stringify(FAST_CONFIG))
    pwFile = path.join(tmp, 'admin.pw')
    await writeFile(pwFile, `${ADMIN_PASSWORD}\nignored second line\n`, { mode: 0o600 })
  })
  after(async () => {
    await rm(tmp, { recursive: true, force: true })
  })

  const init = (dir: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}) =>
    run(['init', '--realm', CLI_REALM, '--dir', dir, '--config', cfg, ...extra], { env })

  describe('kdc init', () => {
    it('creates a 0600 stash, the database and a realm.json with nothing secret in it', async () => {
      const dir = path.join(tmp, 'realm-a')
      const r = init(dir, ['--admin-password-file', pwFile])
      expect(await r.code, r.err.text).to.equal(0)
      expect(r.out.text).to.include(CLI_REALM)
      const st = await stat(path.join(dir, 'stash'))
      expect(st.mode & 0o777, 'stash mode').to.equal(0o600)
      expect((await stat(path.join(dir, 'db'))).isDirectory()).to.equal(true)
      const rf = await loadRealmFile(path.join(dir, 'realm.json'))
      expect(rf.realm).to.equal(CLI_REALM)
      expect(rf.kdcs).to.have.length(1)
      expect(rf.transportKey).to.have.length(32)
      const text = await readFile(path.join(dir, 'realm.json'), 'utf8')
      expect(Object.keys(JSON.parse(text)).sort()).to.deep.equal(['kdcs', 'maxClockSkewMs', 'realm', 'signingKey', 'transportKey'])
      expect(text).to.not.match(/secret|password|private/i)
      expect(text).to.not.include(ADMIN_PASSWORD)
      const stash = await readFile(path.join(dir, 'stash'))
      for (const enc of ['hex', 'base64', 'base64url'] as const) {
        const s = stash.toString(enc)
        expect(text.includes(s.slice(0, 32)), `stash (${enc}) leaked into realm.json`).to.equal(false)
      }
      expect((await stat(path.join(dir, 'realm.json'))).mode & 0o077, 'realm.json is readable by others, and that is fine').to.be.a('number')
    })

    it('refuses a second init on the same directory with a clear message', async () => {
      const dir = path.join(tmp, 'realm-a')
      const before = await readFile(path.join(dir, 'stash'))
      const r = init(dir, ['--admin-password-file', pwFile])
      expect(await r.code).to.not.equal(0)
      expect(r.err.text).to.match(/already holds a realm/)
      expect(r.err.text).to.include(dir)
      expect((await readFile(path.join(dir, 'stash'))).equals(before), 'stash untouched').to.equal(true)
    })

    it('takes the admin password from TESSERA_ADMIN_PASSWORD', async () => {
      const dir = path.join(tmp, 'realm-env')
      const r = init(dir, [], { TESSERA_ADMIN_PASSWORD: 'env-password-42' })
      expect(await r.code, r.err.text).to.equal(0)
      await loadRealmFile(path.join(dir, 'realm.json'))
    })

    it('fails with a clear error when there is no password source', async function () {
      if (process.stdin.isTTY) this.skip() // it would prompt on the terminal
      const dir = path.join(tmp, 'realm-nopw')
      const r = init(dir)
      expect(await r.code).to.not.equal(0)
      expect(r.err.text).to.match(/no admin password/)
      expect(r.err.text).to.match(/--admin-password-file|TESSERA_ADMIN_PASSWORD/)
      expect(await stat(path.join(dir, 'stash')).catch(() => undefined), 'no half-made realm').to.equal(undefined)
    })

    it('fails with a clear error when the password file is empty or missing', async () => {
      const empty = path.join(tmp, 'empty.pw')
      await writeFile(empty, '')
      const r1 = init(path.join(tmp, 'realm-empty'), ['--admin-password-file', empty])
      expect(await r1.code).to.not.equal(0)
      expect(r1.err.text).to.include(empty)
      const r2 = init(path.join(tmp, 'realm-missing'), ['--admin-password-file', path.join(tmp, 'nope.pw')])
      expect(await r2.code).to.not.equal(0)
      expect(r2.err.text).to.include('nope.pw')
    })

    it('refuses a missing --realm as a usage error', async () => {
      const r = run(['init', '--dir', path.join(tmp, 'x'), '--admin-password-file', pwFile])
      expect(await r.code).to.not.equal(0)
      expect(r.err.text).to.match(/realm/)
    })
  })

  describe('kdc start', () => {
    it('prints one listening line, updates realm.json, serves logins, and stops on stopSignal', async () => {
      const dir = path.join(tmp, 'realm-env')
      let stop!: () => void
      const stopSignal = new Promise<void>((resolve) => {
        stop = resolve
      })
      const r = run(
        ['start', '--dir', dir, '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'],
        { stopSignal },
      )
      let stopped = false
      try {
        const m = await Promise.race([
          r.out.waitFor(/\n/),
          r.code.then((c) => {
            throw new Error(`kdc start exited with ${c}: ${r.err.text}`)
          }),
        ])
        expect(m).to.not.equal(undefined)
        const lines = r.out.text.split('\n').filter((l) => l.length > 0)
        expect(lines, r.out.text).to.have.length(1)
        const parsed = lines[0]!.match(LISTENING)
        expect(parsed, lines[0]).to.not.equal(null)
        const [as, tgs, time, admin] = parsed!.slice(1, 5).map(Number) as [number, number, number, number]
        for (const p of [as, tgs, time, admin]) expect(p).to.be.within(1, 65535)
        expect(new Set([as, tgs, time, admin]).size).to.equal(4)

        const rf = await loadRealmFile(path.join(dir, 'realm.json'))
        expect(rf.kdcs[0]).to.deep.include({ host: '127.0.0.1', as, tgs, time, admin })

        const c = new KdcClient(rf)
        try {
          const tgt = await c.login('admin', 'env-password-42')
          expect(tgt.cname).to.deep.equal(['admin'])
          expect(tgt.crealm).to.equal(CLI_REALM)
          await expectKrb(c.login('admin', 'wrong'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
        } finally {
          c.close()
        }

        stop()
        stopped = true
        expect(await r.code).to.equal(0)
        for (const p of [as, tgs, time, admin]) expect(await portClosed(p), `port ${p} still open`).to.equal(true)
        expect(r.out.text.split('\n').filter((l) => l.length > 0), 'nothing else on stdout').to.have.length(1)
      } finally {
        if (!stopped) {
          stop()
          await r.code
        }
      }
    })

    it('fails with a clear error on a directory that holds no realm', async () => {
      const dir = path.join(tmp, 'no-realm-here')
      const r = run(['start', '--dir', dir, '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'])
      expect(await r.code).to.not.equal(0)
      expect(r.err.text).to.include(dir)
      expect(r.out.text).to.equal('')
    })

    it('refuses a config file with an unknown or out-of-range setting, naming it (exit 5)', async () => {
      for (const [bad, word] of [
        [{ maxClockSkw: 1000 }, 'maxClockSkw'],
        [{ maxClockSkewMs: -5 }, 'maxClockSkewMs'],
        [{ limits: { maxFrameBytes: 10 } }, 'maxFrameBytes'],
      ] as const) {
        const file = path.join(tmp, `bad-${word}.json`)
        await writeFile(file, JSON.stringify(bad))
        const r = run(['start', '--dir', path.join(tmp, 'unused'), '--config', file])
        expect(await r.code, word).to.equal(5)
        expect(r.err.text).to.include(word)
      }
      const notJson = path.join(tmp, 'not-json.json')
      await writeFile(notJson, '{ nope')
      const r = run(['start', '--dir', path.join(tmp, 'unused'), '--config', notJson])
      expect(await r.code).to.equal(5)
      expect(r.err.text).to.include('not valid JSON')
    })

    it('fails with a clear error when a port is taken', async () => {
      const dir = path.join(tmp, 'realm-a')
      const busy = net.createServer()
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
      const taken = (busy.address() as net.AddressInfo).port
      try {
        const r = run(['start', '--dir', dir, '--config', cfg, '--as-port', String(taken), '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'])
        expect(await r.code).to.not.equal(0)
        expect(r.err.text).to.match(/listen|in use|EADDRINUSE/i)
        expect(r.out.text).to.equal('')
      } finally {
        await new Promise<void>((resolve) => busy.close(() => resolve()))
      }
      // the failed start released the database: a second start works
      let stop!: () => void
      const r2 = run(['start', '--dir', dir, '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'], {
        stopSignal: new Promise<void>((resolve) => {
          stop = resolve
        }),
      })
      await Promise.race([r2.out.waitFor(LISTENING_ANY), r2.code.then((c) => Promise.reject(new Error(`exit ${c}: ${r2.err.text}`)))])
      stop()
      expect(await r2.code).to.equal(0)
    })
  })

  describe('addresses in realm.json (issue 10)', () => {
    const ZERO = ['--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0']

    it('kdc start listens where kdc init was told, unless a flag says otherwise', async () => {
      const dir = path.join(tmp, 'realm-ports')
      const ports = await freePorts(4)
      const flags = ['--as-port', '--tgs-port', '--time-port', '--admin-port'].flatMap((f, i) => [f, String(ports[i])])
      const r = init(dir, ['--admin-password-file', pwFile, ...flags])
      expect(await r.code, r.err.text).to.equal(0)
      const rf = await loadRealmFile(path.join(dir, 'realm.json'))
      expect(rf.kdcs[0]).to.deep.equal({ host: '127.0.0.1', as: ports[0], tgs: ports[1], time: ports[2], admin: ports[3] })
      const first = await startUntilListening(['start', '--dir', dir, '--config', cfg])
      expect(first.ports).to.deep.equal(ports)
      expect(await first.stop()).to.equal(0)
      const second = await startUntilListening(['start', '--dir', dir, '--config', cfg, '--as-port', '0'])
      try {
        expect(second.ports.slice(1)).to.deep.equal(ports.slice(1))
        expect(second.ports[0]).to.not.equal(ports[0])
        expect((await loadRealmFile(path.join(dir, 'realm.json'))).kdcs[0]!.as).to.equal(second.ports[0])
      } finally {
        expect(await second.stop()).to.equal(0)
      }
    })

    it('kdc init with port 0 gives clients no port 0; kdc start writes the ports it bound', async () => {
      const dir = path.join(tmp, 'realm-zero')
      const r = init(dir, ['--admin-password-file', pwFile, ...ZERO])
      expect(await r.code, r.err.text).to.equal(0)
      const early = await readFile(path.join(dir, 'realm.json'), 'utf8').catch(() => undefined)
      if (early !== undefined) expect(JSON.parse(early).kdcs[0].as, 'port 0 in realm.json').to.not.equal(0)
      expect(r.out.text).to.contain('kdc start')
      const s = await startUntilListening(['start', '--dir', dir, '--config', cfg])
      try {
        const rf = await loadRealmFile(path.join(dir, 'realm.json'))
        expect([rf.kdcs[0]!.as, rf.kdcs[0]!.tgs, rf.kdcs[0]!.time, rf.kdcs[0]!.admin]).to.deep.equal(s.ports)
        const c = new KdcClient(rf)
        try {
          expect((await c.login('admin', ADMIN_PASSWORD)).cname).to.deep.equal(['admin'])
        } finally {
          c.close()
        }
      } finally {
        expect(await s.stop()).to.equal(0)
      }
    })

    it("runs docs/operations.md's example (--host 0.0.0.0 --as-port 88): clients get this machine's name, not 0.0.0.0", async () => {
      const ops = await readFile(path.join(ROOT, 'docs', 'operations.md'), 'utf8')
      expect(ops).to.contain('--host 0.0.0.0 --as-port 88')
      const dir = path.join(tmp, 'realm-docs')
      const r = run(['init', '--realm', 'EXAMPLE.COM', '--dir', dir, '--admin-password-file', pwFile, '--config', cfg, '--host', '0.0.0.0', '--as-port', '88'])
      expect(await r.code, r.err.text).to.equal(0)
      const rf = await loadRealmFile(path.join(dir, 'realm.json'))
      expect(rf.kdcs[0]).to.deep.equal({ host: os.hostname(), as: 88, tgs: 7702, time: 7703, admin: 7704 })
      expect(r.out.text).to.contain(`they will connect to ${os.hostname()}`)
      expect(JSON.parse(await readFile(path.join(dir, 'listen.json'), 'utf8'))).to.deep.include({ host: '0.0.0.0' })
    })

    it('takes --advertise-host in kdc init and in kdc start', async () => {
      const dir = path.join(tmp, 'realm-advertise')
      const r = init(dir, ['--admin-password-file', pwFile, '--host', '0.0.0.0', '--advertise-host', 'kdc.example.test', ...ZERO])
      expect(await r.code, r.err.text).to.equal(0)
      const s = await startUntilListening(['start', '--dir', dir, '--config', cfg, '--host', '127.0.0.1'])
      try {
        expect((await loadRealmFile(path.join(dir, 'realm.json'))).kdcs[0]!.host).to.equal('kdc.example.test')
      } finally {
        expect(await s.stop()).to.equal(0)
      }
      const t = await startUntilListening(['start', '--dir', dir, '--config', cfg, '--host', '127.0.0.1', '--advertise-host', 'other.example.test'])
      try {
        expect((await loadRealmFile(path.join(dir, 'realm.json'))).kdcs[0]!.host).to.equal('other.example.test')
      } finally {
        expect(await t.stop()).to.equal(0)
      }
      const bad = init(path.join(tmp, 'realm-advertise-bad'), ['--admin-password-file', pwFile, '--advertise-host', '0.0.0.0'])
      expect(await bad.code).to.equal(Exit.CONFIG)
      expect(bad.err.text).to.contain('advertiseHost')
    })
  })

  describe('messages (issue 10)', () => {
    it('says once that another kdc runs on the directory, without sending anyone to kadmin', async () => {
      const dir = path.join(tmp, 'realm-a')
      const first = await startUntilListening(['start', '--dir', dir, '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'])
      try {
        const r = run(['start', '--dir', dir, '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'])
        expect(await r.code).to.equal(Exit.CONFIG)
        expect(r.err.text).to.contain('already running')
        expect(r.err.text).to.not.contain('kadmin')
      } finally {
        expect(await first.stop()).to.equal(0)
      }
    })
  })

  describe('usage', () => {
    it('exits 0 on --help', async () => {
      const { value, logged } = await quietConsole(async () => {
        const r = run(['--help'])
        return { code: await r.code, out: r.out.text + r.err.text }
      })
      expect(value.code).to.equal(0)
      expect(logged + value.out).to.match(/init/)
      expect(logged + value.out).to.match(/start/)
    })

    it('exits non-zero on an unknown command with a clear message', async () => {
      const { value } = await quietConsole(async () => {
        const r = run(['bogus'])
        return { code: await r.code, err: r.err.text }
      })
      expect(value.code).to.not.equal(0)
      expect(value.err).to.match(/bogus/)
      expect(value.err).to.match(/--help/)
    })

    it('exits non-zero when no command is given', async () => {
      const { value } = await quietConsole(async () => {
        const r = run([])
        return { code: await r.code, err: r.err.text }
      })
      expect(value.code).to.not.equal(0)
      expect(value.err).to.match(/init or start|command/)
    })
  })

  describe('bin/kdc.ts as a process', () => {
    let child: ChildProcess | undefined
    afterEach(() => {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    })

    /** bin/kdc.ts to its end: exit code and every stderr line. */
    const kdcProcess = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
        const c = spawn(process.execPath, ['--import', 'tsx', 'bin/kdc.ts', ...args], {
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, TESSERA_ADMIN_PASSWORD: '' },
        })
        child = c
        let stdout = ''
        let stderr = ''
        c.stdout.on('data', (d: Buffer) => {
          stdout += d.toString()
        })
        c.stderr.on('data', (d: Buffer) => {
          stderr += d.toString()
        })
        c.once('error', reject)
        c.once('close', (code) => resolve({ code, stdout, stderr }))
      })

    it('says in one line, naming the flag, that a port is in use; --init-if-missing leaves no realm behind', async () => {
      const busy = net.createServer()
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
      const taken = String((busy.address() as net.AddressInfo).port)
      // Console logging on, as an operator runs it: a JSON log line would show here.
      const loud = path.join(tmp, 'loud.json')
      await writeFile(loud, JSON.stringify({ ...FAST_CONFIG, log: { console: true } }))
      try {
        const r = await kdcProcess(['start', '--dir', path.join(tmp, 'realm-a'), '--config', loud, '--as-port', '0', '--tgs-port', taken, '--time-port', '0', '--admin-port', '0'])
        expect(r.code).to.equal(Exit.CONFIG)
        const lines = r.stderr.split('\n').filter((l) => l.length > 0)
        expect(lines, r.stderr).to.have.length(1)
        expect(lines[0]).to.contain(`port ${taken}`)
        expect(lines[0]).to.contain('--tgs-port')
        expect(lines[0]).to.not.contain('{')
        const fresh = path.join(tmp, 'realm-fresh')
        const f = await kdcProcess(['start', '--dir', fresh, '--init-if-missing', '--config', loud, '--as-port', taken, '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'])
        expect(f.code).to.equal(Exit.CONFIG)
        expect(f.stderr.split('\n').filter((l) => l.length > 0), f.stderr).to.have.length(1)
        expect(f.stderr).to.contain('--as-port')
        expect(await stat(path.join(fresh, 'stash')).catch(() => undefined), 'realm left behind').to.equal(undefined)
        expect(f.stderr).to.match(/removed/)
      } finally {
        await new Promise<void>((resolve) => busy.close(() => resolve()))
      }
    })

    it('starts, serves a login, and exits 0 on SIGTERM', async () => {
      const dir = path.join(tmp, 'realm-a')
      child = spawn(
        process.execPath,
        ['--import', 'tsx', 'bin/kdc.ts', 'start', '--dir', dir, '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'],
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TESSERA_ADMIN_PASSWORD: '' } },
      )
      const out = new Capture()
      const err = new Capture()
      child.stdout!.pipe(out)
      child.stderr!.pipe(err)
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child!.once('exit', (code, signal) => resolve({ code, signal })),
      )
      const line = await Promise.race([
        out.waitFor(LISTENING_ANY, 20000),
        exited.then((e) => Promise.reject(new Error(`kdc exited early (${e.code}/${e.signal}): ${err.text}`))),
      ])
      const asPort = Number(line[1])
      const rf = await loadRealmFile(path.join(dir, 'realm.json'))
      expect(rf.kdcs[0]!.as).to.equal(asPort)
      const c = new KdcClient(rf)
      try {
        const tgt = await c.login('admin', ADMIN_PASSWORD)
        expect(tgt.cname).to.deep.equal(['admin'])
      } finally {
        c.close()
      }
      child.kill('SIGTERM')
      const e = await exited
      expect(e, err.text).to.deep.equal({ code: 0, signal: null })
      expect(await portClosed(asPort)).to.equal(true)
    })
  })
})

const LISTENING_ANY = /listening as=[^:]+:(\d+) tgs=[^:]+:(\d+) time=[^:]+:(\d+) admin=[^:]+:(\d+)/
