/** `kauth keytab refresh --keytab FILE [PRINCIPAL]`: a service fetches its own current and next keys into its keytab (issue 12). */
import type { Argv, CommandModule } from 'yargs'
import type { KdcClient } from '../client/kdc-client.js'
import { refreshKeytab } from '../service/keytab-refresh.js'
import type { ResumptionStore } from '../wire/resumption.js'

/** What the kauth command line lends this command (kauth.ts main's helpers). */
export interface KeytabCommandContext {
  run: (fn: () => Promise<number | undefined>) => Promise<void>
  client: (a: never) => Promise<{ c: KdcClient; resumption: ResumptionStore }>
  out: NodeJS.WritableStream
  json: (o: unknown) => void
  jsonOption: { type: 'boolean'; describe: string }
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')

/** The yargs module of `kauth keytab`. */
export function keytabCommand(ctx: KeytabCommandContext): CommandModule {
  return {
    command: 'keytab <action>',
    describe: "a service's keytab: refresh fetches its own current and next keys (no admin needed)",
    builder: (y: Argv) =>
      y.command(
        'refresh [principal]',
        'log in from the keytab and fetch the current, next (staged) and still-valid keys; retired ones are dropped; the file is replaced atomically (0600)',
        (yy: Argv) =>
          yy
            .positional('principal', { type: 'string', describe: "the service, e.g. HTTP/www.example.com (default: the keytab's only principal)" })
            .option('keytab', { alias: 'k', type: 'string', demandOption: true, describe: 'the keytab file to refresh' })
            .option('json', ctx.jsonOption),
        (a) =>
          ctx.run(async () => {
            const args = a as unknown as { principal?: string; keytab: string; json?: boolean }
            const { c, resumption } = await ctx.client(a as never)
            try {
              const o: Parameters<typeof refreshKeytab>[0] = { kdc: c, keytabFile: args.keytab }
              if (args.principal !== undefined) o.principal = args.principal
              const r = await refreshKeytab(o)
              if (args.json) ctx.json(r)
              else {
                ctx.out.write(`${r.principal}: current kvno ${r.kvno}; keytab ${args.keytab} holds ${r.kvnos.join(', ')}\n`)
                for (const v of r.versions)
                  ctx.out.write(`  kvno ${v.kvno}  ${v.state.padEnd(8)}  from ${iso(v.activatesAt)}${v.retiresAt !== undefined ? `  retires ${iso(v.retiresAt)}` : ''}\n`)
                if (r.added.length > 0) ctx.out.write(`  added: ${r.added.join(', ')}\n`)
                if (r.removed.length > 0) ctx.out.write(`  removed (retired): ${r.removed.join(', ')}\n`)
              }
            } finally {
              c.close()
              resumption.clear()
            }
            return undefined
          }),
      ).demandCommand(1, 'name an action: refresh'),
    handler: () => {},
  }
}
