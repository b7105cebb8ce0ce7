/** The WeChat token client: one undici Pool, stable or classic mode, bounded retries inside a deadline. */
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, errors as undiciErrors } from 'undici'
import { AppError } from '../errors.js'
import type { Metrics } from '../metrics.js'
import { WechatApiError } from './errcodes.js'

export type TokenMode = 'stable' | 'classic'

export interface WechatClientOptions {
  baseUrl: string
  mode: TokenMode
  connectTimeoutMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
  connections: number
  maxRetries: number
  retryBaseMs: number
  now?: () => number
  metrics?: Metrics
}

export interface FetchedToken {
  accessToken: string
  /** Epoch milliseconds, counted from when the request was sent. */
  expiresAt: number
}

export interface FetchOptions {
  /** Epoch milliseconds after which no further attempt is made and the caller gets an error. */
  deadline: number
  forceRefresh?: boolean
  /** Runs before every attempt, retries included (the quota governor charges each one); a rejection stops the fetch. */
  beforeAttempt?: () => Promise<void>
}

const MAX_BODY_BYTES = 64 * 1024
/** WeChat documents a token lifetime of at most 7200 s; a longer expires_in is capped to it. */
export const MAX_TOKEN_LIFE_MS = 7200 * 1000

class RetryableUpstreamError extends AppError {}

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
  const base = new URL(opts.baseUrl)
  const prefix = base.pathname.replace(/\/+$/, '')
  const now = opts.now ?? Date.now
  const pool = new Pool(base.origin, {
    connections: opts.connections,
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.bodyTimeoutMs
  })

  function requestFor (appId: string, secret: string, forceRefresh: boolean) {
    if (opts.mode === 'classic') {
      const query = new URLSearchParams({ grant_type: 'client_credential', appid: appId, secret })
      return { method: 'GET' as const, path: `${prefix}/cgi-bin/token?${query.toString()}` }
    }
    return {
      method: 'POST' as const,
      path: `${prefix}/cgi-bin/stable_token`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credential', appid: appId, secret, force_refresh: forceRefresh })
    }
  }

  async function attempt (appId: string, secret: string, forceRefresh: boolean, signal: AbortSignal): Promise<FetchedToken> {
    const sentAt = now()
    let res
    try {
      res = await pool.request({ ...requestFor(appId, secret, forceRefresh), signal })
    } catch (err) {
      throw networkError(err, signal)
    }
    let text: string
    try {
      text = await readCapped(res.body)
    } catch (err) {
      throw err instanceof AppError ? err : networkError(err, signal)
    }
    if (res.statusCode >= 500) {
      throw new RetryableUpstreamError('WECHAT_BAD_RESPONSE', `WeChat answered HTTP ${res.statusCode}`)
    }
    if (res.statusCode !== 200) {
      throw new AppError('WECHAT_BAD_RESPONSE', `WeChat answered HTTP ${res.statusCode}`)
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered with a body that is not JSON')
    }
    return parseTokenBody(body, sentAt)
  }

  async function fetchToken (appId: string, secret: string, { deadline, forceRefresh = false, beforeAttempt }: FetchOptions): Promise<FetchedToken> {
    let lastError: AppError = new AppError('WECHAT_UNAVAILABLE', 'WeChat did not answer within the request deadline')
    for (let tries = 0; tries <= opts.maxRetries; tries++) {
      if (tries > 0) {
        const wait = backoff(opts.retryBaseMs, tries)
        if (now() + wait >= deadline) break
        await sleep(wait)
      }
      if (deadline - now() <= 0) break
      await beforeAttempt?.()
      const remaining = deadline - now()
      if (remaining <= 0) break
      const started = performance.now()
      const endpoint = opts.mode === 'classic' ? 'token' : 'stable_token'
      // A timer cleared as soon as the attempt ends (AbortSignal.timeout would live, and hold memory, until it fired).
      const abort = new AbortController()
      const timer = setTimeout(() => abort.abort(), remaining)
      try {
        const token = await attempt(appId, secret, forceRefresh, abort.signal)
        opts.metrics?.upstreamCalls.labels(endpoint, '0').inc()
        return token
      } catch (err) {
        opts.metrics?.upstreamCalls.labels(endpoint, outcomeOf(err)).inc()
        if (!(err instanceof AppError)) throw err
        lastError = err
        const retryable = err instanceof RetryableUpstreamError || (err instanceof WechatApiError && err.retryable)
        if (!retryable) throw err
      } finally {
        clearTimeout(timer)
        opts.metrics?.upstreamSeconds.labels(endpoint).observe((performance.now() - started) / 1000)
      }
    }
    throw lastError
  }

  return {
    mode: opts.mode,
    fetchToken,
    close: () => pool.close()
  }
}

export type WechatClient = ReturnType<typeof createWechatClient>

function parseTokenBody (body: unknown, sentAt: number): FetchedToken {
  if (typeof body !== 'object' || body === null) {
    throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered with a body that is not a JSON object')
  }
  const record = body as Record<string, unknown>
  if (typeof record.errcode === 'number' && record.errcode !== 0) {
    throw new WechatApiError(record.errcode, record.errmsg)
  }
  const token = record.access_token
  const expiresIn = record.expires_in
  if (typeof token !== 'string' || token.length === 0 || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
    throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered without access_token and expires_in')
  }
  return { accessToken: token, expiresAt: sentAt + Math.min(Math.floor(expiresIn) * 1000, MAX_TOKEN_LIFE_MS) }
}

function networkError (err: unknown, signal: AbortSignal): AppError {
  if (signal.aborted) {
    return new AppError('WECHAT_UNAVAILABLE', 'WeChat did not answer within the request deadline')
  }
  const code = err instanceof undiciErrors.UndiciError || err instanceof Error ? (err as { code?: unknown }).code : undefined
  return new RetryableUpstreamError('WECHAT_UNAVAILABLE', `WeChat could not be reached (${typeof code === 'string' ? code : 'network error'})`)
}

async function readCapped (body: AsyncIterable<Buffer> & { destroy: () => void }): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) {
      body.destroy()
      throw new AppError('WECHAT_BAD_RESPONSE', 'WeChat answered with an oversized body')
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function backoff (baseMs: number, tries: number): number {
  return Math.round(baseMs * 2 ** (tries - 1) * (0.5 + Math.random()))
}
