/** The shared store: one Redis key per appId, hash-tagged for Cluster, expiring with the token. */
import type { Redis } from 'ioredis'
import { parseEntry, type TokenStore } from './types.js'

export function tokenKey (prefix: string, appId: string): string {
  return `${prefix}:{${appId}}:token`
}

export function createRedisStore (redis: Redis, prefix: string, now: () => number = Date.now): TokenStore {
  return {
    kind: 'redis',
    async get (appId) {
      return parseEntry(await redis.get(tokenKey(prefix, appId)))
    },
    async set (appId, entry) {
      const ttl = entry.expiresAt - now()
      if (ttl <= 0) return
      await redis.set(tokenKey(prefix, appId), JSON.stringify(entry), 'PX', ttl)
    },
    async delete (appId) {
      await redis.del(tokenKey(prefix, appId))
    },
    async ping () {
      await redis.ping()
    },
    async close () {}
  }
}
