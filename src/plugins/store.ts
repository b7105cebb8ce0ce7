/** The token store plugin: Redis when REDIS_URL is set, process memory otherwise; closed with the app. */
import fp from 'fastify-plugin'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { hostPorts, type Config } from '../config.js'
import { safeError } from '../logger.js'
import { createMemoryStore } from '../store/memory-store.js'
import { SCRIPT_COMMANDS, createRedisStore } from '../store/redis-store.js'
import type { TokenStore } from '../store/types.js'
import { TurnRedis } from '../store/turn-redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: TokenStore
    /** The Redis client behind the store, for plugins that keep their own state there; null with the memory store. */
    redis: RedisClient | null
  }
}

export interface StorePluginOptions {
  config: Config
  now?: () => number
}

export type RedisClient = Redis | Cluster

/** A single node (REDIS_URL), a Cluster (REDIS_CLUSTER_NODES) or Sentinel (REDIS_SENTINELS), all through ioredis. */
export function createRedisClient (config: Config): RedisClient | null {
  const autoPipeliningIgnoredCommands = ['eval', 'evalsha', ...SCRIPT_COMMANDS]
  const options: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: config.REDIS_CONNECT_TIMEOUT_MS,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 100, 2000)
  }
  const credentials = {
    ...(config.REDIS_USERNAME ? { username: config.REDIS_USERNAME } : {}),
    ...(config.REDIS_PASSWORD ? { password: config.REDIS_PASSWORD } : {})
  }
  // One socket write for the commands of an event-loop turn (TurnRedis).
  if (config.REDIS_URL) return new TurnRedis(config.REDIS_URL, options)
  if (config.REDIS_CLUSTER_NODES) {
    return new Cluster(hostPorts(config.REDIS_CLUSTER_NODES), {
      lazyConnect: true,
      enableOfflineQueue: false,
      scaleReads: 'master',
      // One socket write per node for the commands of an event-loop turn. Not for EVAL: ioredis routes an
      // auto-pipelined command by its first argument, which for EVAL is the script, not a key. The store's scripts
      // (defined commands, sent as EVALSHA) are sent on their own as well, as they were when sent as EVAL.
      enableAutoPipelining: true,
      autoPipeliningIgnoredCommands,
      clusterRetryStrategy: (times) => Math.min(times * 100, 2000),
      redisOptions: { ...options, ...credentials }
    })
  }
  if (config.REDIS_SENTINELS && config.REDIS_SENTINEL_NAME) {
    return new TurnRedis({
      ...options,
      ...credentials,
      sentinels: hostPorts(config.REDIS_SENTINELS),
      name: config.REDIS_SENTINEL_NAME,
      ...(config.REDIS_PASSWORD ? { sentinelPassword: config.REDIS_PASSWORD } : {})
    })
  }
  return null
}

export default fp<StorePluginOptions>(async (app, { config, now }) => {
  const redis = createRedisClient(config)
  if (!redis) {
    app.decorate('redis', null)
    app.decorate('store', createMemoryStore(now))
    app.addHook('onClose', async () => { await app.store.close() })
    return
  }
  redis.on('error', (err) => app.log.warn({ err: safeError(err) }, 'redis error'))
  try {
    await redis.connect()
  } catch (err) {
    app.log.warn({ err: safeError(err) }, 'redis is not reachable yet; retrying in the background')
  }
  app.decorate<RedisClient | null>('redis', redis)
  app.decorate('store', createRedisStore(redis, config.REDIS_KEY_PREFIX, { ...(now ? { now } : {}), log: app.log }))
  app.addHook('onClose', async () => {
    await app.store.close()
    // As fastify-redis closes: QUIT once the work has drained (a reply, then the server closes); a client that is
    // not connected has nothing to flush.
    if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect())
    else redis.disconnect()
  })
}, { name: 'store', fastify: '5.x' })
