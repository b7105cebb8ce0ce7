/** The token store contract, met by the in-memory and the Redis store alike. */
import { AppError } from '../errors.js'
import { MAX_TOKEN_LIFE_MS, type TokenMode } from '../wechat/access-token.js'

export interface TokenEntry {
  /** The credential: an access token, or a ticket (the field keeps the name it has in stored entries). */
  accessToken: string
  /** Epoch milliseconds. */
  expiresAt: number
  mode: TokenMode
  /** Keyed hash of appId and appSecret; the secret itself is never stored. */
  secretFingerprint: string
  /** Epoch milliseconds when the request that got it was sent (WeChat issued it after). */
  sentAt: number
  /** Epoch milliseconds when WeChat's answer arrived (WeChat issued it before). */
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
    sentAt: from.sentAt,
    fetchedAt: from.fetchedAt,
    generation: from.generation
  }
}

/** The entry of a credential WeChat answered (a FetchedToken's fields), for this secret's fingerprint. */
export function fetchedEntry (fetched: Pick<TokenEntry, 'accessToken' | 'expiresAt' | 'sentAt'> & { receivedAt: number },
  mode: TokenMode, secretFingerprint: string, generation: number): TokenEntry {
  return tokenEntry({
    accessToken: fetched.accessToken,
    expiresAt: fetched.expiresAt,
    mode,
    secretFingerprint,
    sentAt: fetched.sentAt,
    fetchedAt: fetched.receivedAt,
    generation
  })
}

/**
 * What a change message says of the entry written: its generation and fetch time, which together name one write
 * (generations start again at 1 after a flush, fetch times do not repeat). Holds no token.
 */
export function stampOf (entry: TokenEntry): string {
  return `${entry.generation}.${entry.fetchedAt}`
}

/** The stamp of an announcement after a refresh that wrote nothing: it only wakes waiters. */
export const NO_CHANGE = '-'

/** The slot of the app's access token; other credentials (tickets) have slots of their own, named after them. */
export const TOKEN_SLOT = 'token'

/** The name of a slot's generation counter (the access token's keeps its original name). */
export function generationName (slot: string): string {
  return slot === TOKEN_SLOT ? 'generation' : `${slot}:generation`
}

/**
 * Per-app state. Every key an app uses shares its hash tag, so the multi-key scripts run on a Cluster.
 * `slot` names one of the app's credentials (TOKEN_SLOT, the default, or a ticket's), each an entry with its own
 * generation. `name` below is one of the small per-app values: a lock, a counter, a remembered error.
 * Every method rejects with a STORE_UNAVAILABLE AppError (a StoreError) when the store fails, and with nothing else.
 */
export interface TokenStore {
  readonly kind: 'memory' | 'redis'
  get (appId: string, slot?: string): Promise<TokenEntry | null>
  /**
   * Two of the app's entries, as get() reads each (a ticket and the token it was made with): one MGET on a single
   * Redis or behind Sentinel; two GETs on a Cluster (a multi-key command is refused while a slot moves between nodes)
   * and for a Redis user that may not run MGET.
   */
  getPair (appId: string, slot: string, other: string): Promise<[TokenEntry | null, TokenEntry | null]>
  /** The slot's current generation: 0 when it never had an entry, or when the counter is missing or not a count. */
  generation (appId: string, slot?: string): Promise<number>
  /**
   * Writes `entry` (whose generation must be `expected + 1`) only if the slot's generation is still
   * `expected`; the entry lives until its expiresAt. Resolves false when refused.
   */
  compareAndSet (appId: string, entry: TokenEntry, expected: number, slot?: string): Promise<boolean>
  delete (appId: string, slot?: string): Promise<void>

  /** SET NX PX: true when `owner` now holds `name`. */
  acquire (appId: string, name: string, owner: string, ttlMs: number): Promise<boolean>
  /** Deletes `name` only while `owner` holds it. */
  release (appId: string, name: string, owner: string): Promise<boolean>
  /**
   * Adds `by` (1 by default; negative to give back, never below 0) to a counter, giving it `ttlMs` to live when it is
   * new, or (`extend`) whenever it has less left.
   */
  increment (appId: string, name: string, ttlMs: number, by?: number, extend?: boolean): Promise<number>
  getValue (appId: string, name: string): Promise<string | null>
  setValue (appId: string, name: string, value: string, ttlMs: number): Promise<void>
  /**
   * Keeps a value with no expiry (what WeChat hands out once and never again: an authorizer's refresh token), or, with
   * `ifAbsent`, only when the name holds nothing. Resolves whether it was written. Such values are never dropped to make
   * room, as small values may be in memory: nothing a caller sends unproven can create one.
   */
  keepValue (appId: string, name: string, value: string, ifAbsent?: boolean): Promise<boolean>
  /** Deletes a value. */
  forget (appId: string, name: string): Promise<void>

  /**
   * Tells every instance that a credential changed; `subject` names it (the appId for its access token, see
   * Credential.subject), `stamp` (stampOf) the entry now stored, if known.
   */
  notify (subject: string, stamp?: string): Promise<void>
  /** Resolves at the next notify() for the subject, or after timeoutMs, whichever is first. */
  waitForChange (subject: string, timeoutMs: number): Promise<void>
  /** Calls `listener` at every notify() for any subject, from any instance, with the stamp when the message had one. */
  onChange (listener: (subject: string, stamp: string | undefined) => void): void
  /**
   * Calls `listener` each time change messages start or stop reaching this instance (`up`: they do). Without them
   * an instance cannot know when another one replaced a token, so it must not trust its process-local copies;
   * `missed` (when up again) says whether a change may have been written while they did not arrive.
   */
  onPubsub (listener: (up: boolean, missed: boolean) => void): void
  /** Whether change messages reach this instance now. */
  readonly pubsubUp: boolean

  /** Resolves when the store answers, rejects when it does not. */
  ping (): Promise<void>
  close (): Promise<void>
}

/** The failure of a store command (unreachable, timed out, refused): the only error a TokenStore rejects with. */
export class StoreError extends AppError {
  constructor (cause: unknown) {
    super('STORE_UNAVAILABLE', 'The token store is unavailable', { cause })
  }
}

/** Longest token WeChat issues is 512 characters and may grow; anything this long is not a token. */
const MAX_TOKEN_LENGTH = 2048
/** How far another instance's clock may run ahead of this one's. */
export const CLOCK_SKEW_MS = 60_000

/**
 * Parses a stored entry, or null when it is not one: a foreign, corrupted or implausible value (a lifetime longer
 * than WeChat gives, a fetch time in the future, a generation that is not a count) is treated as a miss.
 */
export function parseEntry (raw: string | null, now: number = Date.now()): TokenEntry | null {
  if (raw === null) return null
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null) return null
  const entry = value as Record<string, unknown>
  const { accessToken, expiresAt, fetchedAt, generation, secretFingerprint } = entry
  // Written by an older version: when the request was sent is not known, so it counts as when the answer arrived.
  const sentAt = entry.sentAt ?? fetchedAt
  if (typeof accessToken !== 'string' || accessToken.length === 0 || accessToken.length > MAX_TOKEN_LENGTH ||
      (entry.mode !== 'stable' && entry.mode !== 'classic') ||
      typeof secretFingerprint !== 'string' || secretFingerprint.length > 128 ||
      !Number.isSafeInteger(expiresAt) || !Number.isSafeInteger(fetchedAt) || !Number.isSafeInteger(sentAt) || !Number.isSafeInteger(generation)) {
    return null
  }
  const [expires, fetched, sent] = [expiresAt as number, fetchedAt as number, sentAt as number]
  if ((generation as number) < 0 || expires <= fetched || expires - fetched > MAX_TOKEN_LIFE_MS || fetched > now + CLOCK_SKEW_MS || sent > fetched) return null
  entry.sentAt = sent // the parsed object is this function's own
  return tokenEntry(entry as unknown as TokenEntry) // every field checked above
}

/** A stored counter, or 0 when it is missing or not a plain non-negative count (a corrupted counter is repaired by the next write). */
export function parseCount (raw: string | null): number {
  return raw !== null && /^\d{1,15}$/.test(raw) ? Number(raw) : 0
}

/** Waiters woken by notify(); shared by both stores (the Redis one feeds it from pub/sub). */
export class ChangeWaiters {
  private readonly waiting = new Map<string, Set<() => void>>()
  private readonly listeners: Array<(appId: string, stamp: string | undefined) => void> = []

  listen (listener: (appId: string, stamp: string | undefined) => void): void {
    this.listeners.push(listener)
  }

  wake (appId: string, stamp?: string): void {
    for (const listener of this.listeners) listener(appId, stamp)
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

  /** Resolves every waiter (on close), telling no listener of a change. */
  wakeAll (): void {
    const sets = [...this.waiting.values()]
    this.waiting.clear()
    for (const set of sets) for (const resolve of set) resolve()
  }
}
