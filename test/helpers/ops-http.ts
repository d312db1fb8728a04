/** Requests to a KDC's HTTP ops listener, one connection each (no keep-alive pool left behind). */
import http from 'node:http'
import { parsePromText, type PromText } from './prom-text.js'

/** An HTTP answer: status, headers, body text. */
export interface OpsAnswer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** `method path` on 127.0.0.1:port. */
export function opsRequest(port: number, path: string, method = 'GET', host = '127.0.0.1'): Promise<OpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path, method, agent: false, timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        body += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('timeout', () => req.destroy(new Error('ops request timed out')))
    req.on('error', reject)
    req.end()
  })
}

/** GET /metrics, checked to be 200 and parsed strictly. */
export async function scrape(port: number): Promise<PromText> {
  const r = await opsRequest(port, '/metrics')
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.body}`)
  return parsePromText(r.body)
}

/** GET /readyz: status and parsed body. */
export async function readyz(port: number): Promise<{ status: number; body: Record<string, unknown> & { failing: string[] } }> {
  const r = await opsRequest(port, '/readyz')
  return { status: r.status, body: JSON.parse(r.body) as Record<string, unknown> & { failing: string[] } }
}
