/** The embedded store: tokens in process memory, for a single instance with no Redis. */
import type { TokenEntry, TokenStore } from './types.js'

export function createMemoryStore (now: () => number = Date.now, sweepIntervalMs = 60_000): TokenStore {
  const entries = new Map<string, TokenEntry>()
  const sweeper = setInterval(() => {
    const t = now()
    for (const [appId, entry] of entries) if (entry.expiresAt <= t) entries.delete(appId)
  }, sweepIntervalMs)
  sweeper.unref()

  return {
    kind: 'memory',
    async get (appId) {
      const entry = entries.get(appId)
      if (!entry) return null
      if (entry.expiresAt <= now()) {
        entries.delete(appId)
        return null
      }
      return { ...entry }
    },
    async set (appId, entry) {
      if (entry.expiresAt <= now()) return
      entries.set(appId, { ...entry })
    },
    async delete (appId) {
      entries.delete(appId)
    },
    async ping () {},
    async close () {
      clearInterval(sweeper)
      entries.clear()
    }
  }
}
