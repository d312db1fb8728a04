/** A KDC whose clock differs from the host clock (injected `now`): every time it sends is its own. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { ADMIN_PASSWORD, expectKrb, HOUR, startTestKdc, TestClock } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('KDC with an injected clock (integration)', function () {
  this.timeout(20000)
  useProcessGuards()

  it('puts its own time, not the host time, in KRB_ERROR.stime of a skew error', async () => {
    const kdcClock = new TestClock()
    kdcClock.offset = HOUR
    const t = await startTestKdc({ now: kdcClock.now })
    try {
      const c = t.client({ adjustClockOnSkew: false })
      const err = await expectKrb(c.login('admin', ADMIN_PASSWORD), ErrorCode.KRB_AP_ERR_SKEW)
      expect(Math.abs(err.serverTime! - kdcClock.now()), 'stime is the KDC clock').to.be.below(5000)
      expect(err.message).to.match(/your clock is 1 h 0 min behind the KDC/)
    } finally {
      await t.close()
    }
  })
})
