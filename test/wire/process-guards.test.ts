import { expect } from 'chai'
import { createProcessGuard } from '../helpers/wire-guards.js'

// mocha swallows unhandled rejections from test code; this checks the guard the wire
// suites rely on actually sees them.
describe('wire process guards', () => {
  it('record an unhandled rejection while installed, once', async () => {
    const guard = createProcessGuard()
    guard.install()
    try {
      const reason = new Error('nobody handles me')
      void Promise.reject(reason)
      await new Promise((r) => setImmediate(r))
      await new Promise((r) => setImmediate(r))
      expect(guard.take()).to.deep.equal([reason])
      expect(guard.take()).to.deep.equal([])
    } finally {
      guard.uninstall()
    }
  })

  it('stop recording once uninstalled', async () => {
    const guard = createProcessGuard()
    const before = process.listenerCount('unhandledRejection')
    guard.install()
    expect(process.listenerCount('unhandledRejection')).to.equal(before + 1)
    guard.uninstall()
    expect(process.listenerCount('unhandledRejection')).to.equal(before)
    void Promise.reject(new Error('seen by mocha only'))
    await new Promise((r) => setImmediate(r))
    expect(guard.take()).to.deep.equal([])
  })
})
