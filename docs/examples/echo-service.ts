/**
 * Echo service: loads its keytab, accepts SecureSessions and echoes every message.
 *
 *   npx tsx docs/examples/echo-service.ts <keytab> <principal> [port]
 *   npx tsx docs/examples/echo-service.ts echo.keytab echo/localhost@EXAMPLE.COM 7000
 *
 * In an application, import from 'tessera' instead of '../../src/index.js'.
 */
import net from 'node:net'
import { pathToFileURL } from 'node:url'
import { readKeytab, SecureSession, ServiceVerifier } from '../../src/index.js'

export interface EchoServiceOptions {
  /** Path of the service's keytab (mode 0600). */
  keytab: string
  /** The service principal, e.g. echo/localhost@EXAMPLE.COM. */
  principal: string
  host?: string
  /** @default 0 (any free port) */
  port?: number
  log?: (line: string) => void
}

/** Start the echo service; resolves with the listening server. */
export async function startEchoService(opts: EchoServiceOptions): Promise<net.Server> {
  const log = opts.log ?? console.log
  // No KDC is contacted: the keytab is all a service needs to check tickets.
  const verifier = new ServiceVerifier({ keytab: await readKeytab(opts.keytab), principal: opts.principal })
  const server = net.createServer(async (socket) => {
    try {
      const session = await SecureSession.server(socket, { verifier })
      log(`${session.peer} connected`)
      for await (const message of session) await session.send(message)
      log(`${session.peer} left`)
    } catch (err) {
      // A refused ticket, a tampered message, a truncated stream...: the session is over.
      log(`session ended: ${(err as Error).message}`)
    }
  })
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve))
  return server
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [keytab, principal, port] = process.argv.slice(2)
  if (!keytab || !principal) {
    console.error('usage: echo-service.ts <keytab> <principal> [port]')
    process.exit(2)
  }
  const server = await startEchoService({ keytab, principal, port: Number(port ?? 7000) })
  console.log(`echo service ${principal} listening on`, server.address())
}
