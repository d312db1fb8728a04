/** `kadmin watch [GLOB] [--from N] [--json]`: print the realm's key events as they happen, one line each (issue 12). */
import type { Argv, CommandModule } from 'yargs'
import type { KeyEvent } from '../admin/operations.js'
import type { AdminClient } from '../client/admin-client.js'
import type { LoggedEvent } from '../db/event-log.js'

/** What the kadmin command line lends this command (kadmin.ts main's helpers). */
export interface WatchCommandContext {
  /** Run `fn` against the realm (kadmin.ts withAdmin); `s.local` is set with --local. */
  withAdmin: (a: never, fn: (s: { api: unknown; local?: unknown }) => Promise<number | undefined>) => Promise<void>
  say: (line: string) => void
  json: (o: unknown) => void
  usage: (msg: string) => Error
}

const iso = (ms: number) => new Date(ms).toISOString()

/** One line of `kadmin watch`: seq, time, type, principal, then what the event carries. */
export function eventLine(e: LoggedEvent<KeyEvent>): string {
  const extra: string[] = []
  if (e.newName !== undefined) extra.push(`to ${e.newName}`)
  if (e.kvno !== undefined) extra.push(`kvno ${e.kvno}`)
  if (e.kvnos !== undefined && e.kvnos.length > 0) extra.push(`kvnos ${e.kvnos.join(',')}`)
  if (e.activatesAt !== undefined) extra.push(`activates ${iso(e.activatesAt)}`)
  if (e.emergency === true) extra.push('emergency')
  extra.push(`by ${e.actor}`)
  return `${String(e.seq).padStart(6)}  ${iso(e.time)}  ${e.type.padEnd(9)}  ${e.principal}  ${extra.join('  ')}`
}

/** The yargs module of `kadmin watch`. */
export function watchCommand(ctx: WatchCommandContext): CommandModule {
  return {
    command: 'watch [glob]',
    describe: 'print key events as they happen, one line each (events on principals you may inquire about); resumable with --from',
    builder: (y: Argv) =>
      y
        .positional('glob', { type: 'string', describe: 'only principals matching this glob (* wildcard), as listprincs' })
        .option('from', { type: 'number', describe: 'start after this sequence number (0: every event still kept); default: from now on' })
        .option('count', { type: 'number', describe: 'exit after printing this many events' })
        .option('follow', { type: 'boolean', default: true, describe: 'keep waiting for new events (--no-follow: print what is there and exit)' }),
    handler: (a) =>
      ctx.withAdmin(a as never, async (s) => {
        const args = a as unknown as { glob?: string; from?: number; count?: number; follow: boolean; json?: boolean }
        if (s.local !== undefined) throw ctx.usage('watch follows the admin listener of a running KDC: drop --local')
        if (args.from !== undefined && (!Number.isSafeInteger(args.from) || args.from < 0)) throw ctx.usage('--from must be a sequence number (0 or more)')
        if (args.count !== undefined && (!Number.isSafeInteger(args.count) || args.count < 1)) throw ctx.usage('--count must be a positive integer')
        const client = s.api as AdminClient
        let after = args.from
        let printed = 0
        for (;;) {
          const r = await client.watch({
            ...(after !== undefined ? { after } : {}),
            ...(args.glob !== undefined ? { glob: args.glob } : {}),
            waitMs: args.follow ? 25_000 : 0,
          })
          if (r.gap === true && !args.json) ctx.say(`# events after ${after} are gone (kept from ${r.first}): some were missed`)
          for (const e of r.events) {
            if (args.json) ctx.json(e)
            else ctx.say(eventLine(e))
            if (args.count !== undefined && ++printed >= args.count) return undefined
          }
          const caughtUp = r.last === after || r.events.length === 0
          after = r.last
          if (!args.follow && caughtUp) return undefined
        }
      }),
  }
}
