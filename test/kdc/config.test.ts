/** KdcConfig: defaults, merging, and a clear refusal of every bad or unknown setting. */
import { expect } from 'chai'
import { DEFAULT_KDC_CONFIG, type KdcConfigInput, resolveKdcConfig } from '../../src/kdc/config.js'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'

function refusal(input: unknown): string {
  try {
    resolveKdcConfig(input as KdcConfigInput)
  } catch (err) {
    expect(err).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_CONFIG)
    return (err as Error).message
  }
  throw new Error(`accepted ${JSON.stringify(input)}`)
}

describe('resolveKdcConfig', () => {
  it('gives the defaults for an empty input, resumption on with 10-minute tickets', () => {
    const c = resolveKdcConfig({})
    expect(c).to.deep.equal({ ...DEFAULT_KDC_CONFIG })
    expect(c.resumption).to.deep.equal({ enabled: true, lifetimeS: 600, windowMs: 5000, maxRecent: 200_000 })
  })

  it('merges nested groups key by key', () => {
    const c = resolveKdcConfig({ resumption: { enabled: false }, limits: { maxConnections: 10 } })
    expect(c.resumption).to.deep.equal({ ...DEFAULT_KDC_CONFIG.resumption, enabled: false })
    expect(c.limits.maxConnections).to.equal(10)
    expect(c.limits.idleTimeoutMs).to.equal(DEFAULT_KDC_CONFIG.limits.idleTimeoutMs)
  })

  it('refuses unknown settings, top-level and nested, naming them', () => {
    expect(refusal({ maxClockSkew: 1 })).to.include('"maxClockSkew"')
    expect(refusal({ limits: { maxConection: 5 } })).to.include('"limits.maxConection"')
    expect(refusal({ resumption: { lifetime: 60 } })).to.include('"resumption.lifetime"')
    expect(refusal({ ports: { kdc: 88 } })).to.include('"ports.kdc"')
    expect(refusal({ log: { file: 'x' } })).to.include('"log.file"')
    expect(refusal({ resumption: [] })).to.include('resumption must be an object')
  })

  it('refuses out-of-range resumption settings', () => {
    expect(refusal({ resumption: { enabled: 'yes' } })).to.include('resumption.enabled')
    expect(refusal({ resumption: { lifetimeS: 5 } })).to.include('resumption.lifetimeS')
    expect(refusal({ resumption: { windowMs: 10 } })).to.include('resumption.windowMs')
    expect(refusal({ resumption: { maxRecent: 1.5 } })).to.include('resumption.maxRecent')
  })

  it('accepts log.dir, which has no default', () => {
    expect(resolveKdcConfig({ log: { dir: '/var/log/tessera' } }).log.dir).to.equal('/var/log/tessera')
  })

  it('advertises this machine\'s name, never 0.0.0.0 or ::, unless advertiseHost says (issue 10)', async () => {
    const { advertisedHost } = await import('../../src/kdc/config.js')
    const os = await import('node:os')
    expect(advertisedHost(resolveKdcConfig({ host: '0.0.0.0' }))).to.equal(os.hostname())
    expect(advertisedHost(resolveKdcConfig({ host: '::' }))).to.equal(os.hostname())
    expect(advertisedHost(resolveKdcConfig({ host: '10.1.2.3' }))).to.equal('10.1.2.3')
    expect(advertisedHost(resolveKdcConfig({ host: '0.0.0.0', advertiseHost: 'kdc.example.test' }))).to.equal('kdc.example.test')
    expect(refusal({ advertiseHost: '0.0.0.0' })).to.include('advertiseHost')
    expect(refusal({ advertiseHost: '' })).to.include('advertiseHost')
  })

  it('leaves the HTTP ops listener off by default, and binds it to 127.0.0.1 whatever host is', () => {
    expect(resolveKdcConfig({}).http).to.equal(undefined)
    expect(resolveKdcConfig({ host: '0.0.0.0', http: { port: 9188 } }).http).to.deep.equal({ host: '127.0.0.1', port: 9188 })
    expect(resolveKdcConfig({ http: { host: '10.0.0.5', port: 0 } }).http).to.deep.equal({ host: '10.0.0.5', port: 0 })
  })

  it('refuses an ops listener without a port, on a protocol port, or with unknown keys', () => {
    expect(refusal({ http: { host: '127.0.0.1' } })).to.include('http.port')
    expect(refusal({ http: { port: 7702 } })).to.include('the tgs listener')
    expect(refusal({ http: { port: 9188, path: '/m' } })).to.include('"http.path"')
    expect(refusal({ http: { port: 70000 } })).to.include('http.port')
    expect(refusal({ http: { host: '', port: 1 } })).to.include('http.host')
  })
})
