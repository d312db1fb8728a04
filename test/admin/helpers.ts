/** Fixtures of the admin tests: a realm in a PrincipalDb (memory-level or LevelDB), its audit log, ACL and context. */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Acl } from '../../src/admin/acl.js'
import { AUDIT_FILE, AuditLog, auditKey } from '../../src/admin/audit.js'
import { type Actor, AdminContext, type KeyEvent } from '../../src/admin/operations.js'
import { ed25519KeyPair, type KdfParams, randomKey, x25519KeyPair } from '../../src/crypto/index.js'
import { parsePrincipal } from '../../src/db/names.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { newPrincipalRecord } from '../../src/kdc/realm.js'

export const REALM = 'EXAMPLE.COM'
/** Cheap scrypt for tests. */
export const FAST_KDF: KdfParams = { alg: 'scrypt', N: 1024, r: 8, p: 1 }
export const HOUR = 3600_000

/** The ACL of the authorisation matrix. */
export const MATRIX_ACL = `
admin        *e
helpdesk     ci    *
viewer       il
svcadmin     xe    svc/*
restricted   am    *      +requires_preauth -allow_svr -maxlife 1h -policy users
`

export interface Realm {
  dir: string
  db: PrincipalDb
  audit: AuditLog
  ctx: AdminContext
  masterKey: Uint8Array
  key: Uint8Array
  events: KeyEvent[]
  clock: { now: number }
  location?: string
  /** Reopen db, audit log and context (on-disk backend only), as after a restart. */
  reopen(): Promise<void>
  close(): Promise<void>
}

export const p = (s: string) => parsePrincipal(s, REALM)

/** A remote actor through kadmin/admin with an initial ticket. */
export function as(name: string, o: { via?: 'admin' | 'changepw'; initial?: boolean } = {}): Actor {
  return { kind: 'principal', principal: p(name), via: o.via ?? 'admin', initial: o.initial ?? true, peer: '127.0.0.1:5000' }
}
export const LOCAL: Actor = { kind: 'local', user: 'root' }

/** Users and services of the matrix, each with a password (`<name>-Passw0rd!`) or a random key. */
export async function makeRealm(backend: 'memory' | 'level', acl = MATRIX_ACL): Promise<Realm> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-admin-'))
  const masterKey = randomKey()
  const key = auditKey(masterKey)
  const location = backend === 'level' ? join(dir, 'db') : undefined
  const clock = { now: 1_700_000_000_000 }
  const events: KeyEvent[] = []
  const open = async () => {
    const db = await PrincipalDb.open(location === undefined ? { masterKey } : { location, masterKey })
    const audit = await AuditLog.open({ file: join(dir, AUDIT_FILE), db, key, now: () => clock.now })
    const ctx = new AdminContext({
      db,
      realm: REALM,
      acl: Acl.parse(acl, { realm: REALM }),
      audit,
      kdf: FAST_KDF,
      maxLife: 10 * HOUR,
      maxRenewableLife: 7 * 24 * HOUR,
      now: () => clock.now,
      onEvent: (e) => events.push(e),
    })
    return { db, audit, ctx }
  }
  const first = await open()
  await first.db.putRealm({ realm: REALM, createdAt: clock.now, transportKey: x25519KeyPair(), signingKey: ed25519KeyPair() })
  const base = { realm: REALM, kdf: FAST_KDF, maxLife: 10 * HOUR, maxRenewableLife: 7 * 24 * HOUR, by: 'kdc init', now: clock.now }
  for (const c of [['krbtgt', REALM], ['kadmin', 'admin'], ['kadmin', 'changepw'], ['svc', 'web'], ['svc', 'db'], ['host', 'a']])
    await first.db.create(await newPrincipalRecord({ ...base, components: c }))
  for (const u of ['admin', 'helpdesk', 'viewer', 'svcadmin', 'restricted', 'alice', 'bob'])
    await first.db.create(await newPrincipalRecord({ ...base, components: [u], password: `${u}-Passw0rd!` }))
  const r: Realm = {
    dir,
    ...first,
    masterKey,
    key,
    events,
    clock,
    async reopen() {
      await r.audit.close()
      await r.db.close()
      Object.assign(r, await open())
    },
    async close() {
      await r.audit.close().catch(() => {})
      await r.db.close().catch(() => {})
      await rm(dir, { recursive: true, force: true })
    },
  }
  if (location !== undefined) r.location = location
  return r
}
