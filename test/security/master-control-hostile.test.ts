/**
 * The KDC's control socket (src/admin/master-control.ts) against hostile local input: garbage,
 * overlong or malformed requests get a refusal and never crash the daemon; a socket or
 * directory whose mode was widened is refused by the daemon and by the CLI; another Unix user
 * cannot connect at all (run as root: the test switches to uid 65534).
 */
import { spawn } from 'node:child_process'
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { CONTROL_DIR, CONTROL_SOCKET } from '../../src/admin/master-control.js'
import { startKdc } from '../../src/admin/start.js'
import { Exit } from '../../src/cli/common.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { runKdcCli } from '../helpers/kdc-cli-run.js'

const CONFIG = { kdf: { N: 1024 }, ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false } }

/** Send `bytes` (then half-close unless `keepOpen`), and collect what comes back until the daemon closes. */
function exchange(sock: string, bytes: Uint8Array, keepOpen = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock)
    let got = ''
    c.setEncoding('utf8')
    c.on('data', (d: string) => {
      got += d
    })
    c.on('error', reject)
    c.on('close', () => resolve(got))
    c.on('connect', () => {
      c.write(bytes)
      if (!keepOpen) c.end()
    })
  })
}

const kdc = runKdcCli

describe('master-key control socket (hostile)', function () {
  this.timeout(60000)
  let dir: string
  let k: RunningKdc
  let sock: string

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-mkctl-'))
    await initRealmDir({ dir, realm: 'MKCTL.TEST', adminPassword: 'admin password 1', config: resolveKdcConfig(CONFIG) })
    k = await startKdc({ dir, config: CONFIG, log: false })
    await k.addPrincipal('alice', { password: 'alice pw 1' })
    sock = path.join(dir, CONTROL_DIR, CONTROL_SOCKET)
  })
  after(async () => {
    await k?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('keeps the control directory 0700 and the socket 0600', async () => {
    expect((await stat(path.join(dir, CONTROL_DIR))).mode & 0o777).to.equal(0o700)
    const s = await stat(sock)
    expect(s.isSocket()).to.equal(true)
    expect(s.mode & 0o777).to.equal(0o600)
  })

  it('answers garbage, malformed and overlong requests with TESSERA_VALIDATION and keeps serving', async () => {
    const cases: [string, Uint8Array][] = [
      ['not JSON', Buffer.from('hello\n')],
      ['an array', Buffer.from('[1,2,3]\n')],
      ['invalid UTF-8', Buffer.from([0xff, 0xfe, 0x7b, 0x0a])],
      ['an unknown step', Buffer.from('{"v":1,"op":"master-key","step":"drop","user":"x"}\n')],
      ['a wrong version', Buffer.from('{"v":2,"op":"master-key","step":"status","user":"x"}\n')],
      ['__proto__', Buffer.from('{"v":1,"op":"master-key","step":"status","user":"x","__proto__":{"admin":true}}\n')],
      ['an extra field', Buffer.from('{"v":1,"op":"master-key","step":"status","user":"x","dir":"/"}\n')],
      ['a control character in user', Buffer.from('{"v":1,"op":"master-key","step":"add","user":"a\\nb"}\n')],
      ['a bad kvno', Buffer.from('{"v":1,"op":"master-key","step":"use","user":"x","kvno":-1}\n')],
      ['a huge batch', Buffer.from('{"v":1,"op":"master-key","step":"reseal","user":"x","batchSize":1e9}\n')],
      ['an overlong line', Buffer.alloc(5000, 0x61)],
    ]
    for (const [what, bytes] of cases) {
      const got = await exchange(sock, bytes)
      const m = JSON.parse(got.trim()) as { ok: boolean; code: string }
      expect(m, what).to.deep.equal({ ...m, ok: false, code: 'TESSERA_VALIDATION' })
    }
    // Random bytes, connections closed at once or half-way through a line.
    let seed = 7
    for (let i = 0; i < 30; i++) {
      const b = Buffer.alloc(1 + ((i * 37) % 300))
      for (let j = 0; j < b.length; j++) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        b[j] = seed & 0xff
      }
      if (i % 3 === 0) {
        // Written, then the connection dropped without waiting for anything.
        await new Promise<void>((resolve, reject) => {
          const c = net.connect(sock, () => {
            c.write(b)
            c.destroy()
            resolve()
          })
          c.on('error', reject)
        })
        continue
      }
      const got = (await exchange(sock, b)).trim().split('\n')[0]!
      expect(JSON.parse(got), `random case ${i}`).to.deep.include({ ok: false, code: 'TESSERA_VALIDATION' })
    }
    // Nothing changed, and the daemon still answers on both channels.
    const st = await kdc(['master-key', 'status', '--dir', dir, '--json'])
    expect(st.code, st.err).to.equal(0)
    expect(JSON.parse(st.out)).to.deep.include({ via: 'kdc', stash: [1] })
    const c = new KdcClient(k.realmFile)
    try {
      await c.login('alice', 'alice pw 1')
    } finally {
      c.close()
    }
  })

  it('refuses a socket whose mode was widened, in the daemon and in the CLI', async () => {
    await chmod(sock, 0o666)
    try {
      const raw = JSON.parse((await exchange(sock, Buffer.from('{"v":1,"op":"master-key","step":"add","user":"x"}\n'))).trim())
      expect(raw).to.deep.include({ ok: false, code: 'TESSERA_CONFIG' })
      const r = await kdc(['master-key', 'add', '--dir', dir])
      expect(r.code, r.err).to.not.equal(Exit.OK)
      expect(r.err).to.match(/refusing the kdc control channel/)
    } finally {
      await chmod(sock, 0o600)
    }
    // Nothing was added.
    expect(JSON.parse((await kdc(['master-key', 'status', '--dir', dir, '--json'])).out).stash).to.deep.equal([1])
  })

  it('does not let another Unix user connect', async function () {
    if (process.getuid?.() !== 0) this.skip()
    // The realm directory made traversable: the 0700 control directory alone keeps uid 65534 out.
    await chmod(dir, 0o755)
    try {
      const script = `const c = require('node:net').connect(${JSON.stringify(sock)}); c.on('connect', () => { console.log('CONNECTED'); c.end() }); c.on('error', (e) => console.log(e.code))`
      const out = await new Promise<string>((resolve, reject) => {
        const p = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] })
        let s = ''
        p.stdout.on('data', (b: Buffer) => {
          s += b.toString()
        })
        p.on('error', reject)
        p.on('exit', () => resolve(s.trim()))
      })
      expect(out).to.equal('EACCES')
    } finally {
      await chmod(dir, 0o700)
    }
  })

  it('offers no socket when the control directory is not private, and the CLI says why', async () => {
    const d2 = await mkdtemp(path.join(os.tmpdir(), 'tessera-mkctl2-'))
    try {
      await initRealmDir({ dir: d2, realm: 'MKCTL2.TEST', adminPassword: 'admin password 1', config: resolveKdcConfig(CONFIG) })
      await mkdir(path.join(d2, CONTROL_DIR), { mode: 0o755 })
      await chmod(path.join(d2, CONTROL_DIR), 0o755)
      const k2 = await startKdc({ dir: d2, config: CONFIG, log: false })
      try {
        const made = await stat(path.join(d2, CONTROL_DIR, CONTROL_SOCKET)).then(
          () => true,
          () => false,
        )
        expect(made).to.equal(false)
        const r = await kdc(['master-key', 'add', '--dir', d2])
        expect(r.code, r.err).to.not.equal(Exit.OK)
        expect(r.err).to.match(/refusing the kdc control channel .*mode 0755/)
        // The KDC serves on.
        const c = new KdcClient(k2.realmFile)
        try {
          await c.login('admin', 'admin password 1')
        } finally {
          c.close()
        }
      } finally {
        await k2.close()
      }
    } finally {
      await rm(d2, { recursive: true, force: true })
    }
  })
})
