/**
 * `kdc` as a service: bin/kdc.ts as a real child process with its ops listener (SIGHUP
 * reloads and reopens the logs, SIGTERM drains), `kdc status`, and the systemd unit of docs/examples.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { main } from '../../src/cli/kdc.js'
import { Exit } from '../../src/cli/common.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { loadRealmFile } from '../../src/krb/realm-file.js'
import { tesseraVersion } from '../../src/ops/version.js'
import { ADMIN_PASSWORD, FAST_CONFIG } from '../helpers/kdc-helpers.js'
import { readyz, scrape } from '../helpers/ops-http.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const UNIT = path.join(ROOT, 'docs/examples/tessera-kdc.service')
const LISTENING = /listening as=127\.0\.0\.1:(\d+) tgs=127\.0\.0\.1:(\d+) time=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)\n/

/** `kdc ...` in-process: exit code and output. */
async function kdc(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough()
  const err = new PassThrough()
  let o = ''
  let e = ''
  out.on('data', (d: Buffer) => {
    o += d.toString()
  })
  err.on('data', (d: Buffer) => {
    e += d.toString()
  })
  const code = await main(argv, { env, stdout: out, stderr: err })
  await new Promise((r) => setImmediate(r))
  return { code, out: o, err: e }
}

/** Poll `fn` until it returns a value, at most `ms`. */
async function eventually<T>(what: string, fn: () => Promise<T | undefined>, ms = 10000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

const fileHas = (file: string, text: string) => async () => ((await readFile(file, 'utf8')).includes(text) ? true : undefined)

describe('kdc as a service (integration)', function () {
  this.timeout(60000)
  useProcessGuards()
  let tmp: string
  let child: ChildProcess | undefined
  beforeEach(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-svc-'))
  })
  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    child = undefined
    await rm(tmp, { recursive: true, force: true })
  })

  it('under SIGHUP reloads its config and reopens its logs (a rotated file gets no more lines); kdc status follows it up and down', async () => {
    const dir = path.join(tmp, 'realm')
    const cfg = path.join(tmp, 'kdc.json')
    await writeFile(cfg, JSON.stringify(FAST_CONFIG))
    const init = await kdc(['init', '--realm', 'SVC.TEST', '--dir', dir, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0'], {
      TESSERA_ADMIN_PASSWORD: ADMIN_PASSWORD,
    })
    expect(init.code, init.err).to.equal(0)
    expect((await kdc(['status', '--dir', dir])).code, 'not running yet').to.equal(Exit.UNREACHABLE)

    child = spawn(process.execPath, ['--import', 'tsx', 'bin/kdc.ts', 'start', '--dir', dir, '--config', cfg, '--http-port', '0'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TESSERA_ADMIN_PASSWORD: '' },
    })
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child!.once('exit', (code, signal) => resolve({ code, signal })),
    )
    const m = await eventually('the listening line', async () => stdout.match(LISTENING) ?? undefined, 30000)
    const asPort = Number(m[1])
    const httpPort = Number(m[5])

    // kdc status: up and ready, with what /readyz knows.
    const st = await kdc(['status', '--dir', dir])
    expect(st.code, st.out + st.err).to.equal(Exit.OK)
    expect(st.out).to.match(/^kdc: up, ready$/m)
    expect(st.out).to.match(/^realm +SVC\.TEST$/m)
    expect(st.out).to.match(new RegExp(`^version +${tesseraVersion().replaceAll('.', '\\.')}$`, 'm'))
    expect(st.out).to.match(/^principals +4$/m)
    expect(st.out).to.contain(`as=127.0.0.1:${asPort}`)
    expect(st.out).to.contain(`http=127.0.0.1:${httpPort}`)
    const js = JSON.parse((await kdc(['status', '--dir', dir, '--json'])).out) as Record<string, unknown>
    expect(js).to.include({ up: true, ready: true, realm: 'SVC.TEST', principals: 4, pid: child.pid })
    expect(js.uptimeS).to.be.a('number')

    const rf = await loadRealmFile(path.join(dir, 'realm.json'))
    const c = new KdcClient(rf)
    try {
      await c.login('admin', ADMIN_PASSWORD)
      const logDir = path.join(dir, 'log')
      await eventually('the first login in security.log', fileHas(path.join(logDir, 'security.log'), '"outcome":"ok"'))
      // logrotate: rename, then SIGHUP. Meanwhile the config changed: a per-peer cap of 1.
      await rename(path.join(logDir, 'security.log'), path.join(logDir, 'security.log.1'))
      await rename(path.join(logDir, 'kdc.log'), path.join(logDir, 'kdc.log.1'))
      await writeFile(cfg, JSON.stringify({ ...FAST_CONFIG, limits: { maxConnectionsPerPeer: 1 } }))
      child.kill('SIGHUP')
      const reloaded = await eventually('the reload line in the new kdc.log', async () => {
        const text = await readFile(path.join(logDir, 'kdc.log'), 'utf8')
        return text.includes('"reloaded"') ? text : undefined
      })
      expect(reloaded).to.contain('"applied":["limits"]')
      // On the connection opened before the reload (the new cap applies to new ones).
      await c.login('admin', 'not the password').catch(() => undefined)
      await eventually('the failed login in the new security.log', fileHas(path.join(logDir, 'security.log'), '"outcome":"fail"'))
      expect(await readFile(path.join(logDir, 'security.log.1'), 'utf8')).to.not.contain('"outcome":"fail"')
      expect(await readFile(path.join(logDir, 'kdc.log.1'), 'utf8')).to.not.contain('reloaded')
      expect((await stat(path.join(logDir, 'security.log'))).mode & 0o777).to.equal(0o600)

      // The new cap is live: a second connection from 127.0.0.1 is refused, and counted.
      c.close()
      await eventually('the client connection gone', async () =>
        (await scrape(httpPort)).value('tessera_connections_open', { listener: 'as' }) === 0 ? true : undefined,
      )
      const a = net.connect({ host: '127.0.0.1', port: asPort })
      a.on('error', () => {})
      try {
        await eventually('the first connection open', async () =>
          (await scrape(httpPort)).value('tessera_connections_open', { listener: 'as' }) === 1 ? true : undefined,
        )
        const b = net.connect({ host: '127.0.0.1', port: asPort })
        b.on('error', () => {})
        b.resume()
        await new Promise((resolve) => b.once('close', resolve))
        expect((await scrape(httpPort)).value('tessera_connections_refused_total', { listener: 'as', reason: 'peer_limit' })).to.equal(1)
      } finally {
        a.destroy()
      }
      expect((await readyz(httpPort)).status).to.equal(200)
    } finally {
      c.close()
    }

    child.kill('SIGTERM')
    expect(await exited, stderr).to.deep.equal({ code: 0, signal: null })
    expect(existsSync(path.join(dir, 'run.json')), 'run.json removed on stop').to.equal(false)
    const down = await kdc(['status', '--dir', dir])
    expect(down.code).to.equal(Exit.UNREACHABLE)
    expect(down.out).to.match(/not running/)
  })

  it('names --http-port when the ops listener port is taken, and leaves nothing bound', async () => {
    const busy = net.createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const taken = (busy.address() as net.AddressInfo).port
    try {
      const dir = path.join(tmp, 'realm')
      const cfg = path.join(tmp, 'kdc.json')
      await writeFile(cfg, JSON.stringify(FAST_CONFIG))
      const r = await kdc(
        ['start', '--dir', dir, '--init-if-missing', '--config', cfg, '--as-port', '0', '--tgs-port', '0', '--time-port', '0', '--admin-port', '0', '--http-port', String(taken)],
      )
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.err).to.contain(`port ${taken}`)
      expect(r.err).to.contain('HTTP ops listener')
      expect(r.err).to.contain('--http-port N')
    } finally {
      await new Promise<void>((resolve) => busy.close(() => resolve()))
    }
  })

  it('refuses an ops port equal to a protocol port, and a port flag out of range', async () => {
    const cfg = path.join(tmp, 'kdc.json')
    await writeFile(cfg, JSON.stringify(FAST_CONFIG))
    const same = await kdc(['start', '--dir', path.join(tmp, 'r'), '--config', cfg, '--as-port', '7788', '--http-port', '7788'])
    expect(same.code).to.equal(Exit.CONFIG)
    expect(same.err).to.match(/http\.port 7788 is the as listener's port/)
    const range = await kdc(['start', '--dir', path.join(tmp, 'r'), '--http-port', '70000'])
    expect(range.code).to.equal(Exit.USAGE)
  })

  describe('docs/examples/tessera-kdc.service', () => {
    it('passes systemd-analyze verify (where systemd is installed) without a warning', async function () {
      const tool = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p))
      if (!tool) this.skip()
      const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
        execFile(tool!, ['verify', UNIT], (err, _out, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stderr })),
      )
      expect(r.code, r.stderr).to.equal(0)
      // verify exits 0 on an unparsable setting ("..., ignoring"): any line about the unit fails too.
      expect(r.stderr.split('\n').filter((l) => l.includes('tessera-kdc.service')), r.stderr).to.deep.equal([])
    })

    it('runs as an unprivileged user with only CAP_NET_BIND_SERVICE, waits for /readyz, drains on SIGTERM, reloads on SIGHUP', async () => {
      const text = await readFile(UNIT, 'utf8')
      const settings = new Map<string, string[]>()
      for (const line of text.split('\n')) {
        const m = /^([A-Za-z]+)=(.*)$/.exec(line)
        if (m) settings.set(m[1]!, [...(settings.get(m[1]!) ?? []), m[2]!])
      }
      const one = (k: string) => {
        const v = settings.get(k)
        expect(v, k).to.have.length(1)
        return v![0]!
      }
      expect(one('User')).to.not.equal('root')
      expect(one('Type')).to.equal('exec')
      expect(one('AmbientCapabilities')).to.equal('CAP_NET_BIND_SERVICE')
      expect(one('CapabilityBoundingSet')).to.equal('CAP_NET_BIND_SERVICE')
      expect(one('NoNewPrivileges')).to.equal('yes')
      expect(one('KillSignal')).to.equal('SIGTERM')
      expect(one('ExecReload')).to.equal('/bin/kill -HUP $MAINPID')
      expect(settings.has('MemoryDenyWriteExecute'), 'V8 needs W+X pages').to.equal(false)
      const start = one('ExecStart').split(' ')
      const post = one('ExecStartPost').split(' ')
      expect(start.slice(2, 3)).to.deep.equal(['start'])
      expect(post.slice(2, 3)).to.deep.equal(['status'])
      expect(post).to.include('--wait')
      // The unit's own argument lists are accepted by this kdc (strict yargs: no unknown flag).
      const dir = path.join(tmp, 'none')
      const argv = post.slice(2).map((a) => (a === '/var/lib/tessera' ? dir : a === '30' ? '0' : a))
      const r = await kdc(argv)
      expect(r.code, r.err).to.equal(Exit.UNREACHABLE)
      expect(one('ReadWritePaths')).to.equal(start[start.indexOf('--dir') + 1])
    })
  })
})
