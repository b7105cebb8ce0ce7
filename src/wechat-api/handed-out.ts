/**
 * The tokens this service handed out on WeChat's own endpoints, and whose they are: what lets a WeChat-shaped call
 * that carries only an access_token (getticket, WeCom's ticket calls, a passed-through call; a component's
 * api_create_preauthcode, api_authorizer_token and api_query_auth, with a component_access_token) be answered for the
 * right app or component. Authorizer tokens (api_authorizer_token, api_query_auth) are kept too, under their
 * credential's subject; the pass-through does not route or repair by them yet (it passes their calls on as they are).
 * Each is kept with the change-message subject of its owner (src/tokens/credential.ts), which names its kind too, in the store
 * under a keyed fingerprint of the token (`<prefix>:{_token:<fingerprint>}:owner`, until the token expires; the token
 * itself is stored nowhere new), and in process, so that serving a token again costs no store write. An instance
 * writes a token it keeps handing out again once a minute at most: a store that lost the key (flushed, restarted
 * empty) learns it again from the next request, not only from the next token.
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
/** How often a token handed out again is written to the store again, and how long a subject read from it is kept. */
export const REWRITE_MS = 60_000

interface Kept {
  subject: string
  /** When the token expires (or, for one read from the store, when the read is to be made again). */
  until: number
  /** When this instance last wrote it to the store (0: read from the store, never written here). */
  writtenAt: number
}

export function createHandedOut (opts: HandedOutOptions) {
  const { store } = opts
  const now = opts.now ?? Date.now
  const max = opts.max ?? 20_000
  /** Token to the subject of its owner: kept in process memory only. */
  const local = new Map<string, Kept>()
  const space = (token: string): string => `_token:${fingerprint('\0access_token', token, opts.fingerprintKey).slice(0, 22)}`

  function keep (token: string, kept: Kept): void {
    local.delete(token)
    if (local.size >= max) local.delete(local.keys().next().value as string)
    local.set(token, kept)
  }

  /**
   * Whether this instance wrote the token to the store for this owner within the last minute: the hot path of the
   * token endpoints, synchronous, no fingerprint computed.
   */
  function known (token: ServedToken, subject: string): boolean {
    const kept = local.get(token.accessToken)
    return kept !== undefined && kept.subject === subject && now() - kept.writtenAt < REWRITE_MS
  }

  /** Remembers a token handed out, for its owner's subject (src/tokens/credential.ts), until it expires. */
  async function remember (token: ServedToken, subject: string): Promise<void> {
    if (known(token, subject)) return
    const at = now()
    const ttl = token.expiresAt - at
    if (ttl <= 0) return
    await store.setValue(space(token.accessToken), NAME, subject, ttl)
    keep(token.accessToken, { subject, until: token.expiresAt, writtenAt: at })
  }

  /** The subject of the owner a token was handed out for, by any instance, or undefined. */
  async function subjectOf (token: string): Promise<string | undefined> {
    const kept = local.get(token)
    if (kept !== undefined && kept.until > now()) return kept.subject
    const subject = await store.getValue(space(token), NAME) ?? undefined
    // Kept a minute: the store says until when the token lives only through its TTL, which is not read back.
    if (subject !== undefined) keep(token, { subject, until: now() + REWRITE_MS, writtenAt: 0 })
    return subject
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
