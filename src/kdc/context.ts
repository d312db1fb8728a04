/** What every KDC handler shares: config, database, realm identity, replay cache, logs, clock. */
import type { EncTicketPart } from '../../proto/messages.js'
import type { LruCache } from '../db/lru.js'
import type { PrincipalDb } from '../db/principal-db.js'
import { opensAt, sealingKeyAt } from '../db/key-states.js'
import type { KeyVersion, PrincipalRecord, RealmRecord } from '../db/types.js'
import { ErrorCode, KrbProtocolError } from '../errors.js'
import type { ReplayCache } from '../krb/replay-cache.js'
import type { Loggers } from '../log/logger.js'
import type { KdcMetrics } from '../ops/metrics.js'
import type { KdcConfig } from './config.js'

/** Shared state of one running KDC. */
export interface KdcContext {
  config: KdcConfig
  db: PrincipalDb
  realm: RealmRecord
  replay: ReplayCache
  log: Loggers
  /** Clock, ms since epoch. */
  now: () => number
  /** Tickets already opened by the TGS, by their nonce (see tgs-req.ts openTicket). */
  tickets: LruCache<string, OpenedTicket>
  /**
   * Metrics, when collected (the ops listener is on). The admin service reports each
   * operation with `ctx.metrics?.adminOp(op, outcome)`.
   */
  metrics?: KdcMetrics
  /** The one publisher of realm events (the event log, src/db/event-log.ts), set by the admin service. */
  events?: EventPublisher
  /** The webhooks' counters in configuration order (for the metrics), set by the admin service when webhooks are configured. */
  webhooks?: { list(): readonly WebhookCounters[] }
}

/** What the metrics read of one webhook. */
export interface WebhookCounters {
  delivered: number
  failures: number
  dropped: number
  queued: number
}

/** Publishes an event that comes with no change of its own (a lockout): never blocks nor throws. */
export interface EventPublisher {
  publish(e: { type: string; principal: string; time: number; actor: string }): void
}

/** A ticket the TGS opened, with what it derives from it once. */
export interface OpenedTicket {
  /** Serial of the key object the ticket was opened with. */
  serial: number
  /** The sealed ticket (a copy). */
  sealed: Uint8Array
  part: Readonly<EncTicketPart>
  /** "cname@crealm", as logged and as the replay cache's client. */
  clientName: string
  /** Database key of the client in the KDC's realm. */
  clientKey: string
}

/** krbtgt/REALM components. */
export function tgsName(realm: string): string[] {
  return ['krbtgt', realm]
}

/**
 * The key version a principal's tickets are sealed with at `now`: the newest version whose
 * activation has come (a staged "next" version seals nothing before its activatesAt, and
 * everything from then on, without any write). One property check unless a version is staged.
 */
export function currentKey(p: PrincipalRecord, now: number): KeyVersion {
  const k = sealingKeyAt(p.keys, now)
  if (!k) throw new KrbProtocolError(ErrorCode.KDC_ERR_NULL_KEY, 'NULL_KEY', { message: 'principal has no key' })
  return k
}

/** The key version `kvno` if it may open a ticket at `now` (activated, not retired), else undefined. */
export function keyByKvno(p: PrincipalRecord, kvno: number, now: number): KeyVersion | undefined {
  const keys = p.keys
  for (let i = keys.length - 1; i >= 0; i--) {
    const k = keys[i]!
    if (k.kvno === kvno) return opensAt(k, now) ? k : undefined
  }
  return undefined
}

/**
 * Whether tickets may be issued with `p` as their service. `allowService` decides when set;
 * unset, a principal whose current key comes from a password is no ticket target: every
 * ticket sealed with that key would be an offline guessing oracle for the password
 * ("Kerberoasting"). Services (random keys, krbtgt, kadmin/*) are.
 */
export function acceptsTickets(p: PrincipalRecord): boolean {
  if (p.attributes.disabled) return false
  if (p.attributes.allowService !== undefined) return p.attributes.allowService
  const k = p.keys[p.keys.length - 1]
  return k !== undefined && k.kdf === undefined
}

/** The refusal text for a service that accepts no tickets. */
export function notATargetText(p: PrincipalRecord, name: string): string {
  if (p.attributes.disabled || p.attributes.allowService === false) return `${name} does not accept tickets`
  return `${name} does not accept tickets: its key comes from a password (a user, not a service)`
}

/**
 * kadmin/admin and kadmin/changepw: tickets for them come only from an AS exchange (a
 * password typed again, the INITIAL flag), never from a TGT, as MIT creates them.
 */
export function isInitialOnly(components: readonly string[]): boolean {
  return components.length === 2 && components[0] === 'kadmin' && (components[1] === 'admin' || components[1] === 'changepw')
}

/**
 * Names that can never log in as a client (krbtgt/*, kadmin/*): an AS request for one is
 * refused before anything is looked up or counted.
 */
export function isNeverClient(components: readonly string[]): boolean {
  return components[0] === 'krbtgt' || components[0] === 'kadmin'
}
