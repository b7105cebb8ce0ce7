/** The token store plugin: Redis when REDIS_URL is set, process memory otherwise; closed with the app. */
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'
import type { Config } from '../config.js'
import { safeError } from '../logger.js'
import { createMemoryStore } from '../store/memory-store.js'
import { createRedisStore } from '../store/redis-store.js'
import type { TokenStore } from '../store/types.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: TokenStore
    /** The Redis client behind the store, for plugins that keep their own state there; null with the memory store. */
    redis: Redis | null
  }
}

export interface StorePluginOptions {
  config: Config
  now?: () => number
}

export function createRedisClient (url: string, config: Config): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: config.REDIS_CONNECT_TIMEOUT_MS,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 100, 2000)
  })
}

export default fp<StorePluginOptions>(async (app, { config, now }) => {
  if (!config.REDIS_URL) {
    app.decorate('redis', null)
    app.decorate('store', createMemoryStore(now))
    app.addHook('onClose', async () => { await app.store.close() })
    return
  }
  const redis = createRedisClient(config.REDIS_URL, config)
  redis.on('error', (err) => app.log.warn({ err: safeError(err) }, 'redis error'))
  try {
    await redis.connect()
  } catch (err) {
    app.log.warn({ err: safeError(err) }, 'redis is not reachable yet; retrying in the background')
  }
  app.decorate('redis', redis)
  app.decorate('store', createRedisStore(redis, config.REDIS_KEY_PREFIX, now))
  app.addHook('onClose', async () => {
    await app.store.close()
    redis.disconnect()
  })
}, { name: 'store', fastify: '5.x' })
