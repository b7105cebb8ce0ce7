/**
 * The tokens this service handed out on WeChat's own endpoints, and whose they are: what lets a WeChat-shaped call
 * that carries only an access_token (getticket, WeCom's ticket calls) be answered for the right app. Each is kept in
 * the store under a keyed fingerprint of the token (`<prefix>:{_token:<fingerprint>}:owner`, until the token expires;
 * the token itself is stored nowhere new), and in process for the tokens this instance handed out, so that serving a
 * token again costs no store write.
 */
import { fingerprint } from '../fingerprint.js'
import type { TokenStore } from '../store/types.js'
import type { ServedToken } from '../tokens/rules.js'

export interface HandedOutOptions {
  store: TokenStore
  fingerprintKey?: string | undefined
  /** Tokens remembered in process (the oldest go first). */
  max?: number
  now?: () => number
}

const NAME = 'owner'
const REFUSED = 'refused'

export function createHandedOut (opts: HandedOutOptions) {
  const { store } = opts
  const now = opts.now ?? Date.now
  const max = opts.max ?? 20_000
  /** Token to the subject of its owner and when it expires: kept in process memory only. */
  const local = new Map<string, { subject: string, until: number }>()
  const space = (token: string): string => `_token:${fingerprint('\0access_token', token, opts.fingerprintKey).slice(0, 22)}`

  /**
   * Whether the token was remembered here for this owner: the hot path of the token endpoints, synchronous, no
   * fingerprint computed.
   */
  function known (token: ServedToken, subject: string): boolean {
    return local.get(token.accessToken)?.subject === subject
  }

  /** Remembers a token handed out, for its owner's subject (src/tokens/credential.ts), until it expires. */
  async function remember (token: ServedToken, subject: string): Promise<void> {
    if (known(token, subject)) return
    const ttl = token.expiresAt - now()
    if (ttl <= 0) return
    await store.setValue(space(token.accessToken), NAME, subject, ttl)
    if (local.size >= max) local.delete(local.keys().next().value as string)
    local.set(token.accessToken, { subject, until: token.expiresAt })
  }

  /** The subject of the owner a token was handed out for, by any instance, or undefined. */
  async function subjectOf (token: string): Promise<string | undefined> {
    const kept = local.get(token)
    if (kept !== undefined && kept.until > now()) return kept.subject
    return await store.getValue(space(token), NAME) ?? undefined
  }

  /** Remembers that WeChat refused a token on a call made with it (until the token would have expired). */
  async function rememberRefused (token: string, until: number): Promise<void> {
    const ttl = until - now()
    if (ttl > 0) await store.setValue(space(token), REFUSED, '1', ttl)
  }

  /** Whether WeChat refused this token on a call made with it. */
  async function refused (token: string): Promise<boolean> {
    return await store.getValue(space(token), REFUSED) !== null
  }

  return { known, remember, subjectOf, rememberRefused, refused }
}

export type HandedOut = ReturnType<typeof createHandedOut>
