/**
 * An HTTP service behind the JWT bridge (PROTOCOL.md §15), and a logged-in client calling it.
 * The service needs no keytab: the realm file's signing key checks the tokens, and every
 * request carries a DPoP proof signed by the key its token is bound to.
 *
 *   npx tsx docs/examples/jwt-service.ts serve <realm.json> <service principal> [port]
 *   TESSERA_PASSWORD='…' npx tsx docs/examples/jwt-service.ts call <realm.json> <user> <service> <url>
 *
 * The service principal needs `allowJwt` (kadmin modprinc, or addPrincipal's attributes).
 * In an application, import from 'tessera' instead of '../../src/index.js'.
 */
import http from 'node:http'
import { pathToFileURL } from 'node:url'
import { DpopSession, KdcClient, loadRealmFile, type RealmFile, ServiceTokenVerifier, tokenMiddleware, tokenOf } from '../../src/index.js'

export interface JwtServiceOptions {
  realm: RealmFile
  /** The service principal, e.g. HTTP/localhost@TESSERA.TEST: the audience its tokens must name. */
  principal: string
  host?: string
  /** @default 0 (any free port) */
  port?: number
  /** The origin clients call it at (for the proofs' htu). @default http://Host of each request */
  origin?: string
}

/** Start the service: GET /whoami answers with the caller's principal; everything needs a token. */
export async function startJwtService(o: JwtServiceOptions): Promise<http.Server> {
  const verifier = new ServiceTokenVerifier({ realm: o.realm, audience: o.principal, nonces: true })
  const auth = tokenMiddleware(verifier, o.origin !== undefined ? { origin: o.origin } : {})
  const server = http.createServer((req, res) => {
    // (req, res, next): the same function plugs into Express (app.use(auth)) or Fastify (onRequest on req.raw/reply.raw).
    auth(req, res, (err) => {
      if (err) return res.writeHead(500).end()
      const who = tokenOf(req)!
      if (req.url === '/whoami') return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ principal: who.principal }))
      res.writeHead(404).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(o.port ?? 0, o.host ?? '127.0.0.1', resolve))
  return server
}

/** Log in, get a token for `service` and call `url` with it; resolves with the parsed JSON reply. */
export async function callJwtService(o: { realm: RealmFile; user: string; password: string; service: string; url: string }): Promise<unknown> {
  const client = new KdcClient(o.realm)
  try {
    const tgt = await client.login(o.user, o.password)
    // The session makes the token's key pair (never leaving this process), refreshes the
    // token before it expires, signs a proof per request and answers nonce challenges.
    const session = new DpopSession({ client, tgt, service: o.service })
    const res = await session.fetch(o.url)
    if (!res.ok) throw new Error(`${o.url}: ${res.status} ${res.headers.get('www-authenticate') ?? ''}`)
    return await res.json()
  } finally {
    client.close()
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [mode, realmPath, a, b, c] = process.argv.slice(2)
  if (mode === 'serve' && realmPath && a) {
    const server = await startJwtService({ realm: await loadRealmFile(realmPath), principal: a, port: Number(b ?? 0) })
    const addr = server.address() as { port: number }
    console.log(`listening on http://127.0.0.1:${addr.port} as ${a}`)
  } else if (mode === 'call' && realmPath && a && b && c && process.env.TESSERA_PASSWORD) {
    console.log(JSON.stringify(await callJwtService({ realm: await loadRealmFile(realmPath), user: a, password: process.env.TESSERA_PASSWORD, service: b, url: c })))
  } else {
    console.error('usage: jwt-service.ts serve <realm.json> <principal> [port] | TESSERA_PASSWORD=… jwt-service.ts call <realm.json> <user> <service> <url>')
    process.exit(2)
  }
}
