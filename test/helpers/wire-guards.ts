/** Process-level guards for the wire suites: an unhandled rejection or uncaught exception fails the test. */

/** Records 'unhandledRejection' and 'uncaughtException' events while installed. */
export interface ProcessGuard {
  install(): void
  uninstall(): void
  /** What was recorded since the last take(), oldest first (each reason once). */
  take(): unknown[]
}

/** A guard that is not yet installed. */
export function createProcessGuard(): ProcessGuard {
  // mocha traps unhandled rejections and re-emits them on `process` without failing
  // anything, so without a listener of our own they would pass silently.
  const seen = new Set<unknown>()
  const record = (reason: unknown) => {
    seen.add(reason)
  }
  return {
    install() {
      process.on('unhandledRejection', record)
      process.on('uncaughtException', record)
    },
    uninstall() {
      process.off('unhandledRejection', record)
      process.off('uncaughtException', record)
    },
    take() {
      const out = [...seen]
      seen.clear()
      return out
    },
  }
}

function describeReason(r: unknown): string {
  return r instanceof Error ? (r.stack ?? `${r.name}: ${r.message}`) : String(r)
}

/**
 * Install a guard for the enclosing describe(): after each test, if any unhandled
 * rejection or uncaught exception happened, the afterEach hook fails with it.
 */
export function useProcessGuards(): void {
  const guard = createProcessGuard()
  before(() => guard.install())
  after(() => guard.uninstall())
  afterEach(async () => {
    // Rejections are reported after the microtask queue drains: give them a turn.
    await new Promise((r) => setImmediate(r))
    await new Promise((r) => setImmediate(r))
    const seen = guard.take()
    if (seen.length > 0)
      throw new Error(`unhandled rejection/exception during the wire suite:\n${seen.map(describeReason).join('\n')}`)
  })
}
