/**
 * The WeChat client: one undici Pool, bounded retries inside a deadline. It fetches access tokens (stable or classic
 * mode) and makes the calls that need one: getticket (JS-SDK and card tickets) and the Mini Program phone number.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, errors as undiciErrors } from 'undici'
import type { ApiCodeName } from '../api-codes.js'
import { AppError } from '../errors.js'
import type { Metrics } from '../metrics.js'
import { MAX_TOKEN_LIFE_MS, type TokenMode } from './access-token.js'
import { WechatApiError, type WechatApi } from './errcodes.js'

export interface WechatClientOptions {
  baseUrl: string
  mode: TokenMode
  connectTimeoutMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
  connections: number
  maxRetries: number
  retryBaseMs: number
  /**
   * REQUEST_DEADLINE_MS: with the headers timeout, the time WeChat is given to answer. An attempt cut by the caller's
   * deadline with much less left (after a long wait for another instance's fetch, say) says nothing of WeChat.
   */
  requestDeadlineMs?: number
  now?: () => number
  metrics?: Metrics
}

export interface FetchedToken {
  accessToken: string
  /** Epoch milliseconds, counted from when the request was sent. */
  expiresAt: number
  /** Epoch milliseconds when the request that got it was sent, and when WeChat's answer arrived: WeChat issued it in between. */
  sentAt: number
  receivedAt: number
}

/** An authorizer's token, with the refresh token WeChat answered alongside (the same, or its replacement). */
export interface AuthorizerToken extends FetchedToken {
  authorizerAppId: string
  refreshToken: string
}

/** A page of a component's authorizer list: the total, and each authorizer with its refresh token. */
export interface AuthorizerPage {
  total: number
  authorizers: Array<{ authorizerAppId: string, refreshToken: string }>
}

/** How the guards follow each attempt of a fetch: they charge it, give back what was not sent, and bound retries. */
export interface AttemptControl {
  /** Runs before every attempt, retries included (the quota governor charges each one); a rejection stops the fetch. */
  beforeAttempt?: () => Promise<void>
  /**
   * Runs after an attempt whose request was never sent (a refused connection, a failed DNS lookup): WeChat saw
   * nothing, so the charge is given back.
   */
  notSent?: () => Promise<void>
  /** Retries after the first attempt, instead of WECHAT_MAX_RETRIES (0 while the app's fetches are backed off). */
  maxRetries?: number
}

export interface FetchOptions extends AttemptControl {
  /** Epoch milliseconds after which no further attempt is made and the caller gets an error. */
  deadline: number
  forceRefresh?: boolean
}

/** What getuserphonenumber answers in `phone_info`: personal data, never logged, cached or counted by appId. */
/** What jscode2session answers that this service uses: the user's session key, 16 bytes. Never logged or stored. */
export interface LoginSession {
  sessionKey: Buffer
}

export interface PhoneInfo {
  phoneNumber: string
  purePhoneNumber: string
  countryCode: string
  watermark: { timestamp: number, appid: string }
}

interface UpstreamRequest { method: 'GET' | 'POST', path: string, headers?: Record<string, string>, body?: string }

/** One kind of upstream call: its endpoint label, how its errcodes read, its request, and its answer. */
interface Call<T> {
  endpoint: string
  api: WechatApi
  request: UpstreamRequest
  /** Parses an answer whose errcode is 0 (or absent); `sentAt` is when the attempt was sent. */
  parse: (record: Record<string, unknown>, sentAt: number) => T
  /**
   * Whether a request that may have reached WeChat is sent again after a network failure or a timeout. Not for a
   * call that spends what it carries (a phone code works once): it is retried only when refused before sending.
   */
  idempotent: boolean
  /**
   * Whether errcode -1 (system busy) is retried: not for a call whose input may be spent by WeChat on the way (a login
   * code, which WeChat may have used before it answered busy).
   */
  retryBusy?: boolean
  /** The largest answer taken (MAX_BODY_BYTES unless the call's answers are longer). */
  maxBodyBytes?: number
}

const MAX_BODY_BYTES = 64 * 1024
/**
 * A page of api_get_authorizer_list: 500 authorizers at about 140 bytes each (a 58-character refresh token) is about
 * 70 KB, and the parser takes refresh tokens of up to 512 characters (about 300 KB for a page).
 */
const AUTHORIZER_LIST_MAX_BODY_BYTES = 1024 * 1024
/** Failures that happen before a request is sent: retrying them cannot repeat it. */
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN'])

/**
 * A call to WeChat that failed without an errcode (unreachable, timed out, an HTTP error, a body that is not an
 * answer): the API it was made to, whether it may be retried, whether its request may have reached WeChat, and
 * whether the caller's deadline cut it short before WeChat had its time (then it says nothing of WeChat).
 */
export class UpstreamError extends AppError {
  constructor (kind: ApiCodeName, message: string, readonly api: WechatApi,
    readonly retryable: boolean, readonly sent = true, readonly atDeadline = false, readonly cutShort = false) {
    super(kind, message)
  }
}

/** The request's deadline passed: before any attempt (cut short), or during one. */
function deadlineError (api: WechatApi, cutShort: boolean): UpstreamError {
  return new UpstreamError('WECHAT_UNAVAILABLE', 'WeChat did not answer within the request deadline', api, true, true, true, cutShort)
}

/** A failure's label for the upstream-calls metric. */
function outcomeOf (err: unknown): string {
  if (err instanceof WechatApiError) return String(err.errcode)
  if (err instanceof AppError) {
    const status = /HTTP (\d{3})/.exec(err.message)?.[1]
    if (status) return `http_${status}`
    if (err.kind === 'WECHAT_UNAVAILABLE') return err.message.includes('deadline') ? 'timeout' : 'network'
    return 'bad_body'
  }
  return 'error'
}

export function createWechatClient (opts: WechatClientOptions) {
  /** An attempt given at least this long (less a tenth, for the work before it) had WeChat's own time to answer. */
  const fairMs = 0.9 * Math.min(opts.headersTimeoutMs, opts.requestDeadlineMs ?? Infinity)
  const base = new URL(opts.baseUrl)
  const prefix = base.pathname.replace(/\/+$/, '')
  const now = opts.now ?? Date.now
  const pool = new Pool(base.origin, {
    connections: opts.connections,
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.bodyTimeoutMs
  })

  function tokenRequest (appId: string, secret: string, forceRefresh: boolean): UpstreamRequest {
    if (opts.mode === 'classic') {
      const query = new URLSearchParams({ grant_type: 'client_credential', appid: appId, secret })
      return { method: 'GET', path: `${prefix}/cgi-bin/token?${query.toString()}` }
    }
    return {
      method: 'POST',
      path: `${prefix}/cgi-bin/stable_token`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credential', appid: appId, secret, force_refresh: forceRefresh })
    }
  }

  async function attempt<T> (call: Call<T>, signal: AbortSignal): Promise<T> {
    const sentAt = now()
    const bad = (message: string, retryable = false): UpstreamError => new UpstreamError('WECHAT_BAD_RESPONSE', message, call.api, retryable)
    let res
    try {
      res = await pool.request({ ...call.request, signal })
    } catch (err) {
      throw networkError(err, signal, call.api)
    }
    let text: string
    try {
      text = await readCapped(res.body, call.maxBodyBytes ?? MAX_BODY_BYTES)
    } catch (err) {
      throw err === OVERSIZED ? bad('WeChat answered with an oversized body') : networkError(err, signal, call.api)
    }
    if (res.statusCode >= 500) throw bad(`WeChat answered HTTP ${res.statusCode}`, true)
    if (res.statusCode !== 200) throw bad(`WeChat answered HTTP ${res.statusCode}`)
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      throw bad('WeChat answered with a body that is not JSON')
    }
    if (typeof body !== 'object' || body === null) throw bad('WeChat answered with a body that is not a JSON object')
    const record = body as Record<string, unknown>
    if (typeof record.errcode === 'number' && record.errcode !== 0) {
      throw new WechatApiError(record.errcode, record.errmsg, call.api)
    }
    try {
      return call.parse(record, sentAt)
    } catch (err) {
      throw err instanceof AppError ? bad(err.message) : err
    }
  }

  /**
   * Makes a call with bounded, jittered retries (errcode -1, HTTP 5xx, network failures) until the deadline. A call
   * that ends at the deadline with no attempt given WeChat's own time (the headers timeout, or the request deadline
   * when shorter) and none failing on its own is cut short: it says nothing of WeChat.
   */
  async function send<T> (call: Call<T>, { deadline, beforeAttempt, notSent, maxRetries = opts.maxRetries }: Omit<FetchOptions, 'forceRefresh'>): Promise<T> {
    let lastError: AppError = deadlineError(call.api, true)
    let wechatFailed = false
    for (let tries = 0; tries <= maxRetries; tries++) {
      if (tries > 0) {
        const wait = backoff(opts.retryBaseMs, tries)
        if (now() + wait >= deadline) break
        await sleep(wait)
      }
      if (deadline - now() <= 0) break
      await beforeAttempt?.()
      const remaining = deadline - now()
      if (remaining <= 0) {
        await notSent?.()
        break
      }
      const started = performance.now()
      // A timer cleared as soon as the attempt ends (AbortSignal.timeout would live, and hold memory, until it fired).
      const abort = new AbortController()
      const timer = setTimeout(() => abort.abort(), remaining)
      try {
        const result = await attempt(call, abort.signal)
        opts.metrics?.upstreamCalls.labels(call.endpoint, '0').inc()
        return result
      } catch (err) {
        opts.metrics?.upstreamCalls.labels(call.endpoint, outcomeOf(err)).inc()
        if (!(err instanceof AppError)) throw err
        lastError = err
        if (!(err instanceof UpstreamError && err.atDeadline && remaining < fairMs)) wechatFailed = true
        if (err instanceof UpstreamError && !err.sent) await notSent?.()
        const retryable = (err instanceof UpstreamError && err.retryable && (call.idempotent || !err.sent)) ||
          (err instanceof WechatApiError && err.retryable && call.retryBusy !== false)
        if (!retryable) throw err
      } finally {
        clearTimeout(timer)
        opts.metrics?.upstreamSeconds.labels(call.endpoint).observe((performance.now() - started) / 1000)
      }
    }
    throw lastError instanceof UpstreamError && lastError.atDeadline ? deadlineError(call.api, !wechatFailed) : lastError
  }

  async function fetchToken (appId: string, secret: string, { forceRefresh = false, ...options }: FetchOptions): Promise<FetchedToken> {
    return await send({
      endpoint: opts.mode === 'classic' ? 'token' : 'stable_token',
      api: 'token',
      request: tokenRequest(appId, secret, forceRefresh),
      parse: (record, sentAt) => expiring(record, 'access_token', sentAt, now()),
      idempotent: true
    }, options)
  }

  /** A WeCom application's access token (the same one again within its lifetime, as WeCom answers). */
  async function fetchWecomToken (corpId: string, secret: string, options: Omit<FetchOptions, 'forceRefresh'>): Promise<FetchedToken> {
    const query = new URLSearchParams({ corpid: corpId, corpsecret: secret })
    return await send({
      endpoint: 'gettoken',
      api: 'wecom_token',
      request: { method: 'GET', path: `${prefix}/cgi-bin/gettoken?${query.toString()}` },
      parse: (record, sentAt) => expiring(record, 'access_token', sentAt, now()),
      idempotent: true
    }, options)
  }

  /** A JS-SDK (`jsapi`) or card (`wx_card`) ticket, fetched with the app's access token. */
  async function fetchTicket (accessToken: string, type: 'jsapi' | 'wx_card', options: FetchOptions): Promise<FetchedToken> {
    const query = new URLSearchParams({ access_token: accessToken, type })
    return await send({
      endpoint: 'getticket',
      api: 'ticket',
      request: { method: 'GET', path: `${prefix}/cgi-bin/ticket/getticket?${query.toString()}` },
      parse: (record, sentAt) => expiring(record, 'ticket', sentAt, now()),
      idempotent: true
    }, options)
  }

  /**
   * A WeCom ticket, fetched with an application's token: the corp's jsapi ticket (`corp`, for wx.config) or the
   * application's agent_config ticket (`agent`, for wx.agentConfig).
   */
  async function fetchWecomTicket (accessToken: string, type: 'corp' | 'agent', options: Omit<FetchOptions, 'forceRefresh'>): Promise<FetchedToken> {
    const query = new URLSearchParams({ access_token: accessToken })
    if (type === 'agent') query.set('type', 'agent_config')
    return await send({
      endpoint: type === 'corp' ? 'get_jsapi_ticket' : 'ticket/get',
      api: 'wecom_ticket',
      request: { method: 'GET', path: `${prefix}/cgi-bin/${type === 'corp' ? 'get_jsapi_ticket' : 'ticket/get'}?${query.toString()}` },
      parse: (record, sentAt) => expiring(record, 'ticket', sentAt, now()),
      idempotent: true
    }, options)
  }

  /** A Mini Program user's phone number, for the code of a getPhoneNumber button (it works once). */
  async function fetchPhoneNumber (accessToken: string, code: string, options: Pick<FetchOptions, 'deadline'>): Promise<PhoneInfo> {
    const query = new URLSearchParams({ access_token: accessToken })
    return await send({
      endpoint: 'getuserphonenumber',
      api: 'phone',
      request: {
        method: 'POST',
        path: `${prefix}/wxa/business/getuserphonenumber?${query.toString()}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code })
      },
      parse: parsePhoneInfo,
      idempotent: false
    }, options)
  }

  /**
   * The session of a Mini Program user, for the code of wx.login (it works once, for 5 minutes): sent once, never
   * again once it may have reached WeChat, not even after "system busy".
   */
  async function fetchSession (appId: string, secret: string, code: string, options: Omit<FetchOptions, 'forceRefresh'>): Promise<LoginSession> {
    const query = new URLSearchParams({ appid: appId, secret, js_code: code, grant_type: 'authorization_code' })
    return await send({
      endpoint: 'jscode2session',
      api: 'session',
      request: { method: 'GET', path: `${prefix}/sns/jscode2session?${query.toString()}` },
      parse: parseSession,
      idempotent: false,
      retryBusy: false
    }, options)
  }

  /**
   * An Open Platform component's component_access_token, fetched with its secret and the component_verify_ticket
   * WeChat last pushed (61005 / 61006 when WeChat no longer takes that ticket).
   */
  async function fetchComponentToken (appId: string, secret: string, ticket: string, options: Omit<FetchOptions, 'forceRefresh'>): Promise<FetchedToken> {
    return await send({
      endpoint: 'api_component_token',
      api: 'component',
      request: {
        method: 'POST',
        path: `${prefix}/cgi-bin/component/api_component_token`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ component_appid: appId, component_appsecret: secret, component_verify_ticket: ticket })
      },
      parse: (record, sentAt) => expiring(record, 'component_access_token', sentAt, now()),
      idempotent: true
    }, options)
  }

  /**
   * A pre-auth code of a component, for an authorization link (api_create_preauthcode with its token): a new one at
   * every call, never cached.
   */
  async function fetchPreAuthCode (appId: string, componentToken: string, options: Pick<FetchOptions, 'deadline'>): Promise<FetchedToken> {
    const query = new URLSearchParams({ component_access_token: componentToken })
    return await send({
      endpoint: 'api_create_preauthcode',
      api: 'ticket',
      request: {
        method: 'POST',
        path: `${prefix}/cgi-bin/component/api_create_preauthcode?${query.toString()}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ component_appid: appId })
      },
      parse: (record, sentAt) => expiring(record, 'pre_auth_code', sentAt, now()),
      idempotent: true
    }, options)
  }

  /** A call made with the component's token: POST {component_appid, ...} to /cgi-bin/component/<endpoint>. */
  function componentCall<T> (endpoint: string, componentAppId: string, componentToken: string, fields: Record<string, unknown>,
    parse: (record: Record<string, unknown>, sentAt: number) => T, options: Pick<FetchOptions, 'deadline'> & AttemptControl,
    maxBodyBytes = MAX_BODY_BYTES): Promise<T> {
    const query = new URLSearchParams({ component_access_token: componentToken })
    return send({
      endpoint,
      api: 'component',
      request: {
        method: 'POST',
        path: `${prefix}/cgi-bin/component/${endpoint}?${query.toString()}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ component_appid: componentAppId, ...fields })
      },
      parse,
      idempotent: true,
      maxBodyBytes
    }, options)
  }

  /**
   * An authorizer's authorizer_access_token, for its refresh token (api_authorizer_token), with the refresh token WeChat
   * answered alongside: the same one, or a new one that replaces it (61023 for the old one from then on).
   */
  async function fetchAuthorizerToken (componentAppId: string, componentToken: string, authorizerAppId: string, refreshToken: string,
    options: Omit<FetchOptions, 'forceRefresh'>): Promise<AuthorizerToken> {
    return await componentCall('api_authorizer_token', componentAppId, componentToken,
      { authorizer_appid: authorizerAppId, authorizer_refresh_token: refreshToken },
      (record, sentAt) => authorizerToken(record, authorizerAppId, sentAt, now()), options)
  }

  /**
   * An authorization code (from the `authorized` event or the authorization redirect) exchanged for the authorizer's
   * token and refresh token (api_query_auth). A code works once.
   */
  async function queryAuth (componentAppId: string, componentToken: string, code: string, options: Pick<FetchOptions, 'deadline'>): Promise<AuthorizerToken> {
    return await componentCall('api_query_auth', componentAppId, componentToken, { authorization_code: code }, (record, sentAt) => {
      const info = record.authorization_info as Record<string, unknown> | null | undefined
      const appId = info?.authorizer_appid
      if (info == null || typeof appId !== 'string' || !/^wx[0-9a-fA-F]{16}$/.test(appId)) throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered without authorization_info')
      return authorizerToken({ ...info, access_token: info.authorizer_access_token }, appId, sentAt, now())
    }, options)
  }

  /** One page (at most 500) of the component's authorizers with their refresh tokens (api_get_authorizer_list). */
  async function listAuthorizers (componentAppId: string, componentToken: string, offset: number, count: number,
    options: Pick<FetchOptions, 'deadline'>): Promise<AuthorizerPage> {
    return await componentCall('api_get_authorizer_list', componentAppId, componentToken, { offset, count }, (record) => {
      const total = record.total_count
      const list = record.list
      if (!Number.isSafeInteger(total) || !Array.isArray(list)) throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered without total_count and list')
      const authorizers: AuthorizerPage['authorizers'] = []
      for (const item of list as unknown[]) {
        const { authorizer_appid: appId, refresh_token: refreshToken } = (item ?? {}) as Record<string, unknown>
        if (typeof appId === 'string' && /^wx[0-9a-fA-F]{16}$/.test(appId) && typeof refreshToken === 'string' && refreshToken.length > 0 && refreshToken.length <= 512) {
          authorizers.push({ authorizerAppId: appId, refreshToken })
        }
      }
      return { total: total as number, authorizers }
    }, options, AUTHORIZER_LIST_MAX_BODY_BYTES)
  }

  /** Asks WeChat to push a component_verify_ticket to the component's callback now (it answers before it pushes). */
  async function startPushTicket (appId: string, secret: string, options: Pick<FetchOptions, 'deadline'>): Promise<void> {
    await send({
      endpoint: 'api_start_push_ticket',
      api: 'component',
      request: {
        method: 'POST',
        path: `${prefix}/cgi-bin/component/api_start_push_ticket`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ component_appid: appId, component_secret: secret })
      },
      parse: () => undefined,
      idempotent: true
    }, options)
  }

  return {
    mode: opts.mode,
    /** The API base the client calls (the stand-in's, when it runs in process). */
    baseUrl: opts.baseUrl,
    fetchToken,
    fetchTicket,
    fetchPhoneNumber,
    fetchSession,
    fetchWecomToken,
    fetchWecomTicket,
    fetchComponentToken,
    startPushTicket,
    fetchPreAuthCode,
    fetchAuthorizerToken,
    queryAuth,
    listAuthorizers,
    close: () => pool.close()
  }
}

export type WechatClient = ReturnType<typeof createWechatClient>

/** A credential with its lifetime (`access_token` or `ticket`, with expires_in), capped to the longest WeChat gives. */
function expiring (record: Record<string, unknown>, field: 'access_token' | 'ticket' | 'component_access_token' | 'pre_auth_code', sentAt: number, receivedAt: number): FetchedToken {
  const value = record[field]
  const expiresIn = record.expires_in
  if (typeof value !== 'string' || value.length === 0 || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
    throw new AppError('WECHAT_BAD_RESPONSE', `WeChat answered without ${field} and expires_in`)
  }
  return { accessToken: value, expiresAt: sentAt + Math.min(Math.floor(expiresIn) * 1000, MAX_TOKEN_LIFE_MS), sentAt, receivedAt }
}

/** An authorizer's token (in `access_token`) and the refresh token answered with it. */
function authorizerToken (record: Record<string, unknown>, authorizerAppId: string, sentAt: number, receivedAt: number): AuthorizerToken {
  const refreshToken = record.authorizer_refresh_token
  if (typeof refreshToken !== 'string' || refreshToken.length === 0 || refreshToken.length > 512) {
    throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered without authorizer_refresh_token')
  }
  const token = expiring({ ...record, access_token: record.access_token ?? record.authorizer_access_token }, 'access_token', sentAt, receivedAt)
  return { ...token, authorizerAppId, refreshToken }
}

/** A session_key must be the base64 of 16 bytes (an AES-128 key); the rest of the answer is not kept. */
function parseSession (record: Record<string, unknown>): LoginSession {
  const encoded = record.session_key
  const sessionKey = typeof encoded === 'string' && /^[A-Za-z0-9+/]{21}[AQgw](==)?$/.test(encoded) ? Buffer.from(encoded, 'base64') : undefined
  if (sessionKey?.length !== 16) throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered without a session_key')
  return { sessionKey }
}

function parsePhoneInfo (record: Record<string, unknown>): PhoneInfo {
  const info = record.phone_info as Record<string, unknown> | null | undefined
  const watermark = info?.watermark as Record<string, unknown> | null | undefined
  if (typeof info?.phoneNumber !== 'string' || typeof info.purePhoneNumber !== 'string' || typeof info.countryCode !== 'string' ||
      typeof watermark?.timestamp !== 'number' || typeof watermark.appid !== 'string') {
    throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered without phone_info')
  }
  return {
    phoneNumber: info.phoneNumber,
    purePhoneNumber: info.purePhoneNumber,
    countryCode: info.countryCode,
    watermark: { timestamp: watermark.timestamp, appid: watermark.appid }
  }
}

function networkError (err: unknown, signal: AbortSignal, api: WechatApi): UpstreamError {
  if (signal.aborted) return deadlineError(api, false)
  const code = err instanceof undiciErrors.UndiciError || err instanceof Error ? (err as { code?: unknown }).code : undefined
  const named = typeof code === 'string' ? code : undefined
  return new UpstreamError('WECHAT_UNAVAILABLE', `WeChat could not be reached (${named ?? 'network error'})`, api, true, !NOT_SENT.has(named ?? ''))
}

/** Thrown by readCapped past the call's cap. */
const OVERSIZED = new Error('oversized')

async function readCapped (body: AsyncIterable<Buffer> & { destroy: () => void }, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > maxBytes) {
      body.destroy()
      throw OVERSIZED
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function backoff (baseMs: number, tries: number): number {
  return Math.round(baseMs * 2 ** (tries - 1) * (0.5 + Math.random()))
}
