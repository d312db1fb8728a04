/** Assertions on refused calls, shared by the admin and security suites. */
import { expect } from 'chai'
import { AdminError } from '../../src/client/admin-client.js'
import { KrbProtocolError } from '../../src/errors.js'

/** `p` must reject with an AdminError of `code` (an AdminResult refusal); returns it. */
export async function expectAdminError(p: Promise<unknown>, code: number): Promise<AdminError> {
  try {
    await p
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(AdminError)
    expect((err as AdminError).code, (err as Error).message).to.equal(code)
    return err as AdminError
  }
  throw new Error(`expected AdminError ${code}, but the call succeeded`)
}

/** `p` must reject with a KRB_ERROR (KrbProtocolError); returns it. */
export async function expectKrbError(p: Promise<unknown>): Promise<KrbProtocolError> {
  try {
    await p
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(KrbProtocolError)
    return err as KrbProtocolError
  }
  throw new Error('expected a KRB_ERROR, but the call succeeded')
}
