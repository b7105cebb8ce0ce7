/** The pino logger: redacts every path that can hold a secret, a token, a ticket or a phone number; pretty only on a TTY. */
import { createRequire } from 'node:module'
import type { FastifyBaseLogger } from 'fastify'
import { pino, type Bindings, type ChildLoggerOptions, type DestinationStream, type LogFn, type Logger, type LoggerOptions } from 'pino'

export const REDACT_PATHS = [
  'appSecret', '*.appSecret', 'secret', '*.secret',
  'accessToken', '*.accessToken', 'access_token', '*.access_token', 'token', '*.token',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers["x-authing-access-token"]',
  'data.accessToken', 'body.appSecret', 'body.accessToken',
  // The Open Platform's fields, in WeChat's spelling (the WeChat-shaped component endpoints): never logged by this code.
  'component_appsecret', '*.component_appsecret', 'component_access_token', '*.component_access_token',
  'component_verify_ticket', '*.component_verify_ticket', 'pre_auth_code', '*.pre_auth_code',
  // Tickets, phone codes and numbers: never logged by this code; redacted should a line ever carry one.
  'ticket', '*.ticket', 'body.code', 'phoneNumber', '*.phoneNumber', 'purePhoneNumber', '*.purePhoneNumber', 'phone_info', '*.phone_info'
]

export function createLogger (level: string, destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' }
  }
  if (destination) return pino(options, destination)
  if (process.stdout.isTTY && canResolve('pino-pretty')) {
    return pino({ ...options, transport: { target: 'pino-pretty' } })
  }
  return pino(options)
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal']

/**
 * A child of `parent` that is made only when a line is logged at a level `parent` has on: making a pino child
 * serializes (and redacts) its bindings, which a request that logs nothing should not pay for.
 */
class DeferredChild implements FastifyBaseLogger {
  #made: FastifyBaseLogger | undefined
  readonly #parent: FastifyBaseLogger
  readonly #bindings: () => Bindings

  constructor (parent: FastifyBaseLogger, bindings: () => Bindings) {
    this.#parent = parent
    this.#bindings = bindings
  }

  get level (): string { return this.#made?.level ?? this.#parent.level }
  set level (level: string) { this.#child().level = level }
  get silent (): LogFn { return this.#parent.silent }

  trace (...args: Parameters<LogFn>): void { this.#log('trace', args) }
  debug (...args: Parameters<LogFn>): void { this.#log('debug', args) }
  info (...args: Parameters<LogFn>): void { this.#log('info', args) }
  warn (...args: Parameters<LogFn>): void { this.#log('warn', args) }
  error (...args: Parameters<LogFn>): void { this.#log('error', args) }
  fatal (...args: Parameters<LogFn>): void { this.#log('fatal', args) }

  child (bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#child().child(bindings, options)
  }

  #child (): FastifyBaseLogger {
    this.#made ??= this.#parent.child(this.#bindings())
    return this.#made
  }

  #log (level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal', args: Parameters<LogFn>): void {
    const current = LEVELS.indexOf(this.level)
    if (current !== -1 && current <= LEVELS.indexOf(level)) this.#child()[level](...args)
  }
}

export function deferredChild (parent: FastifyBaseLogger, bindings: () => Bindings): FastifyBaseLogger {
  return new DeferredChild(parent, bindings)
}

/**
 * Fastify's childLoggerFactory: each request's logger (with its reqId) is a deferred child, so a request that logs
 * nothing makes no pino child. With options (a route's own log level) the child is made at once.
 */
export function requestLoggerFactory (logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  if (Object.keys(options).length > 0) return logger.child(bindings, options)
  return deferredChild(logger, () => bindings)
}

/** Only the harmless parts of an error: drivers attach their arguments (tokens among them) to errors. */
export function safeError (err: unknown): { type: string, message: string, code?: string } {
  if (!(err instanceof Error)) return { type: typeof err, message: 'non-error thrown' }
  const code = (err as { code?: unknown }).code
  return { type: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}) }
}

function canResolve (name: string): boolean {
  try {
    createRequire(import.meta.url).resolve(name)
    return true
  } catch {
    return false
  }
}
