/** The token store contract, met by the in-memory and the Redis store alike. */
import type { TokenMode } from '../wechat/client.js'

export interface TokenEntry {
  accessToken: string
  /** Epoch milliseconds. */
  expiresAt: number
  mode: TokenMode
  /** Keyed hash of appId and appSecret; the secret itself is never stored. */
  secretFingerprint: string
  /** Epoch milliseconds. */
  fetchedAt: number
}

export interface TokenStore {
  readonly kind: 'memory' | 'redis'
  get (appId: string): Promise<TokenEntry | null>
  /** Stores the entry until its expiresAt; an already expired entry is not stored. */
  set (appId: string, entry: TokenEntry): Promise<void>
  delete (appId: string): Promise<void>
  /** Resolves when the store answers, rejects when it does not. */
  ping (): Promise<void>
  close (): Promise<void>
}

/** Parses a stored entry, or null when it is not one (a foreign or corrupted value is treated as a miss). */
export function parseEntry (raw: string | null): TokenEntry | null {
  if (raw === null) return null
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null) return null
  const entry = value as Record<string, unknown>
  if (typeof entry.accessToken !== 'string' || typeof entry.expiresAt !== 'number' ||
      (entry.mode !== 'stable' && entry.mode !== 'classic') || typeof entry.secretFingerprint !== 'string' ||
      typeof entry.fetchedAt !== 'number') {
    return null
  }
  return {
    accessToken: entry.accessToken,
    expiresAt: entry.expiresAt,
    mode: entry.mode,
    secretFingerprint: entry.secretFingerprint,
    fetchedAt: entry.fetchedAt
  }
}
