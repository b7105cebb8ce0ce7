/** The shared store: per-app keys under one hash tag (Cluster-safe), Lua for compare-and-set, pub/sub for changes. */
import type { Cluster, Redis } from 'ioredis'
import { ChangeWaiters, parseEntry, type TokenStore } from './types.js'

const GENERATION_TTL_MS = 7 * 24 * 3600 * 1000

/** KEYS: token, generation. ARGV: expected generation, entry JSON, token TTL ms, generation TTL ms. */
const COMPARE_AND_SET = `
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], current + 1, 'PX', ARGV[4])
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else redis.call('DEL', KEYS[1]) end
return 1`

/** KEYS: the held key. ARGV: owner. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

/** KEYS: counter. ARGV: TTL ms for a new counter. */
const INCREMENT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`

export function appKey (prefix: string, appId: string, name: string): string {
  return `${prefix}:{${appId}}:${name}`
}

export function tokenKey (prefix: string, appId: string): string {
  return appKey(prefix, appId, 'token')
}

export function createRedisStore (redis: Redis | Cluster, prefix: string, now: () => number = Date.now): TokenStore {
  const channel = `${prefix}:changed`
  const waiters = new ChangeWaiters()
  const subscriber = 'isCluster' in redis && redis.isCluster
    ? redis.duplicate([], { lazyConnect: false, enableOfflineQueue: true })
    : (redis as Redis).duplicate({ lazyConnect: false, enableOfflineQueue: true, maxRetriesPerRequest: null })
  subscriber.on('error', () => {})
  subscriber.on('message', (_channel: string, appId: string) => waiters.wake(appId))
  subscriber.subscribe(channel).catch(() => {})
  const key = (appId: string, name: string): string => appKey(prefix, appId, name)

  return {
    kind: 'redis',
    async get (appId) {
      return parseEntry(await redis.get(key(appId, 'token')))
    },
    async generation (appId) {
      return Number(await redis.get(key(appId, 'generation')) ?? 0)
    },
    async compareAndSet (appId, entry, expected) {
      const written = await redis.eval(COMPARE_AND_SET, 2, key(appId, 'token'), key(appId, 'generation'),
        expected, JSON.stringify(entry), entry.expiresAt - now(), GENERATION_TTL_MS)
      return written === 1
    },
    async delete (appId) {
      await redis.del(key(appId, 'token'))
    },
    async acquire (appId, name, owner, ttlMs) {
      return await redis.set(key(appId, name), owner, 'PX', ttlMs, 'NX') === 'OK'
    },
    async release (appId, name, owner) {
      return await redis.eval(RELEASE, 1, key(appId, name), owner) === 1
    },
    async increment (appId, name, ttlMs) {
      return Number(await redis.eval(INCREMENT, 1, key(appId, name), ttlMs))
    },
    async getValue (appId, name) {
      return await redis.get(key(appId, name))
    },
    async setValue (appId, name, value, ttlMs) {
      await redis.set(key(appId, name), value, 'PX', ttlMs)
    },
    async notify (appId) {
      await redis.publish(channel, appId)
    },
    async waitForChange (appId, timeoutMs) {
      await waiters.wait(appId, timeoutMs)
    },
    onChange (listener) {
      waiters.listen(listener)
    },
    async ping () {
      await redis.ping()
    },
    async close () {
      waiters.wakeAll()
      subscriber.disconnect()
    }
  }
}
