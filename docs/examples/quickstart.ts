// Tessera in one file: a realm, a login, a service ticket, a service that checks it with its
// keytab, an encrypted echo over TCP, and a clean shutdown. From a checkout:
//   npx tsx docs/examples/quickstart.ts
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { KdcClient, readKeytab, SecureSession, ServiceVerifier, startKdc } from 'tessera'

const PASSWORD = 'correct horse battery staple'

// A KDC in this process: an in-memory realm (TESSERA.TEST) on 127.0.0.1, ephemeral ports, no log output.
const kdc = await startKdc({ config: { log: { console: false } } })
await kdc.addPrincipal('alice', { password: PASSWORD })
await kdc.addPrincipal('echo/localhost')
const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-quickstart-'))
const keytabFile = path.join(dir, 'echo.keytab')
await kdc.exportKeytab('echo/localhost', keytabFile) // mode 0600: the service's keys

// The service: checks tickets with its keytab alone (no KDC call), then echoes each message.
const verifier = new ServiceVerifier({ keytab: await readKeytab(keytabFile), principal: 'echo/localhost' })
const server = net.createServer(async (socket) => {
  try {
    const session = await SecureSession.server(socket, { verifier })
    for await (const message of session) await session.send(message)
  } catch (err) {
    console.error(`session ended: ${(err as Error).message}`)
  }
})
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
const { port } = server.address() as net.AddressInfo

// The client: log in, get a ticket for the service, open an encrypted, mutually authenticated session.
const client = new KdcClient(kdc.realmFile)
const tgt = await client.login('alice', PASSWORD)
const ticket = await client.getServiceTicket(tgt, 'echo/localhost')
const session = await SecureSession.client(net.connect({ host: '127.0.0.1', port }), { creds: ticket, now: () => client.now() })
const replies = session[Symbol.asyncIterator]()
await session.send(new TextEncoder().encode('hello'))
const reply = await replies.next()
console.log(`${session.peer} echoed: ${new TextDecoder().decode(reply.value)}`)

// Clean shutdown: a sealed close (the service sees the end, not a cut), then everything else.
await session.close()
client.close()
await new Promise<void>((resolve) => server.close(() => resolve()))
await kdc.close()
await rm(dir, { recursive: true, force: true })
