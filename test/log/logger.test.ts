import { expect } from 'chai'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createLoggers, redact } from '../../src/log/logger.js'

describe('createLoggers', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-log-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('writes one JSON line per security event, time first, files mode 0600', async () => {
    const l = createLoggers({ dir, console: false })
    for (let i = 0; i < 3; i++) l.security.log({ event: 'tgs', client: `u${i}@R`, service: 's@R', peer: '127.0.0.1:1', outcome: 'ok' })
    l.ops.info('started', { realm: 'R' })
    await l.close()
    const lines = (await readFile(path.join(dir, 'security.log'), 'utf8')).trim().split('\n')
    expect(lines).to.have.length(3)
    const first = JSON.parse(lines[0]!) as Record<string, unknown>
    expect(Object.keys(first)).to.deep.equal(['time', 'event', 'client', 'service', 'peer', 'outcome'])
    expect(first.client).to.equal('u0@R')
    expect(Number.isNaN(Date.parse(first.time as string))).to.equal(false)
    for (const f of ['security.log', 'kdc.log']) expect((await stat(path.join(dir, f))).mode & 0o777).to.equal(0o600)
    expect(await readFile(path.join(dir, 'kdc.log'), 'utf8')).to.contain('started')
  })

  it('never writes key bytes or fields named like secrets, in either log', async () => {
    const sink: unknown[] = []
    const l = createLoggers({ dir, console: false, securitySink: sink as never })
    const key = new Uint8Array(32).fill(0xab)
    l.security.log({ event: 'as', outcome: 'fail', reason: 'bad', password: 'hunter2', key, sessionKey: 'c2VjcmV0' })
    l.ops.error('oops', { password: 'hunter2', key, ticket: 'dGlja2V0', peer: 'p' })
    await l.close()
    const text = (await readFile(path.join(dir, 'security.log'), 'utf8')) + (await readFile(path.join(dir, 'kdc.log'), 'utf8'))
    for (const bad of ['hunter2', 'c2VjcmV0', 'dGlja2V0', 'abab', '171,171']) expect(text).to.not.contain(bad)
    expect(text).to.contain('"reason":"bad"')
    expect(JSON.stringify(sink)).to.not.contain('hunter2')
  })

  it('redact keeps numbers and booleans of secret-looking names (counts, flags) and nested safe fields', () => {
    expect(redact({ keyCount: 3, passwordExpired: true, nested: { secret: 'x', ok: 'y' } })).to.deep.equal({
      keyCount: 3,
      passwordExpired: true,
      nested: { ok: 'y' },
    })
  })
})
