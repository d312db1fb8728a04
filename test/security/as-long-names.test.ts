/**
 * AS_REQs naming principals that cannot exist (names over the database's limits):
 * the KDC must answer them like any unknown principal, with a typed error, and
 * without an internal error in its log.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { MsgType } from '../../proto/msg-types.js'
import { randomKey } from '../../src/crypto/index.js'
import { asReq, expectKrbError, preauth, useTestKdc } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('AS exchange with over-long principal names (security)', () => {
  useProcessGuards()
  const t = useTestKdc()
  const long8 = Array.from({ length: 8 }, (_, i) => String.fromCharCode(97 + i).repeat(255))
  const long4 = Array.from({ length: 4 }, (_, i) => String.fromCharCode(97 + i).repeat(255))

  for (const [label, cname] of [
    ['8 components of 255 characters', long8],
    ['4 components of 255 characters (just over 1024 bytes)', long4],
  ] as const) {
    it(`answers an AS_REQ without pre-auth for ${label} with a typed refusal, not KRB_ERR_GENERIC`, async () => {
      const ch = await t.channel('as')
      const m = await ch.request(asReq([...cname]))
      if (m.t !== MsgType.KRB_ERROR) throw new Error(`expected a KRB_ERROR, got type ${m.t}`)
      // Such a name cannot exist: "pre-auth required" (like any unknown name) or "no such principal" are both fine.
      expect(m.code, `reply code (text: ${m.text})`).to.be.oneOf([
        ErrorCode.KDC_ERR_PREAUTH_REQUIRED,
        ErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN,
      ])
    })
  }

  it('answers such a request with pre-auth with PREAUTH_FAILED', async () => {
    const ch = await t.channel('as')
    expectKrbError(await ch.request(asReq(long8, { padata: preauth(randomKey()) })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
  })

  it('logs no internal error for them', () => {
    const bad = t.opsErrors.filter((l) => /internal error|not a valid message/.test(l))
    expect(bad, bad.join('\n')).to.deep.equal([])
  })
})
