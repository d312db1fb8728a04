/**
 * The HTTP operations listener: GET /metrics (Prometheus text), /healthz (alive) and /readyz
 * (ready to serve). Read-only, on its own port, loopback unless configured otherwise; Node's
 * http module, no framework. Nothing here changes the KDC.
 */
import http from 'node:http'
import type net from 'node:net'
import type { WireLogger } from '../wire/server.js'
import { discoveryDocument } from '../krb/jwks.js'
import type { KdcMetrics } from './metrics.js'

/** One readiness check: `ok`, or why not. */
export interface ReadinessCheck {
  name: 'database' | 'listeners' | 'draining'
  ok: boolean
  /** Why not (a short phrase), absent when ok. */
  detail?: string
}

/** What the ops listener asks the KDC. */
export interface OpsProbe {
  /** The readiness checks, in order. */
  checks(): ReadinessCheck[]
  /** Facts for /readyz's body and `kdc status`: version, realm, listeners, uptime, principals. */
  info(): Record<string, unknown>
}

/** Options of an OpsServer. */
export interface OpsServerOptions {
  /** Address to bind. @default "127.0.0.1" */
  host?: string
  /** Port; 0 = any free port. */
  port: number
  probe: OpsProbe
  /** Absent: /metrics answers 404. */
  metrics?: KdcMetrics
  /**
   * The realm's JWKS (public signing keys) for `/.well-known/jwks.json`, and its JWT issuer for
   * `/.well-known/openid-configuration`. Absent: both answer 404.
   */
  jwks?: { keys: () => Promise<unknown>; issuer: string }
  logger?: WireLogger
}

/**
 * The body of /readyz, in the MicroProfile Health shape Keycloak and Quarkus serve
 * (`status` UP or DOWN, `checks` with a name and status each), plus the names of the
 * failing checks and the facts `kdc status` shows.
 */
export interface ReadyzBody {
  status: 'UP' | 'DOWN'
  checks: { name: string; status: 'UP' | 'DOWN'; detail?: string }[]
  /** Name of every check that failed (empty when ready). */
  failing: string[]
  [k: string]: unknown
}

/** The readiness answer: HTTP status (200 or 503) and JSON body. */
export function readiness(probe: OpsProbe): { status: number; body: ReadyzBody } {
  const checks = probe.checks()
  const failing = checks.filter((c) => !c.ok)
  const body: ReadyzBody = {
    status: failing.length === 0 ? 'UP' : 'DOWN',
    checks: checks.map((c) => (c.ok ? { name: c.name, status: 'UP' } : { name: c.name, status: 'DOWN', detail: c.detail ?? 'failed' })),
    failing: failing.map((c) => c.name),
    ...probe.info(),
  }
  return { status: failing.length === 0 ? 200 : 503, body }
}

const COMMON_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' } as const

/** The ops HTTP listener of one KDC. */
export class OpsServer {
  private readonly server: http.Server
  private closed: Promise<void> | undefined

  constructor(private readonly opts: OpsServerOptions) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        opts.logger?.error('ops request failed', { path: req.url, err: err instanceof Error ? err.message : String(err) })
        if (!res.headersSent) this.send(res, req, 500, 'text/plain; charset=utf-8', 'internal error\n')
        else res.destroy()
      })
    })
    // Scrapers and probes send small requests and come back often: keep slow clients short.
    this.server.headersTimeout = 10_000
    this.server.requestTimeout = 10_000
    this.server.keepAliveTimeout = 5_000
  }

  /** Start listening; resolves with the bound address. */
  listen(): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err)
      this.server.once('error', onError)
      this.server.listen(this.opts.port, this.opts.host ?? '127.0.0.1', () => {
        this.server.off('error', onError)
        this.server.on('error', (err) => this.opts.logger?.error('ops listener error', { err: err.message }))
        resolve(this.server.address() as net.AddressInfo)
      })
    })
  }

  /** The bound address (after listen). */
  address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo
  }

  /** Stop listening and close every connection. Calling it again returns the same promise. */
  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
    return this.closed
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // Read-only: anything but GET and HEAD is refused before the path is looked at.
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      this.send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed\n')
      return
    }
    const path = (req.url ?? '/').split('?')[0]
    switch (path) {
      case '/healthz':
        // Liveness: the process answers. No checks: a closed database is a readiness matter.
        this.send(res, req, 200, 'application/json', `${JSON.stringify({ status: 'UP', checks: [] })}\n`)
        return
      case '/readyz': {
        const r = readiness(this.opts.probe)
        this.send(res, req, r.status, 'application/json', `${JSON.stringify(r.body)}\n`)
        return
      }
      case '/.well-known/jwks.json':
        if (this.opts.jwks) {
          this.send(res, req, 200, 'application/jwk-set+json', `${JSON.stringify(await this.opts.jwks.keys())}\n`)
          return
        }
        break
      case '/.well-known/openid-configuration':
        if (this.opts.jwks) {
          const a = this.address()
          const host = a.family === 'IPv6' ? `[${a.address}]` : a.address
          const doc = discoveryDocument(this.opts.jwks.issuer, `http://${host}:${a.port}/.well-known/jwks.json`)
          this.send(res, req, 200, 'application/json', `${JSON.stringify(doc)}\n`)
          return
        }
        break
      case '/metrics':
        if (this.opts.metrics) {
          const text = await this.opts.metrics.metrics()
          this.send(res, req, 200, this.opts.metrics.contentType, text)
          return
        }
        break
    }
    this.send(res, req, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz, /readyz or /.well-known/jwks.json\n')
  }

  private send(res: http.ServerResponse, req: http.IncomingMessage, status: number, type: string, body: string): void {
    res.writeHead(status, { ...COMMON_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  }
}
