/**
 * A webhook receiver for a Tessera KDC's key events (PROTOCOL.md §8.5.7), written with
 * node:http and node:crypto only, the way a receiver in any language does it: verify the
 * Ed25519 signature over "tessera-webhook-v1." + the raw body, with the realm's public
 * signing key from realm.json, before parsing the body; answer 2xx once the event is
 * taken; deduplicate on `seq` (delivery is at least once).
 *
 *   npx tsx docs/examples/webhook-receiver.ts realm.json 8080
 *
 * and in the KDC config: "webhooks": [{ "url": "http://127.0.0.1:8080/tessera" }].
 * Run by test/integration/webhooks.test.ts.
 */
import { createPublicKey, verify } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import { pathToFileURL } from 'node:url'

/** What each verified POST carries. */
export interface ReceivedEvent {
  v: 1
  realm: string
  seq: number
  event: { seq: number; type: string; principal: string; time: number; actor: string; [k: string]: unknown }
}

/** Options of {@link createReceiver}. */
export interface ReceiverOptions {
  /** The realm's public signing key: `signingKey` of realm.json (32 bytes, hex there). */
  publicKey: Uint8Array
  /** Accept only events of this realm. */
  realm: string
  /** Called once per sequence number (a redelivered event is answered 200 and not passed on again). */
  onEvent: (e: ReceivedEvent) => void
  /** Called for each refused POST, with the reason (tests count them). */
  onRefused?: (why: string) => void
}

const CONTEXT = Buffer.from('tessera-webhook-v1.', 'utf8')
// An Ed25519 public key as SPKI DER: this fixed prefix, then the 32 key bytes (RFC 8410).
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** Whether `sig` (the tessera-signature header) signs `body` under `publicKey`. */
export function verifySignature(body: Buffer, sig: string | undefined, publicKey: Uint8Array): boolean {
  if (sig === undefined || !/^[A-Za-z0-9_-]{86}$/.test(sig)) return false
  const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' })
  return verify(null, Buffer.concat([CONTEXT, body]), key, Buffer.from(sig, 'base64url'))
}

/** An HTTP server that takes signed events; listen() it yourself. */
export function createReceiver(o: ReceiverOptions): http.Server {
  const seen = new Set<number>()
  return http.createServer((req, res) => {
    const refuse = (status: number, why: string) => {
      o.onRefused?.(why)
      res.writeHead(status).end()
    }
    if (req.method !== 'POST') return refuse(405, 'not a POST')
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > 64 * 1024) req.destroy()
      else chunks.push(c)
    })
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      // The signature first, on the bytes as received: never parse what is not verified.
      const sig = req.headers['tessera-signature']
      if (!verifySignature(body, typeof sig === 'string' ? sig : undefined, o.publicKey)) return refuse(401, 'bad signature')
      let e: ReceivedEvent
      try {
        e = JSON.parse(body.toString('utf8')) as ReceivedEvent
      } catch {
        return refuse(400, 'not JSON')
      }
      if (e.v !== 1 || e.realm !== o.realm || !Number.isSafeInteger(e.seq)) return refuse(400, 'not an event of this realm')
      if (!seen.has(e.seq)) {
        seen.add(e.seq)
        o.onEvent(e)
      }
      res.writeHead(204).end()
    })
  })
}

// Run as a program: print each event as one JSON line.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [realmFile, port = '8080'] = process.argv.slice(2)
  if (!realmFile) {
    process.stderr.write('usage: webhook-receiver.ts REALM.JSON [PORT]\n')
    process.exit(2)
  }
  const rf = JSON.parse(await readFile(realmFile, 'utf8')) as { realm: string; signingKey: string }
  const server = createReceiver({
    publicKey: Buffer.from(rf.signingKey, 'hex'),
    realm: rf.realm,
    onEvent: (e) => process.stdout.write(`${JSON.stringify(e)}\n`),
    onRefused: (why) => process.stderr.write(`refused: ${why}\n`),
  })
  server.listen(Number(port), '127.0.0.1', () => process.stderr.write(`listening on http://127.0.0.1:${port}/\n`))
}
