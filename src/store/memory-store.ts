/** The embedded store: tokens and per-app state in process memory, for a single instance with no Redis. */
import { ChangeWaiters, TOKEN_SLOT, tokenEntry, type TokenEntry, type TokenStore } from './types.js'

interface Timed { value: string, expiresAt: number }

export interface MemoryStoreOptions {
  sweepIntervalMs?: number
  /**
   * Most small values (locks, counters, remembered refusals) kept at once; past it the oldest is dropped, so
   * requests for ever new appIds cannot grow the process without bound.
   */
  maxValues?: number
}

export function createMemoryStore (now: () => number = Date.now, { sweepIntervalMs = 60_000, maxValues = 100_000 }: MemoryStoreOptions = {}): TokenStore {
  const entries = new Map<string, TokenEntry>()
  const generations = new Map<string, number>()
  const values = new Map<string, Timed>()
  /** Values with no expiry (keepValue): apart, so that a flood of small values never pushes one out. */
  const lasting = new Map<string, string>()
  const waiters = new ChangeWaiters()
  const sweeper = setInterval(() => {
    const t = now()
    for (const [key, entry] of entries) if (entry.expiresAt <= t) entries.delete(key)
    for (const [key, timed] of values) if (timed.expiresAt <= t) values.delete(key)
  }, sweepIntervalMs)
  sweeper.unref()

  const valueKey = (appId: string, name: string): string => `${appId}\0${name}`
  const slotKey = (appId: string, slot: string): string => slot === TOKEN_SLOT ? appId : `${appId}\0${slot}`
  function put (key: string, timed: Timed): void {
    if (!values.has(key) && values.size >= maxValues) values.delete(values.keys().next().value as string)
    values.set(key, timed)
  }
  function live (key: string): Timed | undefined {
    const timed = values.get(key)
    if (timed && timed.expiresAt <= now()) {
      values.delete(key)
      return undefined
    }
    return timed
  }

  /** The slot's entry while it lives (an expired one is dropped). */
  function read (appId: string, slot: string): TokenEntry | null {
    const key = slotKey(appId, slot)
    const entry = entries.get(key)
    if (!entry) return null
    if (entry.expiresAt <= now()) {
      entries.delete(key)
      return null
    }
    return tokenEntry(entry)
  }

  return {
    kind: 'memory',
    async get (appId, slot = TOKEN_SLOT) {
      return read(appId, slot)
    },
    async getPair (appId, slot, other) {
      return [read(appId, slot), read(appId, other)]
    },
    async generation (appId, slot = TOKEN_SLOT) {
      return generations.get(slotKey(appId, slot)) ?? 0
    },
    async compareAndSet (appId, entry, expected, slot = TOKEN_SLOT) {
      const key = slotKey(appId, slot)
      if ((generations.get(key) ?? 0) !== expected) return false
      generations.set(key, expected + 1)
      if (entry.expiresAt > now()) entries.set(key, tokenEntry(entry))
      else entries.delete(key)
      return true
    },
    async delete (appId, slot = TOKEN_SLOT) {
      entries.delete(slotKey(appId, slot))
    },
    async acquire (appId, name, owner, ttlMs) {
      const key = valueKey(appId, name)
      if (live(key)) return false
      put(key, { value: owner, expiresAt: now() + ttlMs })
      return true
    },
    async release (appId, name, owner) {
      const key = valueKey(appId, name)
      if (live(key)?.value !== owner) return false
      values.delete(key)
      return true
    },
    async increment (appId, name, ttlMs, by = 1, extend = false) {
      const key = valueKey(appId, name)
      const current = live(key)
      const next = Math.max(0, (current ? Number(current.value) : 0) + by)
      const expiresAt = current === undefined ? now() + ttlMs : extend ? Math.max(current.expiresAt, now() + ttlMs) : current.expiresAt
      put(key, { value: String(next), expiresAt })
      return next
    },
    async getValue (appId, name) {
      const key = valueKey(appId, name)
      return lasting.get(key) ?? live(key)?.value ?? null
    },
    async setValue (appId, name, value, ttlMs) {
      const key = valueKey(appId, name)
      lasting.delete(key)
      put(key, { value, expiresAt: now() + ttlMs })
    },
    async keepValue (appId, name, value, ifAbsent = false) {
      const key = valueKey(appId, name)
      if (ifAbsent && (lasting.has(key) || live(key) !== undefined)) return false
      values.delete(key)
      lasting.set(key, value)
      return true
    },
    async forget (appId, name) {
      const key = valueKey(appId, name)
      values.delete(key)
      lasting.delete(key)
    },
    async notify (subject, stamp) {
      waiters.wake(subject, stamp)
    },
    async waitForChange (subject, timeoutMs) {
      await waiters.wait(subject, timeoutMs)
    },
    onChange (listener) {
      waiters.listen(listener)
    },
    onPubsub (listener) {
      listener(true, false)
    },
    pubsubUp: true,
    async ping () {},
    async close () {
      clearInterval(sweeper)
      waiters.wakeAll()
      entries.clear()
      values.clear()
      lasting.clear()
    }
  }
}
