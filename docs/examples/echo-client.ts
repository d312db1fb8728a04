/**
 * Echo client: logs in with a password, gets a ticket for the echo service, opens a
 * SecureSession and echoes a few lines.
 *
 *   npx tsx docs/examples/echo-client.ts <realm.json> <user> <service> <host> <port> [message...]
 *   TESSERA_PASSWORD=... npx tsx docs/examples/echo-client.ts realm.json alice echo/localhost 127.0.0.1 7000 hello
 *
 * In an application, import from 'tessera' instead of '../../src/index.js'.
 */
import net from 'node:net'
import { pathToFileURL } from 'node:url'
import { KdcClient, loadRealmFile, type RealmFile, SecureSession } from '../../src/index.js'

export interface EchoOptions {
  realm: RealmFile
  user: string
  password: string
  /** The service principal, e.g. echo/localhost. */
  service: string
  host: string
  port: number
  messages: string[]
}

/** Send each message through a SecureSession and return the replies. */
export async function echo(opts: EchoOptions): Promise<string[]> {
  const kdc = new KdcClient(opts.realm)
  try {
    const tgt = await kdc.login(opts.user, opts.password)
    const creds = await kdc.getServiceTicket(tgt, opts.service)
    const socket = net.connect({ host: opts.host, port: opts.port })
    // Mutual authentication: this resolves only once the service has proved it holds its key.
    const session = await SecureSession.client(socket, { creds, now: () => kdc.now() })
    const replies = session[Symbol.asyncIterator]()
    const out: string[] = []
    for (const m of opts.messages) {
      await session.send(new TextEncoder().encode(m))
      const reply = await replies.next()
      if (reply.done) throw new Error('the service closed the session')
      out.push(new TextDecoder().decode(reply.value))
    }
    // A sealed close: the service can tell it from a cut connection.
    await session.close()
    return out
  } finally {
    kdc.close()
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [realmPath, user, service, host, port, ...messages] = process.argv.slice(2)
  const password = process.env.TESSERA_PASSWORD
  if (!realmPath || !user || !service || !host || !port || password === undefined) {
    console.error('usage: TESSERA_PASSWORD=... echo-client.ts <realm.json> <user> <service> <host> <port> [message...]')
    process.exit(2)
  }
  const realm = await loadRealmFile(realmPath)
  const replies = await echo({ realm, user, password, service, host, port: Number(port), messages: messages.length ? messages : ['hello'] })
  for (const r of replies) console.log(r)
}
