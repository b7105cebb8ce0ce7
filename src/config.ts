/** The environment, described by one TypeBox schema with defaults and validated once at start. */
import { readFileSync } from 'node:fs'
import { envSchema } from 'env-schema'
import { Type, type Static, type SchemaOptions } from '@sinclair/typebox'
import { IDENTIFIER_PATTERN } from './schemas/credentials.js'
import { APP_ID_PATTERN, APP_SECRET_PATTERN } from './schemas/token.js'
import { STABLE_RENEWAL_WINDOW_MS } from './tokens/rules.js'

/** A string limited to a few values, as a plain JSON-Schema enum so a bad value gets one clear error. */
function StringEnum<const T extends readonly string[]> (values: T, options: SchemaOptions) {
  return Type.Unsafe<T[number]>({ ...options, type: 'string', enum: values })
}

export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: 'TCP port to listen on.' }),
  HOST: Type.String({ pattern: '^\\S+$', default: '127.0.0.1', description: 'Address to listen on (0.0.0.0 in containers).' }),
  LOG_LEVEL: StringEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
    default: 'info', description: 'pino log level.'
  }),
  REDIS_URL: Type.Optional(Type.String({
    pattern: '^rediss?://',
    description: 'Redis URL (redis:// or rediss://). With no Redis setting at all, tokens are kept in process memory.'
  })),
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({
    pattern: '^[^\\s,:]+:\\d{1,5}(,[^\\s,:]+:\\d{1,5})*$',
    description: 'Redis Cluster seed nodes, host:port,host:port. Instead of REDIS_URL.'
  })),
  REDIS_SENTINELS: Type.Optional(Type.String({
    pattern: '^[^\\s,:]+:\\d{1,5}(,[^\\s,:]+:\\d{1,5})*$',
    description: 'Redis Sentinels, host:port,host:port, with REDIS_SENTINEL_NAME. Instead of REDIS_URL.'
  })),
  REDIS_SENTINEL_NAME: Type.Optional(Type.String({ minLength: 1, description: 'The Sentinel master group name.' })),
  REDIS_USERNAME: Type.Optional(Type.String({ minLength: 1, description: 'Redis ACL user for Cluster and Sentinel (with REDIS_URL, put it in the URL).' })),
  REDIS_PASSWORD: Type.Optional(Type.String({ minLength: 1, description: 'Redis password for Cluster and Sentinel (with REDIS_URL, put it in the URL).' })),
  REDIS_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 60000, default: 2000, description: 'Redis connect timeout.' }),
  REDIS_COMMAND_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 60000, default: 1000, description: 'A Redis command that takes longer fails (the store counts as unavailable).' }),
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
  WECHAT_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 300000, default: 3000, description: 'Upstream TCP/TLS connect timeout.' }),
  WECHAT_HEADERS_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 300000, default: 5000, description: 'Upstream time to response headers.' }),
  WECHAT_BODY_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 300000, default: 5000, description: 'Upstream idle time while reading the body.' }),
  WECHAT_POOL_CONNECTIONS: Type.Integer({ minimum: 1, default: 16, description: 'Upstream connection pool size.' }),
  WECHAT_MAX_RETRIES: Type.Integer({ minimum: 0, maximum: 5, default: 2, description: 'Retries of errcode -1, HTTP 5xx and network failures (never of other errcodes).' }),
  WECHAT_RETRY_BASE_MS: Type.Integer({ minimum: 1, maximum: 60000, default: 200, description: 'Base of the jittered exponential backoff between retries.' }),
  REQUEST_DEADLINE_MS: Type.Integer({ minimum: 100, maximum: 300000, default: 10000, description: 'Longest a caller waits for a token fetch, retries included.' }),
  REFRESH_AHEAD_SECONDS: Type.Integer({
    minimum: 0,
    maximum: 7000,
    default: 600,
    description: 'A served token with less than this left is refreshed in the background (stable mode: at most 290, as WeChat renews only in the last 5 minutes).'
  }),
  LOCK_LEASE_MS: Type.Integer({
    minimum: 200,
    maximum: 600000,
    default: 15000,
    description: 'Lease of the per-app refresh lock; must exceed REQUEST_DEADLINE_MS.'
  }),
  WECHAT_APPS: Type.Optional(Type.String({
    description: 'JSON object of appId to appSecret. When set (or WECHAT_APPS_FILE), only these apps are served and refreshed proactively.'
  })),
  WECHAT_APPS_FILE: Type.Optional(Type.String({ description: 'Path of a JSON file holding the WECHAT_APPS object.' })),
  WECOM_API_BASE: Type.String({
    pattern: '^(mock|https?://[^\\s]+)$',
    default: 'https://qyapi.weixin.qq.com',
    description: 'WeCom API origin, or "mock" to run the built-in WeCom stand-in in-process (offline use).'
  }),
  WECOM_APPS: Type.Optional(Type.String({
    description: 'JSON object of WeCom corpId to its applications (agentId to the application\'s secret). Only these are served; unset, the WeCom route answers 2002.'
  })),
  WECHAT_COMPONENTS: Type.Optional(Type.String({
    description: 'JSON array of the Open Platform third-party platforms (components) served: each {appId, appSecret, token, encodingAESKey, ' +
      'previousEncodingAESKey?}, as WeChat\'s console shows them. WeChat pushes to POST /wechat/components/{appId}/events.'
  })),
  WECHAT_COMPONENTS_FILE: Type.Optional(Type.String({ description: 'Path of a file holding the WECHAT_COMPONENTS JSON (for mounted secrets).' })),
  COMPONENT_ROUTES_WITHOUT_KEYS: Type.Boolean({
    default: false,
    description: 'true serves the component routes without caller keys when AUTH_TOKENS is not set. Off, they refuse every request then ' +
      '(apiCode 2003): an authorizer\'s token needs no secret from the caller, so the caller key is what protects it.'
  }),
  COMPONENT_DAILY_BUDGET: Type.Integer({
    minimum: 1,
    default: 1000,
    description: 'Upstream api_component_token calls allowed per component per day (00:00 Beijing time); the same number of ' +
      'api_authorizer_token calls per authorizer.'
  }),
  AUTHORIZER_LIST_SPACING_SECONDS: Type.Integer({
    minimum: 10,
    maximum: 3600,
    default: 300,
    description: 'How often, at most, a component\'s authorizer list (api_get_authorizer_list) is read from WeChat across instances, to ' +
      'recover refresh tokens no store or instance holds (and once more for refresh tokens WeChat refused); an authorizer it does not hold is answered 4010 without WeChat until then.'
  }),
  WECOM_DAILY_BUDGET: Type.Integer({
    minimum: 1,
    default: 1800,
    description: 'Upstream gettoken calls allowed per WeCom application per day (00:00 Beijing time).'
  }),
  // A clock hour's budget can be spent at the end of one hour and again at the start of the next, within the 60
  // minutes WeCom counts: at most half of WeCom's limit.
  WECOM_CORP_TICKET_HOURLY_BUDGET: Type.Integer({
    minimum: 1,
    maximum: 200,
    default: 200,
    description: 'Upstream get_jsapi_ticket calls allowed per WeCom corp per clock hour (WeCom allows 400 in any hour: at most half).'
  }),
  WECOM_AGENT_TICKET_HOURLY_BUDGET: Type.Integer({
    minimum: 1,
    maximum: 50,
    default: 50,
    description: 'Upstream agent_config ticket calls allowed per WeCom application per clock hour (WeCom allows 100 in any hour: at most half).'
  }),
  WECHAT_IDENTIFIERS: Type.Optional(Type.String({
    description: 'JSON object of Mini Program identifier (the extIdpConnidentifier of the phone route) to appId; each appId must be one of WECHAT_APPS.'
  })),
  SCHEDULER_INTERVAL_SECONDS: Type.Integer({
    minimum: 0,
    maximum: 3600,
    default: 30,
    description: 'How often one instance (lock-elected) checks the configured apps and refreshes those due; 0 turns it off.'
  }),
  UNVERIFIED_CHECK_WINDOW_SECONDS: Type.Integer({
    minimum: 1,
    maximum: 86400,
    default: 600,
    description: 'Window of the two per-caller limits on checking appSecrets not yet known to be right.'
  }),
  UNVERIFIED_CHECKS_PER_APP: Type.Integer({
    minimum: 1,
    default: 5,
    description: 'Upstream checks of appSecrets not yet known to be right, per caller (key name, else address) per app per window: refused or failed ones, and those in flight (an accepted check costs nothing).'
  }),
  UNVERIFIED_CHECKS_PER_CALLER: Type.Integer({
    minimum: 1,
    default: 60,
    description: 'Upstream checks of appSecrets not yet known to be right, per caller per window, over all apps (bounds random appIds); past it with checks still in flight, a check waits for them.'
  }),
  UNVERIFIED_DAILY_BUDGET: Type.Integer({
    minimum: 1,
    default: 100,
    description: 'Upstream calls per app per day (Beijing time) for appSecrets not yet known to be right, apart from DAILY_UPSTREAM_BUDGET.'
  }),
  FINGERPRINT_KEY: Type.Optional(Type.String({
    minLength: 16,
    pattern: '^\\S+$',
    description: 'Key of the HMAC that stands in for appSecrets in the store. Set one (16+ characters) so that Redis write access cannot forge entries.'
  })),
  NEGATIVE_CACHE_SECONDS: Type.Integer({
    minimum: 0,
    maximum: 86400,
    default: 300,
    description: 'How long a non-retryable WeChat refusal (40013, 40125, 40164, 40243, 45009, 8950x) is answered without asking again.'
  }),
  DAILY_UPSTREAM_BUDGET: Type.Integer({
    minimum: 1,
    default: 1800,
    description: 'Upstream token calls allowed per app per day (00:00 Beijing time), below WeChat\'s 2000.'
  }),
  TICKET_DAILY_BUDGET: Type.Integer({
    minimum: 1,
    default: 1000,
    description: 'Upstream getticket calls allowed per app per ticket type per day (00:00 Beijing time); WeChat publishes no number and calls them "very limited".'
  }),
  SESSION_DAILY_BUDGET: Type.Integer({
    minimum: 1,
    default: 100000,
    description: 'Upstream jscode2session calls (Mini Program logins of the decrypt route) allowed per Mini Program per day (00:00 Beijing time).'
  }),
  FORCE_REFRESH_DAILY_LIMIT: Type.Integer({ minimum: 0, maximum: 20, default: 20, description: 'Forced refreshes allowed per app per day (WeChat allows 20).' }),
  FORCE_REFRESH_MIN_INTERVAL_SECONDS: Type.Integer({ minimum: 30, maximum: 86400, default: 30, description: 'Least time between forced refreshes of an app (WeChat: 30 s); in classic mode, between replacements of a reported token.' }),
  HOT_CACHE_MS: Type.Integer({
    minimum: 0,
    maximum: 60000,
    default: 2000,
    description: 'How long a served token is answered from process memory without reading the store; dropped at once when any instance replaces it. 0 turns it off.'
  }),
  HOT_CACHE_MAX_APPS: Type.Integer({ minimum: 1, default: 10000, description: 'Apps kept in the in-process hot cache at most.' }),
  TOKEN_SERVE_MARGIN_SECONDS: Type.Integer({
    minimum: 0,
    maximum: 3600,
    default: 120,
    description: 'A cached token is served only while it has more than this many seconds left.'
  }),
  AUTH_TOKENS: Type.Optional(Type.String({
    description: 'Caller keys, comma-separated, each "name=key" or "key" (16+ characters). When set (or AUTH_TOKENS_FILE), /api routes require one in authorization.'
  })),
  AUTH_TOKENS_FILE: Type.Optional(Type.String({ description: 'Path of a file of caller keys, one "name=key" or "key" a line (# comments).' })),
  RATE_LIMIT_WINDOW_SECONDS: Type.Integer({ minimum: 1, maximum: 86400, default: 60, description: 'Window of the rate limits.' }),
  RATE_LIMIT_PER_CALLER: Type.Integer({
    minimum: 0,
    default: 0,
    description: 'Requests per window per caller (caller key name, else client IP); 0 (the default) turns it off. Shared through Redis.'
  }),
  RATE_LIMIT_PER_APP: Type.Integer({ minimum: 0, default: 0, description: 'Requests per window per appId; 0 (the default) turns it off. Shared through Redis.' }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, maximum: 600000, default: 10000, description: 'On SIGTERM/SIGINT, how long in-flight requests may take before the process exits anyway.' }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 256, maximum: 1048576, default: 8192, description: 'Largest request body accepted.' }),
  REQUEST_TIMEOUT_MS: Type.Integer({
    minimum: 100,
    maximum: 300000,
    default: 15000,
    description: 'Longest a client may take to send a whole request, headers and body; past it, 408 (apiCode 1008) and the connection is closed.'
  }),
  WECHAT_COMPAT_API: Type.Boolean({
    default: false,
    description: 'Answer WeChat\'s own token endpoints (GET /cgi-bin/token, POST /cgi-bin/stable_token, WeCom\'s GET /cgi-bin/gettoken) ' +
      'from the cache, in WeChat\'s shapes, so that a WeChat SDK whose API host points here gets the shared token.'
  }),
  WECHAT_PASSTHROUGH: Type.Boolean({
    default: false,
    description: 'Pass every other WeChat API call under WeChat\'s own paths (/cgi-bin/…, /sns/…, /wxa/…) on to WECHAT_API_BASE, or to WECOM_API_BASE ' +
      'for a WeCom token handed out here, so that only this service\'s address calls WeChat; a token WeChat refuses is replaced once and the call sent ' +
      'again. Needs WECHAT_COMPAT_API=true and caller keys (AUTH_TOKENS).'
  }),
  WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES: Type.Integer({
    minimum: 1024,
    maximum: 104857600,
    default: 20971520,
    description: 'Largest body of a passed-through call (media uploads: WeChat takes up to 20 MB); a larger one is refused (apiCode 1003).'
  }),
  WECHAT_PASSTHROUGH_TIMEOUT_MS: Type.Integer({
    minimum: 1000,
    maximum: 600000,
    default: 60000,
    description: 'Longest a passed-through call may take upstream, from sending it to the last byte of WeChat\'s answer.'
  }),
  WECHAT_PASSTHROUGH_CONNECTIONS: Type.Integer({
    minimum: 1,
    maximum: 4096,
    default: 64,
    description: 'Connections kept to each WeChat origin for passed-through calls (apart from the pool of token fetches).'
  }),
  DOCS_ENABLED: Type.Boolean({
    default: true,
    description: 'Serve the OpenAPI description at /openapi.json and the interactive docs at /docs (not behind caller keys); false turns both off.'
  }),
  MAX_CONNECTIONS: Type.Integer({
    minimum: 1,
    default: 1000,
    description: 'Most client connections open at once; past it, each new connection closes one that is stalled, pipelines deep, leaves ' +
      'its answers unread or sends nothing, else one idle or still sending its request; a caller\'s request that has all arrived is never closed before it is answered.'
  }),
  CONNECTION_GRACE_MS: Type.Integer({
    minimum: 10,
    maximum: 60000,
    default: 1000,
    description: 'Past MAX_CONNECTIONS, connections that have not sent a whole request, or left their answers unread, for this long are closed first; then, after those sending nothing, those idle longer.'
  }),
  METRICS_PORT: Type.Optional(Type.Integer({
    minimum: 0,
    maximum: 65535,
    description: 'Serve GET /metrics on a listener of its own on this port, and not on PORT (where it answers apiCode 1005). Unset: /metrics is on PORT.'
  })),
  METRICS_HOST: Type.Optional(Type.String({ pattern: '^\\S+$', description: 'Address the metrics listener binds (default: HOST); only with METRICS_PORT.' })),
  METRICS_KEY: Type.Optional(Type.String({
    pattern: '^[A-Za-z0-9._~+/-]{16,256}$',
    description: 'When set, GET /metrics needs this key in authorization ("Bearer <key>", as Prometheus sends it), else HTTP 401 (apiCode 2003).'
  })),
  METRICS_MAX_APPS: Type.Integer({
    minimum: 0,
    default: 100,
    description: 'Per-app series exported per metric and credential: the apps with the fewest seconds left, the most quota used today.'
  }),
  METRICS_SCRAPES_PER_SECOND: Type.Integer({
    minimum: 1,
    default: 5,
    description: 'Scrapes of GET /metrics answered per second; more get HTTP 429 (apiCode 4004) with retry-after.'
  })
})

export type Config = Static<typeof ConfigSchema>

/** WeChat renews stable tokens only in their last five minutes: refreshing earlier returns the same token. */
const STABLE_AHEAD_SECONDS = STABLE_RENEWAL_WINDOW_MS / 1000

/** Variables that were replaced, with what to set instead: refused, so a setting is never silently ignored. */
const OBSOLETE: Record<string, string> = {
  SECRET_CHECK_INTERVAL_SECONDS: 'an appSecret not yet known to be right is now limited per caller by UNVERIFIED_CHECKS_PER_APP, ' +
    'UNVERIFIED_CHECKS_PER_CALLER and UNVERIFIED_CHECK_WINDOW_SECONDS, and per app by UNVERIFIED_DAILY_BUDGET'
}

/** The integer variables: their values must be plain decimal digits, where Ajv's coercion would also take 1e3 or 0x10. */
const INTEGERS = new Set(Object.entries(ConfigSchema.properties).filter(([, schema]) => schema.type === 'integer').map(([key]) => key))

/** Validates `env` (process.env by default) against ConfigSchema; throws an error naming the bad variable. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const data: Record<string, string> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') data[key] = value
  }
  for (const [key, value] of Object.entries(data)) {
    if (INTEGERS.has(key) && !/^-?[0-9]+$/.test(value)) throw new Error(`env/${key} must be an integer in plain decimal digits`)
  }
  const config = envSchema<Config>({ schema: ConfigSchema, data, env: false, dotenv: false })
  if (config.WECHAT_API_BASE !== 'mock') {
    if (!URL.canParse(config.WECHAT_API_BASE)) {
      throw new Error('env/WECHAT_API_BASE must be "mock" or an http:// or https:// URL, and does not parse as a URL')
    }
    // The client keeps the origin and the path: anything else would be dropped with nothing said.
    const base = new URL(config.WECHAT_API_BASE)
    if (base.username !== '' || base.password !== '' || base.search !== '' || base.hash !== '') {
      throw new Error('env/WECHAT_API_BASE may hold an origin and a path only: no user:password@, query or #fragment')
    }
  }
  if (config.REDIS_URL !== undefined && !URL.canParse(config.REDIS_URL)) {
    throw new Error('env/REDIS_URL does not parse as a URL (redis://[user:password@]host:port[/db])')
  }
  if (config.METRICS_HOST !== undefined && config.METRICS_PORT === undefined) {
    throw new Error('env/METRICS_HOST needs METRICS_PORT: without it, /metrics is served on PORT')
  }
  const topologies = [config.REDIS_URL, config.REDIS_CLUSTER_NODES, config.REDIS_SENTINELS].filter((v) => v !== undefined)
  if (topologies.length > 1) throw new Error('env/REDIS_URL, env/REDIS_CLUSTER_NODES and env/REDIS_SENTINELS: set one at most')
  if ((config.REDIS_SENTINELS === undefined) !== (config.REDIS_SENTINEL_NAME === undefined)) {
    throw new Error('env/REDIS_SENTINELS and env/REDIS_SENTINEL_NAME go together')
  }
  if (config.METRICS_PORT !== undefined && config.METRICS_PORT !== 0 && config.METRICS_PORT === config.PORT) {
    throw new Error('env/METRICS_PORT must differ from PORT')
  }
  if (config.LOCK_LEASE_MS <= config.REQUEST_DEADLINE_MS) {
    throw new Error('env/LOCK_LEASE_MS must exceed REQUEST_DEADLINE_MS, or a lock could lapse during a fetch')
  }
  const ahead = config.WECHAT_TOKEN_MODE === 'stable' ? Math.min(config.REFRESH_AHEAD_SECONDS, STABLE_AHEAD_SECONDS) : config.REFRESH_AHEAD_SECONDS
  if (ahead <= config.TOKEN_SERVE_MARGIN_SECONDS) {
    throw new Error(`env/REFRESH_AHEAD_SECONDS must exceed TOKEN_SERVE_MARGIN_SECONDS (in stable mode it counts as at most ${STABLE_AHEAD_SECONDS}), ` +
      'or tokens would stop being served before any refresh ahead ran')
  }
  if (config.WECHAT_PASSTHROUGH && !config.WECHAT_COMPAT_API) {
    throw new Error('env/WECHAT_PASSTHROUGH needs WECHAT_COMPAT_API=true: WeChat\'s token endpoints must be answered from the cache, ' +
      'never passed on (a token fetched past the cache would retire the one every other caller holds)')
  }
  for (const [name, replacement] of Object.entries(OBSOLETE)) {
    if (env[name] !== undefined) throw new Error(`env/${name} no longer exists: ${replacement}`)
  }
  loadIdentifiers(config, loadApps(config))
  loadWecomApps(config)
  loadComponents(config)
  const callerKeys = loadCallerKeys(config)
  if (config.WECHAT_PASSTHROUGH && callerKeys.length === 0) {
    throw new Error('env/WECHAT_PASSTHROUGH needs caller keys (AUTH_TOKENS or AUTH_TOKENS_FILE): passed-through calls leave from the address ' +
      'on WeChat\'s IP whitelist, which must not relay anyone\'s calls')
  }
  return config
}

/** host:port,host:port as ioredis wants nodes. */
export function hostPorts (list: string): Array<{ host: string, port: number }> {
  return list.split(',').map((node) => {
    const split = node.lastIndexOf(':')
    return { host: node.slice(0, split), port: Number(node.slice(split + 1)) }
  })
}

/** The value of a variable, or the content of the file its _FILE twin names (for mounted secrets); not both. */
function variableOrFile<V extends 'WECHAT_APPS' | 'AUTH_TOKENS' | 'WECHAT_COMPONENTS'> (config: Partial<Record<V | `${V}_FILE`, string>>, variable: V) {
  const fileVariable = `${variable}_FILE` as const
  const path = config[fileVariable]
  if (!path) return { name: variable, raw: config[variable] }
  if (config[variable] !== undefined) throw new Error(`env/${variable} and env/${fileVariable} cannot both be set`)
  try {
    return { name: fileVariable, raw: readFileSync(path, 'utf8') }
  } catch (err) {
    throw new Error(`env/${fileVariable} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

export interface CallerKey {
  name: string
  key: string
}

const CALLER_KEY = /^[A-Za-z0-9._~+/-]{16,256}$/

/** The caller keys (from AUTH_TOKENS or its file); empty when caller authentication is off. */
export function loadCallerKeys (config: Pick<Config, 'AUTH_TOKENS' | 'AUTH_TOKENS_FILE'>): CallerKey[] {
  const { name, raw } = variableOrFile(config, 'AUTH_TOKENS')
  const entries = raw === undefined
    ? []
    : name === 'AUTH_TOKENS' ? raw.split(',') : raw.split('\n').filter((line) => !line.trim().startsWith('#'))
  const keys: CallerKey[] = []
  for (const [index, entry] of entries.map((e) => e.trim()).filter(Boolean).entries()) {
    const split = entry.indexOf('=')
    const key = split > 0 ? entry.slice(split + 1) : entry
    const caller = split > 0 ? entry.slice(0, split) : `key${index + 1}`
    if (!CALLER_KEY.test(key)) throw new Error(`env/${name}: key ${index + 1} must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / -`)
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(caller)) throw new Error(`env/${name}: the name of key ${index + 1} must be 1 to 64 characters of A-Z a-z 0-9 . _ -`)
    keys.push({ name: caller, key })
  }
  if (raw !== undefined && keys.length === 0) throw new Error(`env/${name} lists no key`)
  return keys
}

const APP_ID = new RegExp(APP_ID_PATTERN)
const APP_SECRET = new RegExp(APP_SECRET_PATTERN)

/** The WECHAT_APPS map (from the variable or the file), or undefined in dynamic mode. */
export function loadApps (config: Pick<Config, 'WECHAT_APPS' | 'WECHAT_APPS_FILE'>): Map<string, string> | undefined {
  const { name, raw } = variableOrFile(config, 'WECHAT_APPS')
  if (raw === undefined) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    throw new Error(`env/${name} must be a JSON object of appId to appSecret`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`env/${name} must be a JSON object of appId to appSecret`)
  }
  const apps = new Map<string, string>()
  for (const [appId, secret] of Object.entries(parsed)) {
    if (!APP_ID.test(appId)) throw new Error(`env/${name}: "${appId.slice(0, 20)}" is not a WeChat appId`)
    if (typeof secret !== 'string' || !APP_SECRET.test(secret)) throw new Error(`env/${name}: the secret of ${appId} is not a WeChat appSecret`)
    if (apps.has(appId.toLowerCase())) throw new Error(`env/${name} lists appId ${appId.toLowerCase()} twice, in two letter cases`)
    apps.set(appId.toLowerCase(), secret)
  }
  if (apps.size === 0) throw new Error(`env/${name} lists no app`)
  return apps
}

const CORP_ID = /^w[wx][0-9a-f]{16}$/
const AGENT_ID = /^\d{1,10}$/
const CORP_SECRET = /^[A-Za-z0-9_-]{16,128}$/

/** The WECOM_APPS map (corpId to agentId to secret), or undefined when it is not set. No secret twice. */
export function loadWecomApps (config: Pick<Config, 'WECOM_APPS'>): Map<string, Map<string, string>> | undefined {
  const raw = config.WECOM_APPS
  if (raw === undefined) return undefined
  const shape = 'env/WECOM_APPS must be a JSON object of corpId to {agentId: secret}'
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    throw new Error(shape)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(shape)
  const corps = new Map<string, Map<string, string>>()
  const secrets = new Set<string>()
  for (const [corpId, applications] of Object.entries(parsed)) {
    if (!CORP_ID.test(corpId)) throw new Error(`env/WECOM_APPS: "${corpId.slice(0, 20)}" is not a WeCom corpId (ww or wx and 16 lower-case hexadecimal characters)`)
    if (typeof applications !== 'object' || applications === null || Array.isArray(applications)) throw new Error(shape)
    const agents = new Map<string, string>()
    for (const [agentId, secret] of Object.entries(applications as Record<string, unknown>)) {
      if (!AGENT_ID.test(agentId)) throw new Error(`env/WECOM_APPS: the agentId "${agentId.slice(0, 12)}" of ${corpId} is not a number`)
      if (typeof secret !== 'string' || !CORP_SECRET.test(secret)) throw new Error(`env/WECOM_APPS: the secret of ${corpId} application ${agentId} is not a WeCom secret`)
      if (secrets.has(secret)) throw new Error(`env/WECOM_APPS: the secret of ${corpId} application ${agentId} is another application's`)
      secrets.add(secret)
      agents.set(agentId, secret)
    }
    if (agents.size === 0) throw new Error(`env/WECOM_APPS: ${corpId} lists no application`)
    corps.set(corpId, agents)
  }
  if (corps.size === 0) throw new Error('env/WECOM_APPS lists no corp')
  return corps
}

/** A component (Open Platform third-party platform) of WECHAT_COMPONENTS, as WeChat's console shows it. */
export interface ComponentConfig {
  appId: string
  appSecret: string
  token: string
  encodingAESKey: string
  previousEncodingAESKey?: string | undefined
}

const COMPONENT_TOKEN = /^[A-Za-z0-9]{3,32}$/
const ENCODING_AES_KEY = /^[A-Za-z0-9+/]{43}$/

/** The components of WECHAT_COMPONENTS (or its file) by appId, or undefined when neither is set. No value is repeated in an error. */
export function loadComponents (config: Pick<Config, 'WECHAT_COMPONENTS' | 'WECHAT_COMPONENTS_FILE'>): Map<string, ComponentConfig> | undefined {
  const { name, raw } = variableOrFile(config, 'WECHAT_COMPONENTS')
  if (raw === undefined) return undefined
  const shape = `env/${name} must be a JSON array of {appId, appSecret, token, encodingAESKey, previousEncodingAESKey?}`
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    throw new Error(shape)
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw new Error(shape)
  const components = new Map<string, ComponentConfig>()
  parsed.forEach((item: unknown, i) => {
    const at = `env/${name}: component ${i + 1}`
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw new Error(shape)
    const { appId, appSecret, token, encodingAESKey, previousEncodingAESKey, ...rest } = item as Record<string, unknown>
    if (Object.keys(rest).length > 0) throw new Error(`${at} has a field WeChat's console does not give (${Object.keys(rest).map((key) => key.slice(0, 30)).join(', ')})`)
    if (typeof appId !== 'string' || !APP_ID.test(appId)) throw new Error(`${at}: appId is not a WeChat appId (wx and 16 hexadecimal characters)`)
    if (components.has(appId)) throw new Error(`${at}: ${appId} is listed twice`)
    if (typeof appSecret !== 'string' || !APP_SECRET.test(appSecret)) throw new Error(`${at} (${appId}): appSecret is not 32 hexadecimal characters`)
    if (typeof token !== 'string' || !COMPONENT_TOKEN.test(token)) throw new Error(`${at} (${appId}): token is not 3 to 32 letters and digits, as WeChat's console takes it`)
    if (typeof encodingAESKey !== 'string' || !ENCODING_AES_KEY.test(encodingAESKey)) throw new Error(`${at} (${appId}): encodingAESKey is not 43 characters of base64`)
    if (previousEncodingAESKey !== undefined && (typeof previousEncodingAESKey !== 'string' || !ENCODING_AES_KEY.test(previousEncodingAESKey))) {
      throw new Error(`${at} (${appId}): previousEncodingAESKey is not 43 characters of base64`)
    }
    components.set(appId, { appId, appSecret, token, encodingAESKey, ...(previousEncodingAESKey === undefined ? {} : { previousEncodingAESKey }) })
  })
  return components
}

const IDENTIFIER = new RegExp(IDENTIFIER_PATTERN)

/** The WECHAT_IDENTIFIERS map (identifier to appId, each an app of WECHAT_APPS), or undefined when it is not set. */
export function loadIdentifiers (config: Pick<Config, 'WECHAT_IDENTIFIERS'>, apps: ReadonlyMap<string, string> | undefined): Map<string, string> | undefined {
  const raw = config.WECHAT_IDENTIFIERS
  if (raw === undefined) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    parsed = undefined
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error('env/WECHAT_IDENTIFIERS must be a JSON object of identifier to appId')
  }
  if (!apps) throw new Error('env/WECHAT_IDENTIFIERS needs WECHAT_APPS (or WECHAT_APPS_FILE), which holds the secret of each Mini Program')
  const identifiers = new Map<string, string>()
  for (const [identifier, appId] of Object.entries(parsed)) {
    if (!IDENTIFIER.test(identifier)) throw new Error(`env/WECHAT_IDENTIFIERS: "${identifier.slice(0, 20)}" must be 1 to 128 characters of A-Z a-z 0-9 . _ -`)
    if (typeof appId !== 'string' || !apps.has(appId.toLowerCase())) {
      throw new Error(`env/WECHAT_IDENTIFIERS: the appId of ${identifier} is not one of WECHAT_APPS`)
    }
    identifiers.set(identifier, appId.toLowerCase())
  }
  if (identifiers.size === 0) throw new Error('env/WECHAT_IDENTIFIERS lists no identifier')
  return identifiers
}
