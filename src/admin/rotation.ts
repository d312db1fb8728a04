/**
 * Key rotation (issue 12): `rotate` (a new random version, the old ones kept through a grace,
 * optionally staged ahead of its activation), `purgekeys` (MIT kadm5_purgekeys, refusing
 * versions that may still open a valid ticket unless forced) and the scheduler that runs
 * per-principal rotation schedules (modprinc rotateEvery / stageAhead / grace). Every change
 * is one atomic update of the record carrying its audit anchor; the KDC decides which version
 * seals and which opens by the clock (src/db/key-states.ts), so no step has to land at an
 * exact time and a crash between steps leaves a record whose every state is usable.
 */
import { randomKey } from '../crypto/index.js'
import { keyStateAt, sealingIndexAt, sealingKeyAt, ticketsEndBy } from '../db/key-states.js'
import { formatPrincipal, principalKey } from '../db/names.js'
import type { KeyVersion, PrincipalId, PrincipalRecord } from '../db/types.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import type { KeytabEntry } from '../krb/keytab.js'
import type { AuditEvent } from './audit.js'
import { addKeyVersion, nextRotationStep, type RotationStep, revokeSessions } from './key-lifecycle.js'
import {
  type Actor,
  type AdminContext,
  actorName,
  authorize,
  entryOf,
  getOrFail,
  isProtectedPrincipal,
  type KeyEvent,
  nameOf,
  onlyFields,
  runAdmin,
  validation,
} from './operations.js'

/** Arguments of {@link rotateKey} (kadmin rotate). */
export interface RotateArgs {
  name: string
  /**
   * The version current until now retires this long after the new one becomes current, ms.
   * 0 is the emergency form. Absent: once every ticket it sealed can have expired (its sealedUntil).
   */
  grace?: number
  /** Create the new version now (published: ktadd returns it) and make it current this much later, ms. @default 0 */
  stageAhead?: number
  /** Retire every older version at once: tickets sealed with them are refused from now on (a compromised key). */
  emergency?: boolean
}

/** What rotate gives back: only the version it just made (MIT CVE-2014-5351). */
export interface RotateResult {
  name: string
  /** The new version. */
  kvno: number
  /** When the new version becomes current (now, unless staged). */
  activatesAt: number
  /** The new key, for a keytab; empty for krbtgt/REALM and kadmin/*, whose keys never leave the KDC. */
  keys: KeytabEntry[]
  /** The version current before, with its new times. */
  previous: { kvno: number; sealedUntil?: number; retiresAt?: number }
}

/** Arguments of {@link purgeKeys} (kadmin purgekeys). */
export interface PurgeKeysArgs {
  name: string
  /** Remove the versions older than this kvno (MIT -keepkvno). */
  keepkvno?: number
  /** Remove every version older than the current one (the default when keepkvno is absent). */
  allOld?: boolean
  /** Also remove versions that may still open a valid ticket (needs `c` too). */
  force?: boolean
}

/** What purgekeys gives back (no keys). */
export interface PurgeKeysResult {
  name: string
  /** The current version. */
  kvno: number
  purged: number[]
  kept: number[]
  /** Versions purged under force although tickets sealed with them may still be valid. */
  forced: number[]
}

/** The audit actor of the scheduler's steps. */
export const SCHEDULER_ACTOR = 'kdc:scheduler'

function nonNegative(what: string, v: unknown): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) throw validation(`${what} must be a non-negative number of milliseconds`)
}

function inUse(message: string): TesseraError {
  // "still used": mapped to ADM_ERR_IN_USE by the admin listener.
  return new TesseraError(TesseraErrorCode.TESSERA_EXISTS, message)
}

/**
 * rotate: a new random key version (services, krbtgt, kadmin/*), the older ones kept until
 * their grace ends. Needs `c`. Refused for a password principal (cpw changes a password) and
 * while a staged version waits for its activation (unless emergency, which drops it).
 */
export async function rotateKey(ctx: AdminContext, actor: Actor, args: RotateArgs): Promise<RotateResult> {
  return runAdmin(ctx, actor, 'rotate', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'grace', 'stageAhead', 'emergency'])
    const id = nameOf(ctx, args.name)
    authorize(ctx, actor, 'rotate', id)
    nonNegative('grace', args.grace)
    nonNegative('stageAhead', args.stageAhead)
    if (args.emergency !== undefined && typeof args.emergency !== 'boolean') throw validation('emergency must be true or false')
    const emergency = args.emergency === true || args.grace === 0
    const stageAhead = args.stageAhead ?? 0
    if (emergency && stageAhead > 0) throw validation('an emergency rotation takes effect at once: give no stageAhead')
    const name = formatPrincipal(id)
    await getOrFail(ctx, id)
    const now = ctx.now()
    let made: KeyVersion | undefined
    let previous: KeyVersion | undefined
    await ctx.db.update(
      id,
      (r) => {
        const cur = sealingKeyAt(r.keys, now)
        if (cur?.kdf !== undefined) throw validation(`${name} has a password key: change it with cpw (rotate makes random keys, for services and krbtgt)`)
        const staged = r.keys.find((k) => k.activatesAt !== undefined && k.activatesAt > now)
        if (staged !== undefined && !emergency)
          throw inUse(`${name} is still used by a staged rotation: kvno ${staged.kvno} becomes current at ${new Date(staged.activatesAt!).toISOString()}; wait for it, or rotate with emergency`)
        made = { kvno: Math.max(0, ...r.keys.map((k) => k.kvno)) + 1, key: randomKey(), createdAt: now }
        if (stageAhead > 0) made.activatesAt = now + stageAhead
        addKeyVersion(r, made, { now, keepold: true, retire: emergency ? 'now' : (args.grace ?? 'tickets'), fallbackLifeMs: ctx.maxTicketLife })
        // The old key may be known: the TGTs got with it (a thief's too) end with it.
        if (emergency) revokeSessions(r, ctx.now())
        if (made.activatesAt === undefined) r.activatedKvno = made.kvno
        previous = cur === undefined ? undefined : r.keys.find((k) => k.kvno === cur.kvno)
      },
      actorName(actor),
      ctx.commit(
        () => {
          const details: Record<string, string | number | boolean | null> = { emergency, activatesAt: made!.activatesAt ?? now }
          if (args.grace !== undefined) details.grace = args.grace
          if (stageAhead > 0) details.stageAhead = stageAhead
          return { ...base, kvno: made!.kvno, details }
        },
        () => {
          const k = made!
          const by = actorName(actor)
          return [
            k.activatesAt !== undefined
              ? { type: 'staged', principal: name, kvno: k.kvno, activatesAt: k.activatesAt, time: now, actor: by }
              : { type: 'rotated', principal: name, kvno: k.kvno, emergency, time: now, actor: by },
          ]
        },
      ),
    )
    const k = made!
    ctx.noteKeys(id)
    const result: RotateResult = {
      name,
      kvno: k.kvno,
      activatesAt: k.activatesAt ?? now,
      keys: isProtectedPrincipal(ctx, id) ? [] : [entryOf(id, k)],
      previous: { kvno: previous?.kvno ?? 0 },
    }
    if (previous?.sealedUntil !== undefined) result.previous.sealedUntil = previous.sealedUntil
    if (previous?.retiresAt !== undefined) result.previous.retiresAt = previous.retiresAt
    return result
  })
}

/** The versions purgekeys would remove from `keys` at `now`, and those of them that may still open a valid ticket. */
function purgePlan(
  keys: readonly Readonly<KeyVersion>[],
  args: PurgeKeysArgs,
  now: number,
  fallbackLifeMs: number,
): { remove: number[]; live: { kvno: number; until: number | undefined }[] } {
  const cur = sealingIndexAt(keys, now)
  const remove: number[] = []
  const live: { kvno: number; until: number | undefined }[] = []
  for (let i = 0; i < cur; i++) {
    const k = keys[i]!
    if (args.keepkvno !== undefined && k.kvno >= args.keepkvno) continue
    remove.push(k.kvno)
    if (keyStateAt(keys, i, now) === 'retired') continue
    const until = ticketsEndBy(keys, i, fallbackLifeMs)
    if (until === undefined || until > now) live.push({ kvno: k.kvno, until })
  }
  return { remove, live }
}

/**
 * purgekeys (MIT kadm5_purgekeys): remove old key versions, never the current one nor a
 * staged one. Needs `m` (as MIT), and `c` too with force. A version that is not retired and
 * whose sealedUntil is still ahead may open a valid ticket: refused (ADM_ERR_IN_USE) unless force.
 */
export async function purgeKeys(ctx: AdminContext, actor: Actor, args: PurgeKeysArgs): Promise<PurgeKeysResult> {
  return runAdmin(ctx, actor, 'purgekeys', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'keepkvno', 'allOld', 'force'])
    const id = nameOf(ctx, args.name)
    if (args.force !== undefined && typeof args.force !== 'boolean') throw validation('force must be true or false')
    authorize(ctx, actor, 'purgekeys', id, { force: args.force === true })
    if (args.keepkvno !== undefined && (!Number.isSafeInteger(args.keepkvno) || args.keepkvno < 0)) throw validation('keepkvno must be a key version number')
    if (args.allOld !== undefined && typeof args.allOld !== 'boolean') throw validation('allOld must be true or false')
    if (args.keepkvno !== undefined && args.allOld === true) throw validation('give keepkvno or allOld, not both')
    const name = formatPrincipal(id)
    const now = ctx.now()
    const rec = await getOrFail(ctx, id)
    const current = sealingKeyAt(rec.keys, now)!
    if (args.keepkvno !== undefined && args.keepkvno > current.kvno)
      throw validation(`keepkvno ${args.keepkvno} is above the current version ${current.kvno} of ${name}: the current key is never purged`)
    let plan = purgePlan(rec.keys, args, now, ctx.maxTicketLife)
    const refuse = (p: typeof plan) => {
      if (args.force === true || p.live.length === 0) return
      const first = p.live[0]!
      const when = first.until === undefined ? 'while it is current' : `until ${new Date(first.until).toISOString()}`
      throw inUse(
        `key version ${first.kvno} of ${name} is still used: tickets sealed with it may be valid ${when}; purge it after that, or with force`,
      )
    }
    refuse(plan)
    const details = (): Record<string, string | number | boolean | null> => {
      const d: Record<string, string | number | boolean | null> = { force: args.force === true }
      if (args.keepkvno !== undefined) d.keepkvno = args.keepkvno
      if (plan.live.length > 0) d.forced = plan.live.map((l) => l.kvno).join(',')
      return d
    }
    let kept: number[] = rec.keys.map((k) => k.kvno)
    if (plan.remove.length === 0) {
      await ctx.audit.record({ ...base, kvno: current.kvno, kvnos: [], details: details() })
    } else {
      const written = await ctx.db.update(
        id,
        (r) => {
          // Decided again under the record's lock, on the record as it is now.
          plan = purgePlan(r.keys, args, now, ctx.maxTicketLife)
          refuse(plan)
          r.keys = r.keys.filter((k) => !plan.remove.includes(k.kvno))
          if (r.keys.length === 0 || sealingKeyAt(r.keys, now) === undefined) throw new Error('purgekeys would leave no current key')
        },
        actorName(actor),
        ctx.commit(
          () => ({ ...base, kvno: current.kvno, kvnos: plan.remove, details: details() }),
          () => [{ type: 'purged', principal: name, kvno: current.kvno, kvnos: plan.remove, time: now, actor: actorName(actor) }],
        ),
      )
      kept = written.keys.map((k) => k.kvno)
      ctx.noteKeys(id)
    }
    return { name, kvno: current.kvno, purged: plan.remove, kept, forced: args.force === true ? plan.live.map((l) => l.kvno) : [] }
  })
}

// ---- the scheduler ----

/** Options of {@link RotationScheduler}. */
export interface RotationSchedulerOptions {
  /** Longest sleep between two looks at the clock, ms (bounds the lateness of a step after a clock jump). @default 60000 */
  pollMs?: number
  /** Told of a step that failed (it is retried after pollMs). */
  onError?: (message: string) => void
}

/** Thrown inside an update when the step is no longer due: nothing is written. */
class NotDue extends Error {}

/**
 * Runs the rotation schedules and records activations: stages the next key stageAhead before
 * it is due, records its activation, purges the previous one once retired and past its
 * tickets. Each step is one atomic update (with its audit anchor), audited as
 * {@link SCHEDULER_ACTOR}, and decided again under the record's lock, so a step that a crash
 * interrupted is simply done (or not) when the KDC comes back. One timer, unref'd.
 */
export class RotationScheduler {
  readonly #ctx: AdminContext
  readonly #pollMs: number
  readonly #onError: ((m: string) => void) | undefined
  /** Principals with a step ahead, by database key. */
  readonly #due = new Map<string, { id: PrincipalId; at: number }>()
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined
  #again = false
  #closed = false
  #scan: Promise<void> | undefined
  readonly #notes = new Set<Promise<void>>()

  constructor(ctx: AdminContext, o: RotationSchedulerOptions = {}) {
    this.#ctx = ctx
    this.#pollMs = o.pollMs ?? 60_000
    if (!Number.isSafeInteger(this.#pollMs) || this.#pollMs <= 0) throw new RangeError('pollMs must be a positive number of ms')
    this.#onError = o.onError
  }

  /**
   * Plan every principal with a schedule or a staged key (the database found them in its one
   * pass at open: PrincipalDb.scheduledPrincipals; only those records are read), then keep time.
   */
  start(): void {
    this.#ctx.keysChanged = (id) => this.note(id)
    this.#scan = (async () => {
      for (const id of await this.#ctx.db.scheduledPrincipals()) {
        if (this.#closed) return
        if (id.realm !== this.#ctx.realm) continue
        const rec = await this.#ctx.db.get(id)
        if (rec !== undefined) this.#plan(id, rec)
      }
      this.#arm()
    })().catch((err: unknown) => this.#onError?.(`rotation scheduler: scan failed: ${String(err)}`))
  }

  /** Re-plan `id` after a change (called by the operations through AdminContext.noteKeys). */
  note(id: PrincipalId): void {
    if (this.#closed) return
    const p = this.#ctx.db
      .get(id)
      .then((rec) => {
        if (rec === undefined) this.#due.delete(principalKey(id))
        else this.#plan(id, rec)
        this.#arm()
      })
      .catch(() => {})
      .finally(() => this.#notes.delete(p))
    this.#notes.add(p)
  }

  /** When the next step is due, or undefined when none is planned. */
  get nextAt(): number | undefined {
    let min: number | undefined
    for (const e of this.#due.values()) if (min === undefined || e.at < min) min = e.at
    return min
  }

  /** Wait for the initial scan and pending re-plans (tests). */
  async settled(): Promise<void> {
    await this.#scan
    while (this.#notes.size > 0) await Promise.allSettled([...this.#notes])
  }

  /** Run every step due at the context's clock now (the timer calls it; tests with an injected clock call it too). */
  runDue(): Promise<void> {
    if (this.#running !== undefined) {
      this.#again = true
      return this.#running
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false
          await this.#settledNotes()
          const now = this.#ctx.now()
          for (const [key, e] of [...this.#due]) {
            if (this.#closed) return
            if (e.at > now) continue
            this.#due.delete(key)
            await this.#step(e.id)
          }
        } while (this.#again && !this.#closed)
      } finally {
        this.#running = undefined
        this.#arm()
      }
    })()
    return this.#running
  }

  /** Stop: no new step starts; the one running finishes. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#ctx.keysChanged !== undefined) this.#ctx.keysChanged = undefined
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    await this.#scan
    await this.#running
    await this.#settledNotes()
  }

  async #settledNotes(): Promise<void> {
    while (this.#notes.size > 0) await Promise.allSettled([...this.#notes])
  }

  #plan(id: PrincipalId, rec: Readonly<PrincipalRecord>): void {
    const step = nextRotationStep(rec, this.#ctx.now(), this.#ctx.maxTicketLife)
    const key = principalKey(id)
    if (step === undefined) this.#due.delete(key)
    else this.#due.set(key, { id, at: step.at })
  }

  #arm(): void {
    if (this.#closed) return
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    const at = this.nextAt
    if (at === undefined) return
    const delay = Math.min(Math.max(at - this.#ctx.now(), 0), this.#pollMs)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.runDue().catch(() => {})
    }, delay)
    this.#timer.unref()
  }

  /** Run the step due for `id`, if any, as one atomic update; then plan its next one. */
  async #step(id: PrincipalId): Promise<void> {
    const ctx = this.#ctx
    const name = formatPrincipal(id)
    const now = ctx.now()
    const rec = await ctx.db.get(id)
    if (rec === undefined) return
    const planned = nextRotationStep(rec, now, ctx.maxTicketLife)
    if (planned === undefined || planned.at > now) {
      this.#plan(id, rec)
      return
    }
    let step: RotationStep = planned
    let made: KeyVersion | undefined
    const base: AuditEvent = { actor: SCHEDULER_ACTOR, op: opOf(step), target: name, outcome: 'ok' }
    try {
      const written = await ctx.db.update(
        id,
        (r) => {
          const s = nextRotationStep(r, now, ctx.maxTicketLife)
          if (s === undefined || s.at > now || s.kind !== planned.kind) throw new NotDue()
          step = s
          if (s.kind === 'activate') r.activatedKvno = s.kvno
          else if (s.kind === 'stage') {
            made = { kvno: Math.max(0, ...r.keys.map((k) => k.kvno)) + 1, key: randomKey(), createdAt: now, activatesAt: s.activatesAt }
            addKeyVersion(r, made, { now, keepold: true, retire: r.rotation?.graceMs ?? 'tickets', fallbackLifeMs: ctx.maxTicketLife })
            if (made.activatesAt === undefined) r.activatedKvno = made.kvno
          } else {
            if (s.kvnos.length === 0) throw new NotDue()
            r.keys = r.keys.filter((k) => !s.kvnos.includes(k.kvno))
            if (sealingKeyAt(r.keys, now) === undefined) throw new Error('a purge would leave no current key')
          }
        },
        SCHEDULER_ACTOR,
        ctx.commit(
          () => auditOf(base, step, made),
          (): KeyEvent[] => {
            const s = step as RotationStep
            if (s.kind === 'activate') return [{ type: 'activated', principal: name, kvno: s.kvno, time: now, actor: SCHEDULER_ACTOR }]
            if (s.kind === 'stage') {
              const e = { type: 'staged' as const, principal: name, kvno: made!.kvno, time: now, actor: SCHEDULER_ACTOR }
              return [made!.activatesAt === undefined ? { ...e, type: 'rotated' } : { ...e, activatesAt: made!.activatesAt }]
            }
            return [{ type: 'purged', principal: name, kvnos: s.kvnos, time: now, actor: SCHEDULER_ACTOR }]
          },
        ),
      )
      this.#plan(id, written)
    } catch (err) {
      if (err instanceof NotDue) {
        const again = await ctx.db.get(id)
        if (again !== undefined) this.#plan(id, again)
        return
      }
      const reason = err instanceof TesseraError ? err.message : 'internal error'
      this.#onError?.(`rotation scheduler: ${opOf(step)} of ${name} failed: ${reason}`)
      await ctx.audit.record({ ...base, outcome: 'error', reason }).catch(() => {})
      // Tried again later, not in a tight loop.
      this.#due.set(principalKey(id), { id, at: now + this.#pollMs })
    }
  }
}

function opOf(s: RotationStep): string {
  return s.kind === 'stage' ? 'rotate' : s.kind === 'activate' ? 'activate' : 'purgekeys'
}

function auditOf(base: AuditEvent, s: RotationStep, made: KeyVersion | undefined): AuditEvent {
  if (s.kind === 'activate') return { ...base, op: 'activate', kvno: s.kvno }
  if (s.kind === 'stage') return { ...base, op: 'rotate', kvno: made!.kvno, details: { scheduled: true, activatesAt: made!.activatesAt ?? s.at } }
  return { ...base, op: 'purgekeys', kvnos: s.kvnos, details: { scheduled: true } }
}
