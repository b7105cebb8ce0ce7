/** Serves tokens: from the store while they have life left, else one fetch from WeChat per app at a time. */
import { AppError } from './errors.js'
import { fingerprint, sameFingerprint } from './fingerprint.js'
import type { TokenEntry, TokenStore } from './store/types.js'
import type { WechatClient } from './wechat/client.js'

export interface TokenServiceOptions {
  store: TokenStore
  wechat: WechatClient
  serveMarginSeconds: number
  requestDeadlineMs: number
  now?: () => number
}

export interface ServedToken {
  accessToken: string
  /** Epoch milliseconds. */
  expiresAt: number
  /** Whole seconds left. */
  expiresIn: number
}

export function createTokenService (opts: TokenServiceOptions) {
  const { store, wechat } = opts
  const now = opts.now ?? Date.now
  const marginMs = opts.serveMarginSeconds * 1000
  const inflight = new Map<string, Promise<TokenEntry>>()

  async function fromStore<T> (operation: () => Promise<T>): Promise<T> {
    try {
      return await operation()
    } catch (err) {
      throw new AppError('STORE_UNAVAILABLE', 'The token store is unavailable', { cause: err })
    }
  }

  async function fetchAndStore (appId: string, appSecret: string, secretFingerprint: string): Promise<TokenEntry> {
    const fetched = await wechat.fetchToken(appId, appSecret, { deadline: now() + opts.requestDeadlineMs })
    const entry: TokenEntry = { ...fetched, mode: wechat.mode, secretFingerprint, fetchedAt: now() }
    await fromStore(() => store.set(appId, entry))
    return entry
  }

  /** The token for appId, if appSecret is the one the cached token was fetched with. */
  async function getToken (appId: string, appSecret: string): Promise<ServedToken> {
    const secretFingerprint = fingerprint(appId, appSecret)
    const cached = await fromStore(() => store.get(appId))
    if (cached) {
      if (!sameFingerprint(cached.secretFingerprint, secretFingerprint)) {
        throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
      }
      if (cached.expiresAt - now() > marginMs) return served(cached)
    }
    const flightKey = `${appId}\0${secretFingerprint}`
    let flight = inflight.get(flightKey)
    if (!flight) {
      flight = fetchAndStore(appId, appSecret, secretFingerprint).finally(() => inflight.delete(flightKey))
      inflight.set(flightKey, flight)
    }
    return served(await flight)
  }

  function served (entry: TokenEntry): ServedToken {
    return {
      accessToken: entry.accessToken,
      expiresAt: entry.expiresAt,
      expiresIn: Math.max(0, Math.floor((entry.expiresAt - now()) / 1000))
    }
  }

  return { getToken }
}

export type TokenService = ReturnType<typeof createTokenService>
