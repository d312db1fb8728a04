/** startKdc with the admin service on its admin listener: what `kdc start` runs and what the public API exports. */
import { type RunningKdc, type StartKdcOptions, startKdc as startKdcOnly } from '../kdc/kdc.js'
import { adminService } from './listener.js'

/**
 * Start a KDC (src/kdc/kdc.ts startKdc) whose admin listener serves kadmin (src/admin): the
 * realm directory's kadm5.acl and audit.log, or, in memory, an ACL giving the realm's admin
 * everything. `admin` in the options replaces the service.
 */
export function startKdc(opts: StartKdcOptions = {}): Promise<RunningKdc> {
  return startKdcOnly({ admin: adminService(), ...opts })
}
