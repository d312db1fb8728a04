/** `kauth token SERVICE`: a JWT for an HTTP service (PROTOCOL.md §15) and its proof key, for scripts and curl. */
import { exportJWK } from 'jose'
import type { Argv, CommandModule } from 'yargs'
import type { CacheContents, CredentialCache } from '../client/ccache.js'
import { createDpopProof } from '../client/dpop.js'
import type { Credentials, KdcClient } from '../client/kdc-client.js'
import type { ResumptionStore } from '../wire/resumption.js'

/** What the kauth command line lends this command (kauth.ts main's helpers). */
export interface TokenCommandContext {
  run: (fn: () => Promise<number | undefined>) => Promise<void>
  needCache: (a: never) => Promise<{ cc: CredentialCache; contents: CacheContents; now: number }>
  tgtOf: (contents: CacheContents, now: number) => Credentials
  client: (a: never, from?: CacheContents) => Promise<{ c: KdcClient; resumption: ResumptionStore }>
  out: NodeJS.WritableStream
  json: (o: unknown) => void
  jsonOption: { type: 'boolean'; describe: string }
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')

/** The yargs module of `kauth token`. */
export function tokenCommand(ctx: TokenCommandContext): CommandModule {
  return {
    command: 'token <service>',
    describe: 'get a DPoP-bound JWT for an HTTP service; print it as headers (with --proof URL) or, with --json, with its private key',
    builder: (y: Argv) =>
      y
        .positional('service', { type: 'string', demandOption: true, describe: 'service principal, e.g. HTTP/api.example.com' })
        .option('proof', { type: 'string', describe: 'also sign a DPoP proof for one request to this URL' })
        .option('method', { type: 'string', default: 'GET', describe: 'the HTTP method of that request' })
        .option('json', ctx.jsonOption),
    handler: (a) =>
      ctx.run(async () => {
        const args = a as unknown as { service: string; proof?: string; method: string; json?: boolean }
        const { contents, now } = await ctx.needCache(a as never)
        const tgt = ctx.tgtOf(contents, now)
        const { c, resumption } = await ctx.client(a as never, contents)
        try {
          // Only --json prints the private key, so only then is it made exportable.
          const t = await c.getServiceToken(tgt, args.service, { extractable: args.json === true })
          const proof =
            args.proof !== undefined ? await createDpopProof(t.keyPair, { method: args.method, url: args.proof, token: t.token, now: c.now() }) : undefined
          if (args.json) {
            const jwk = await exportJWK(t.keyPair.privateKey)
            ctx.json({
              service: args.service,
              token: t.token,
              expires: iso(t.expiresAt),
              jkt: t.keyPair.jkt,
              key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d },
              ...(proof !== undefined ? { dpop: proof } : {}),
            })
          } else {
            ctx.out.write(`Authorization: DPoP ${t.token}\n`)
            if (proof !== undefined) ctx.out.write(`DPoP: ${proof}\n`)
          }
        } finally {
          c.close()
          resumption.clear()
        }
        return undefined
      }),
  }
}
