/** The environment, described by one TypeBox schema with defaults and validated once at start. */
import { envSchema } from 'env-schema'
import { Type, type Static, type SchemaOptions } from '@sinclair/typebox'

/** A string limited to a few values, as a plain JSON-Schema enum so a bad value gets one clear error. */
function StringEnum<const T extends readonly string[]> (values: T, options: SchemaOptions) {
  return Type.Unsafe<T[number]>({ ...options, type: 'string', enum: values })
}

export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: 'TCP port to listen on.' }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address to listen on (0.0.0.0 in containers).' }),
  LOG_LEVEL: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
    default: 'info', description: 'pino log level.'
  }),
  REDIS_URL: Type.Optional(Type.String({
    pattern: '^rediss?://',
    description: 'Redis URL (redis:// or rediss://). Unset: tokens are kept in process memory.'
  })),
  REDIS_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 2000, description: 'Redis connect timeout.' }),
  REDIS_COMMAND_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 1000, description: 'A Redis command that takes longer fails (the store counts as unavailable).' }),
  REDIS_KEY_PREFIX: Type.String({
    pattern: '^[A-Za-z0-9:_-]{1,64}$',
    default: 'wxtoken',
    description: 'Prefix of every Redis key.'
  }),
  WECHAT_API_BASE: Type.String({
    pattern: '^(mock|https?://[^\\s]+)$',
    default: 'https://api.weixin.qq.com',
    description: 'WeChat API origin, or "mock" to run the built-in WeChat stand-in in-process (offline use).'
  }),
  WECHAT_TOKEN_MODE: StringEnum(['stable', 'classic'], {
    default: 'stable',
    description: 'stable: POST /cgi-bin/stable_token (idempotent). classic: GET /cgi-bin/token (each fetch invalidates the previous token).'
  }),
  WECHAT_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 3000, description: 'Upstream TCP/TLS connect timeout.' }),
  WECHAT_HEADERS_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 5000, description: 'Upstream time to response headers.' }),
  WECHAT_BODY_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 5000, description: 'Upstream idle time while reading the body.' }),
  WECHAT_POOL_CONNECTIONS: Type.Integer({ minimum: 1, default: 16, description: 'Upstream connection pool size.' }),
  WECHAT_MAX_RETRIES: Type.Integer({ minimum: 0, maximum: 5, default: 2, description: 'Retries of errcode -1, HTTP 5xx and network failures (never of other errcodes).' }),
  WECHAT_RETRY_BASE_MS: Type.Integer({ minimum: 1, default: 200, description: 'Base of the jittered exponential backoff between retries.' }),
  REQUEST_DEADLINE_MS: Type.Integer({ minimum: 100, default: 10000, description: 'Longest a caller waits for a token fetch, retries included.' }),
  TOKEN_SERVE_MARGIN_SECONDS: Type.Integer({
    minimum: 0,
    maximum: 3600,
    default: 120,
    description: 'A cached token is served only while it has more than this many seconds left.'
  }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10000, description: 'On SIGTERM/SIGINT, how long in-flight requests may take before the process exits anyway.' }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 256, maximum: 1048576, default: 8192, description: 'Largest request body accepted.' })
})

export type Config = Static<typeof ConfigSchema>

/** Validates `env` (process.env by default) against ConfigSchema; throws an error naming the bad variable. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const data: Record<string, string> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') data[key] = value
  }
  return envSchema<Config>({ schema: ConfigSchema, data, dotenv: false })
}
