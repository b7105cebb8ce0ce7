/** Several instances of the service on one Redis, as a deployment runs them. */
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { TestClock, build, type LogCapture, type Teardown } from './build.js'
import { RedisServer } from './redis-server.js'

let prefixes = 0

/**
 * n instances sharing one Redis key prefix (each with its own connections), one clock and one upstream, returned once
 * each is subscribed to the change channel (unless `extra` makes that impossible, then after a second).
 */
export async function fleet (t: Teardown, redisUrl: string, n: number, upstream: string, extra: Record<string, string> = {}, clock = new TestClock()) {
  const env = { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: `fleet${++prefixes}`, ...extra }
  const instances: Array<{ app: FastifyInstance, logs: LogCapture }> = []
  for (let i = 0; i < n; i++) instances.push(await build(t, { upstream, env, clock }))
  for (let waited = 0; waited < 1000 && !instances.every((i) => i.app.store.pubsubUp); waited += 10) await sleep(10)
  return { instances, apps: instances.map((i) => i.app), env, clock }
}

/** A redis-server of the test file's own, stopped with it, and fleets on it. */
export async function fleetRedis (t: Teardown) {
  const redis = await RedisServer.start()
  t.teardown(() => redis.stop())
  return {
    redis,
    fleet: async (t: Teardown, n: number, upstream: string, extra: Record<string, string> = {}, clock?: TestClock) =>
      await fleet(t, redis.url, n, upstream, extra, clock)
  }
}
