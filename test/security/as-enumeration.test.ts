/**
 * Principal enumeration through the AS: the PREAUTH_REQUIRED hints of an existing
 * principal must not tell it apart from a name that does not exist, also after the
 * principal's key has changed.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { defaultSalt, passwordToKey } from '../../src/crypto/index.js'
import { asReq, expectKrbError, REALM, useTestKdc } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('AS pre-auth hints and enumeration (security)', () => {
  useProcessGuards()
  const t = useTestKdc()

  it('gives a principal whose password changed the same hints as a name that does not exist', async () => {
    await t.kdc.addPrincipal('changer', { password: 'first password' })
    // A password change: kvno 2, same salt and KDF, the old version retired.
    const salt = defaultSalt(REALM, 'changer')
    const kdf = { ...t.kdc.config.kdf }
    const key = await passwordToKey('second password', salt, kdf)
    await t.kdc.db.update(
      { realm: REALM, components: ['changer'] },
      (r) => {
        r.keys[0]!.retiresAt = Date.now() - 1
        r.keys.push({ kvno: 2, key, kdf, salt, createdAt: Date.now() })
      },
      'test',
    )
    const ch = await t.channel('as')
    const known = expectKrbError(await ch.request(asReq(['changer'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    const unknown = expectKrbError(await ch.request(asReq(['chang3r'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    expect(known.text).to.equal(unknown.text)
    expect(known.edata?.kdf).to.deep.equal(unknown.edata?.kdf)
    expect(known.edata?.kvno, 'kvno tells an existing principal from an unknown name').to.equal(unknown.edata?.kvno)
    // and the client still logs in with the new password
    await t.client().login('changer', 'second password')
  })
})
