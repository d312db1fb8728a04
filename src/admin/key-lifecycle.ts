/**
 * Key lifecycle rules as pure functions on a principal record (no I/O): adding a version
 * (cpw, ktadd -randkey, rotate, the scheduler), the bound on the tickets a version sealed,
 * raising it when maxLife grows, and the next step of a rotation schedule.
 */
import { activationOf, sealingIndexAt, ticketsEndBy } from '../db/key-states.js'
import type { KeyVersion, PrincipalRecord } from '../db/types.js'

/** How {@link addKeyVersion} treats the versions already there. */
export interface AddVersionOptions {
  now: number
  /** Keep older versions (else the new one replaces every version). */
  keepold: boolean
  /**
   * When the versions kept retire: 'never' (until purgekeys: cpw -keepold, as MIT), 'tickets'
   * (once no ticket they sealed can still be valid: rotate's default), a number (that many ms
   * after the new version activates: rotate's grace), 'now' (at once: an emergency rotation).
   */
  retire: 'never' | 'tickets' | 'now' | number
  /** Keep at most this many versions, the new one included. */
  keepLast?: number
  /** The longest ticket life a version written before rotation existed may have sealed (realm and principal max), ms. */
  fallbackLifeMs: number
}

/**
 * Add `made` to `r` (mutated): staged versions are dropped (they never sealed anything, and
 * the new one supersedes them); every kept version gets its `sealedUntil` (the new version's
 * activation + its sealLifeMs: no ticket it sealed can end later, renewals being re-sealed with
 * the current key) and its retirement per `o.retire`.
 */
export function addKeyVersion(r: PrincipalRecord, made: KeyVersion, o: AddVersionOptions): void {
  const act = made.activatesAt !== undefined && made.activatesAt > o.now ? made.activatesAt : o.now
  if (made.activatesAt !== undefined && made.activatesAt <= o.now) delete made.activatesAt
  made.sealLifeMs = r.maxLife
  if (!o.keepold) {
    r.keys = [made]
    return
  }
  let kept = r.keys.filter((k) => k.activatesAt === undefined || k.activatesAt <= o.now)
  const cur = sealingIndexAt(kept, o.now)
  for (let i = 0; i < kept.length; i++) {
    const k = kept[i]!
    if (k.sealedUntil === undefined) {
      if (i === cur) k.sealedUntil = act + (k.sealLifeMs ?? Math.max(r.maxLife, o.fallbackLifeMs))
      else {
        const end = ticketsEndBy(kept, i, Math.max(r.maxLife, o.fallbackLifeMs))
        if (end !== undefined) k.sealedUntil = end
      }
    }
    let retire: number | undefined
    if (o.retire === 'now') retire = o.now
    else if (i === cur && o.retire === 'tickets') retire = k.sealedUntil
    else if (i === cur && typeof o.retire === 'number') retire = act + o.retire
    if (retire !== undefined && (k.retiresAt === undefined || k.retiresAt > retire)) k.retiresAt = retire
  }
  if (o.keepLast !== undefined) kept = o.keepLast > 1 ? kept.slice(-(o.keepLast - 1)) : []
  r.keys = [...kept, made]
}

/**
 * End every session of `r` from a login before `now` (mutates `r`): the TGS refuses the
 * tickets whose authtime is earlier (src/kdc/tgs-req.ts checkTgsReq). Called by the key
 * changes that retire every older key at once, the answer to a key that may be known: an
 * emergency rotation, and an administrator's cpw or ktadd -randkey without keepold. Not by a
 * grace or staged rotation, a keepold change, a purge, nor a principal changing its own key
 * (its other sessions go on, as MIT's kpasswd). Never lowered: a later, milder change keeps it.
 */
export function revokeSessions(r: PrincipalRecord, now: number): void {
  r.revokedAt = Math.max(r.revokedAt ?? 0, now)
}

/**
 * Before maxLife changes from `r.maxLife` to `newMaxLife` (modprinc): a raise applies to the
 * versions that may still seal (current and staged), so their bound keeps covering every
 * ticket they seal. A lowered maxLife changes no bound (tickets already sealed keep their life).
 */
export function raiseSealLife(r: PrincipalRecord, newMaxLife: number, now: number): void {
  const cur = sealingIndexAt(r.keys, now)
  for (let i = Math.max(cur, 0); i < r.keys.length; i++) {
    const k = r.keys[i]!
    const life = Math.max(k.sealLifeMs ?? r.maxLife, newMaxLife)
    k.sealLifeMs = life
    const next = r.keys[i + 1]
    if (k.sealedUntil !== undefined && next !== undefined) k.sealedUntil = Math.max(k.sealedUntil, activationOf(next) + life)
  }
}

/** One step of a rotation the scheduler runs (each is one atomic update of the record). */
export type RotationStep =
  /** Create the next version, published now, activated at `activatesAt`. */
  | { kind: 'stage'; at: number; activatesAt: number }
  /** Record (audit, event) that staged version `kvno` became current at `at` (the KDC already seals with it by then). */
  | { kind: 'activate'; at: number; kvno: number }
  /** Remove versions that retired and whose tickets have all expired. */
  | { kind: 'purge'; at: number; kvnos: number[] }

/**
 * The earliest step due for `r` (possibly in the future: `at` says when), or undefined when
 * none will ever be due without another change. Activations are recorded for any staged
 * version (a manual `rotate --stage-ahead` too); staging and purging need a schedule.
 */
export function nextRotationStep(r: Readonly<PrincipalRecord>, now: number, fallbackLifeMs: number): RotationStep | undefined {
  const steps: RotationStep[] = []
  const keys = r.keys
  for (const k of keys)
    if (k.activatesAt !== undefined && k.kvno > (r.activatedKvno ?? 0)) {
      steps.push({ kind: 'activate', at: k.activatesAt, kvno: k.kvno })
      break
    }
  const s = r.rotation
  if (s !== undefined) {
    const staged = keys.some((k) => k.activatesAt !== undefined && k.activatesAt > now)
    const cur = sealingIndexAt(keys, now)
    if (!staged && cur >= 0) {
      const due = activationOf(keys[cur]!) + s.everyMs
      const at = due - s.stageAheadMs
      // Late (the KDC was down): the services still get stageAhead to fetch the key.
      steps.push({ kind: 'stage', at, activatesAt: Math.max(due, Math.max(at, now) + s.stageAheadMs) })
    }
    let purgeAt = Number.POSITIVE_INFINITY
    const kvnos: number[] = []
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!
      if (i >= cur || k.retiresAt === undefined) continue
      const at = Math.max(k.retiresAt, ticketsEndBy(keys, i, fallbackLifeMs) ?? Number.POSITIVE_INFINITY)
      if (!Number.isFinite(at)) continue
      if (at <= now) kvnos.push(k.kvno)
      purgeAt = Math.min(purgeAt, at)
    }
    if (kvnos.length > 0) steps.push({ kind: 'purge', at: purgeAt, kvnos })
    else if (Number.isFinite(purgeAt)) steps.push({ kind: 'purge', at: purgeAt, kvnos: [] })
  }
  steps.sort((a, b) => a.at - b.at)
  return steps[0]
}
