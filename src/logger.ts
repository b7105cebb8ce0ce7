/** The pino logger: redacts every path that can hold a secret or a token; pretty only on a TTY. */
import { createRequire } from 'node:module'
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino'

export const REDACT_PATHS = [
  'appSecret', '*.appSecret', 'secret', '*.secret',
  'accessToken', '*.accessToken', 'access_token', '*.access_token', 'token', '*.token',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers["x-authing-access-token"]',
  'data.accessToken', 'body.appSecret', 'body.accessToken'
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
