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
  /** Bumped by every write; a write is refused unless the writer saw the current generation. */
  generation: number
}

/**
 * A TokenEntry built as one object literal, so that every entry shares one hidden class: an entry made by spreading
 * another object gets a shape of its own in V8 (hundreds of bytes each, and slower reads on the hot path).
 */
export function tokenEntry (from: TokenEntry): TokenEntry {
  return {
    accessToken: from.accessToken,
    expiresAt: from.expiresAt,
    mode: from.mode,
    secretFingerprint: from.secretFingerprint,
    fetchedAt: from.fetchedAt,
    generation: from.generation
  }
}

/**
 * Per-app state. Every key an app uses shares its hash tag, so the multi-key scripts run on a Cluster.
 * `name` below is one of the small per-app values: a lock, a counter, a remembered error.
 */
export interface TokenStore {
  readonly kind: 'memory' | 'redis'
  get (appId: string): Promise<TokenEntry | null>
  /** The app's current generation (0 when it never had a token). */
  generation (appId: string): Promise<number>
  /**
   * Writes `entry` (whose generation must be `expected + 1`) only if the app's generation is still
   * `expected`; the entry lives until its expiresAt. Resolves false when refused.
   */
  compareAndSet (appId: string, entry: TokenEntry, expected: number): Promise<boolean>
  delete (appId: string): Promise<void>

  /** SET NX PX: true when `owner` now holds `name`. */
  acquire (appId: string, name: string, owner: string, ttlMs: number): Promise<boolean>
  /** Deletes `name` only while `owner` holds it. */
  release (appId: string, name: string, owner: string): Promise<boolean>
  /** Increments a counter, giving it `ttlMs` to live when it is new. */
  increment (appId: string, name: string, ttlMs: number): Promise<number>
  getValue (appId: string, name: string): Promise<string | null>
  setValue (appId: string, name: string, value: string, ttlMs: number): Promise<void>

  /** Tells every instance that the app's token or state changed. */
  notify (appId: string): Promise<void>
  /** Resolves at the next notify() for the app, or after timeoutMs, whichever is first. */
  waitForChange (appId: string, timeoutMs: number): Promise<void>
  /** Calls `listener` at every notify() for any app, from any instance. */
  onChange (listener: (appId: string) => void): void

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
      typeof entry.fetchedAt !== 'number' || typeof entry.generation !== 'number') {
    return null
  }
  return tokenEntry(entry as unknown as TokenEntry) // every field checked above
}

/** Waiters woken by notify(); shared by both stores (the Redis one feeds it from pub/sub). */
export class ChangeWaiters {
  private readonly waiting = new Map<string, Set<() => void>>()
  private readonly listeners: Array<(appId: string) => void> = []

  listen (listener: (appId: string) => void): void {
    this.listeners.push(listener)
  }

  wake (appId: string): void {
    for (const listener of this.listeners) listener(appId)
    const set = this.waiting.get(appId)
    if (!set) return
    this.waiting.delete(appId)
    for (const resolve of set) resolve()
  }

  async wait (appId: string, timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      let set = this.waiting.get(appId)
      if (!set) {
        set = new Set()
        this.waiting.set(appId, set)
      }
      const done = (): void => {
        clearTimeout(timer)
        set.delete(done)
        if (set.size === 0 && this.waiting.get(appId) === set) this.waiting.delete(appId)
        resolve()
      }
      const timer = setTimeout(done, Math.max(0, timeoutMs))
      set.add(done)
    })
  }

  wakeAll (): void {
    for (const appId of [...this.waiting.keys()]) this.wake(appId)
  }
}
