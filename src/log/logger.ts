/** winston loggers: an operational log and a separate security/audit log (JSON lines). Key bytes never pass. */
import fs from 'node:fs'
import path from 'node:path'
import winston from 'winston'
import Transport from 'winston-transport'

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
  /** Reopen the log files at their paths (after logrotate moved them; SIGHUP). */
  reopen(): Promise<void>
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

/**
 * An append-only file of lines, written in batches (the lines of one turn of the event loop
 * in one write: the KDC logs every request), that can be reopened at the same path: after
 * logrotate renamed it, the next lines go to a new file and none is lost (docs/decisions/0010).
 */
class LineFile {
  private lines: string[] = []
  private scheduled = false
  private stream: fs.WriteStream

  constructor(readonly file: string) {
    this.stream = LineFile.open(file)
  }

  private static open(file: string): fs.WriteStream {
    const s = fs.createWriteStream(file, { flags: 'a', mode: 0o600 })
    s.on('error', () => {})
    return s
  }

  push(line: string): void {
    this.lines.push(line)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false
    if (this.lines.length === 0 || this.stream.destroyed) return
    this.stream.write(`${this.lines.join('\n')}\n`)
    this.lines = []
  }

  /** Write what is pending to the file open now, then open the path again (a new file if it was renamed). */
  reopen(): Promise<void> {
    this.flush()
    const old = this.stream
    this.stream = LineFile.open(this.file)
    return LineFile.end(old)
  }

  /** Write what is pending and close the file. */
  close(): Promise<void> {
    this.flush()
    return LineFile.end(this.stream)
  }

  private static end(s: fs.WriteStream): Promise<void> {
    return new Promise((resolve) => {
      s.end(() => resolve())
      setTimeout(resolve, 1000).unref()
    })
  }
}

/** The security log's transport: one JSON object per line, exactly the event's fields with `time` first. */
class JsonLinesFile extends Transport {
  readonly out: LineFile

  constructor(file: string) {
    super()
    this.out = new LineFile(file)
  }

  override log(info: Record<string, unknown>, next: () => void): void {
    const { level: _level, message: _message, ...fields } = info
    this.out.push(JSON.stringify({ time: new Date().toISOString(), ...fields }))
    next()
  }
}

// winston puts the formatted line under this symbol (triple-beam's MESSAGE).
const MESSAGE = Symbol.for('message')

/** The operational log's file transport: the line winston formatted, reopenable like the security log. */
class OpsLogFile extends Transport {
  readonly out: LineFile

  constructor(file: string, format: winston.Logform.Format) {
    super({ format })
    this.out = new LineFile(file)
  }

  override log(info: Record<string | symbol, unknown>, next: () => void): void {
    this.out.push(String(info[MESSAGE]))
    next()
  }
}

const noop = (): void => {}

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
  let secFile: JsonLinesFile | undefined
  let opsFile: OpsLogFile | undefined
  if (opts.dir) {
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 })
    opsFile = new OpsLogFile(
      path.join(opts.dir, 'kdc.log'),
      winston.format.combine(redactFormat(), winston.format.timestamp(), winston.format.json()),
    )
    transports.push(opsFile)
    secFile = new JsonLinesFile(path.join(opts.dir, 'security.log'))
  }
  if (transports.length === 0) transports.push(new winston.transports.Console({ silent: true }))
  const ops = winston.createLogger({ level: opts.level ?? 'info', transports })
  const sink = opts.securitySink
  return {
    ops,
    security: {
      log(ev: SecurityEvent) {
        if (!sink && !secFile) return
        const clean = redact(ev) as SecurityEvent
        if (sink) sink.push({ ...clean, time: new Date().toISOString() })
        // The KDC writes one line per request: the event goes straight to the winston
        // transport, skipping the Logger's stream pipeline (8 µs a line; docs/decisions/0005).
        secFile?.log(clean as unknown as Record<string, unknown>, noop)
      },
    },
    reopen: async () => {
      await Promise.all([opsFile?.out.reopen(), secFile?.out.reopen()])
    },
    close: async () => {
      const ends = [ops].map(
        (l) =>
          new Promise<void>((resolve) => {
            l.on('finish', () => resolve())
            l.end()
            setTimeout(resolve, 500).unref()
          }),
      )
      await Promise.all(ends)
      await Promise.all([opsFile?.out.close(), secFile?.out.close()])
    },
  }
}
