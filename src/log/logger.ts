/** winston loggers: an operational log and a separate security/audit log (JSON lines). Key bytes never pass. */
import fs from 'node:fs'
import path from 'node:path'
import winston from 'winston'

/** Options of createLoggers. */
export interface LogOptions {
  /** Directory for kdc.log and security.log (created 0700); absent = no files. */
  dir?: string
  /** Operational log level. @default "info" */
  level?: string
  /** Also log to the console (stderr). @default true */
  console?: boolean
  /** Security events also go to this array (tests). */
  securitySink?: SecurityEvent[]
}

/** One security/audit event. */
export interface SecurityEvent {
  time?: string | undefined
  event: string
  client?: string | undefined
  service?: string | undefined
  peer?: string | undefined
  outcome: 'ok' | 'fail' | 'info'
  reason?: string | undefined
  [k: string]: unknown
}

/** The pair of loggers a daemon uses. */
export interface Loggers {
  ops: winston.Logger
  security: { log(ev: SecurityEvent): void }
  close(): Promise<void>
}

const SECRET_FIELD = /pass(word)?|secret|key|ticket|token|seed/i

/** Drop binary values and fields whose name suggests a secret: nothing secret reaches a log line. */
export function redact(meta: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(meta)) {
    if (v instanceof Uint8Array) continue
    if (SECRET_FIELD.test(k) && typeof v !== 'number' && typeof v !== 'boolean') continue
    out[k] = v !== null && typeof v === 'object' && !Array.isArray(v) ? redact(v as Record<string, unknown>) : v
  }
  return out
}

const redactFormat = winston.format((info) => {
  for (const k of Object.keys(info)) {
    const v = info[k]
    if (v instanceof Uint8Array || (SECRET_FIELD.test(k) && typeof v === 'string' && k !== 'message')) delete info[k]
  }
  return info
})

/** Create the operational and security loggers. */
export function createLoggers(opts: LogOptions = {}): Loggers {
  const transports: winston.transport[] = []
  if (opts.console ?? true)
    transports.push(
      new winston.transports.Console({
        stderrLevels: ['error', 'warn', 'info', 'debug'],
        format: winston.format.combine(redactFormat(), winston.format.timestamp(), winston.format.simple()),
      }),
    )
  const secTransports: winston.transport[] = []
  if (opts.dir) {
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 })
    transports.push(
      new winston.transports.File({
        filename: path.join(opts.dir, 'kdc.log'),
        options: { mode: 0o600 },
        format: winston.format.combine(redactFormat(), winston.format.timestamp(), winston.format.json()),
      }),
    )
    secTransports.push(
      new winston.transports.File({
        filename: path.join(opts.dir, 'security.log'),
        options: { mode: 0o600 },
        format: winston.format.combine(winston.format.timestamp({ alias: 'time' }), winston.format.json()),
      }),
    )
  }
  if (transports.length === 0) transports.push(new winston.transports.Console({ silent: true }))
  const ops = winston.createLogger({ level: opts.level ?? 'info', transports })
  const secLogger = secTransports.length ? winston.createLogger({ level: 'info', transports: secTransports }) : undefined
  const sink = opts.securitySink
  return {
    ops,
    security: {
      log(ev: SecurityEvent) {
        const clean = redact(ev) as SecurityEvent
        if (sink) sink.push({ ...clean, time: new Date().toISOString() })
        secLogger?.info(clean.event, clean)
      },
    },
    close: async () => {
      const ends = [ops, ...(secLogger ? [secLogger] : [])].map(
        (l) =>
          new Promise<void>((resolve) => {
            l.on('finish', () => resolve())
            l.end()
            setTimeout(resolve, 500).unref()
          }),
      )
      await Promise.all(ends)
    },
  }
}
