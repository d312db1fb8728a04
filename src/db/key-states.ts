/**
 * Key version states (next -> current -> previous -> retired), decided by the clock from the
 * times stored on each version: pure functions shared by the KDC's hot path and the admin layer.
 */
import type { KeyVersion } from './types.js'

/** The state of one key version at a given time. */
export type KeyState = 'next' | 'current' | 'previous' | 'retired'

/** When `k` starts sealing tickets. */
export function activationOf(k: Readonly<KeyVersion>): number {
  return k.activatesAt ?? k.createdAt
}

/**
 * The version the KDC seals with at `now`: the newest one whose activation has come. O(1)
 * unless a staged version exists (then one step back per staged version). Undefined only for
 * a record without an active version, which no operation leaves behind.
 */
export function sealingKeyAt(keys: readonly Readonly<KeyVersion>[], now: number): Readonly<KeyVersion> | undefined {
  for (let i = keys.length - 1; i >= 0; i--) {
    const k = keys[i]!
    if (k.activatesAt === undefined || k.activatesAt <= now) return k
  }
  return undefined
}

/** Index of the sealing version at `now` in `keys`, or -1. */
export function sealingIndexAt(keys: readonly Readonly<KeyVersion>[], now: number): number {
  for (let i = keys.length - 1; i >= 0; i--) {
    const k = keys[i]!
    if (k.activatesAt === undefined || k.activatesAt <= now) return i
  }
  return -1
}

/** Whether a ticket sealed with `k` may be opened at `now`: activated and not retired. */
export function opensAt(k: Readonly<KeyVersion>, now: number): boolean {
  if (k.retiresAt !== undefined && k.retiresAt <= now) return false
  return k.activatesAt === undefined || k.activatesAt <= now
}

/** The state of `keys[i]` at `now`. */
export function keyStateAt(keys: readonly Readonly<KeyVersion>[], i: number, now: number): KeyState {
  const k = keys[i]!
  if (k.activatesAt !== undefined && k.activatesAt > now) return 'next'
  if (k.retiresAt !== undefined && k.retiresAt <= now) return 'retired'
  return i === sealingIndexAt(keys, now) ? 'current' : 'previous'
}

/**
 * The latest end time of any ticket sealed with `keys[i]`: its recorded `sealedUntil`; for a
 * version written before rotation existed, its successor's activation plus `fallbackLifeMs`
 * (the longest life the realm could have given); undefined while it has no active successor
 * at `now` and may still seal.
 */
export function ticketsEndBy(keys: readonly Readonly<KeyVersion>[], i: number, fallbackLifeMs: number): number | undefined {
  const k = keys[i]!
  if (k.sealedUntil !== undefined) return k.sealedUntil
  const next = keys[i + 1]
  if (next === undefined) return undefined
  // A staged version never sealed anything before its activation: nothing to bound.
  if (k.activatesAt !== undefined && k.activatesAt >= activationOf(next)) return activationOf(next)
  return activationOf(next) + Math.max(k.sealLifeMs ?? 0, fallbackLifeMs)
}

/**
 * True when the rotation scheduler may ever have a step for this record without another
 * change to it: a rotation schedule, or a staged version whose activation is not recorded
 * yet (src/admin/key-lifecycle.ts nextRotationStep returns undefined for every other record).
 * Reads only what is stored in clear (no key bytes), so it runs on stored records too.
 */
export function mayRotate(r: {
  readonly rotation?: unknown
  readonly activatedKvno?: number
  readonly keys: readonly { readonly kvno: number; readonly activatesAt?: number }[]
}): boolean {
  if (r.rotation !== undefined) return true
  const done = r.activatedKvno ?? 0
  return r.keys.some((k) => k.activatesAt !== undefined && k.kvno > done)
}
