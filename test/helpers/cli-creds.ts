/** Hand-made credentials for credential-cache tests (light: no KDC, no CLI imports). */
import type { Credentials } from '../../src/client/kdc-client.js'
import { randomBytes, randomKey } from '../../src/crypto/index.js'

/** Realm of the in-memory test KDCs (startKdc's default). */
export const CLI_REALM = 'TESSERA.TEST'

/** Credentials for `service` (default krbtgt/CLI_REALM) whose ticket is opaque random bytes. */
export function fakeCreds(over: Partial<Credentials> & { service?: string[] } = {}, now: number = Date.now()): Credentials {
  const { service, ...rest } = over
  const sname = service ?? ['krbtgt', CLI_REALM]
  return {
    crealm: CLI_REALM,
    cname: ['alice'],
    srealm: CLI_REALM,
    sname,
    ticket: { realm: CLI_REALM, sname, kvno: 1, enc: randomBytes(120) },
    sessionKey: randomKey(),
    flags: 0,
    authtime: now,
    starttime: now,
    endtime: now + 3600_000,
    ...rest,
  }
}
