/**
 * The credential contract: every kind of credential the engine keeps (src/tokens/) must pass it, through the service's
 * public routes and the WeChat stand-in, on the memory store (one instance) and on Redis (a fleet of 3 instances on
 * one redis-server): one upstream fetch per cold herd, the budget (daily or hourly), refresh ahead of expiry, outage
 * copies, and a flushed store. A new kind is added by listing a CredentialKind in test/credential-contract.test.ts.
 */
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { MockEndpoint } from '../../src/stand-in/wechat.js'
import { APP_ID, APP_SECRET, TestClock, build, post, startMock, type Teardown } from './build.js'
import { fleetRedis } from './fleet.js'
import { until } from './until.js'

/** What a caller was handed: the credential and when it expires (epoch milliseconds). */
export interface Served { value: string, expiresAt: number }

export type ContractCase = 'herd' | 'budget' | 'refresh ahead' | 'outage' | 'flush'

/** The upstream a kind is fetched from, as the contract watches it: its stand-in, started for one case. */
export interface Upstream {
  /** Upstream fetches of the kind's credential so far. */
  calls: () => number
  /** Every fetch from now on takes this long. */
  slow: (ms: number) => void
  /** Moves the stand-in's clock (expiry) forward. */
  advance: (ms: number) => void
  /** The env that points the service at it. */
  env: Record<string, string>
  /** What the instances need before the kind can be asked for (a component's pushed ticket, an authorization), if anything. */
  prepare?: (apps: FastifyInstance[]) => Promise<void>
}

/** A kind of credential as a caller sees it. */
export interface CredentialKind {
  name: string
  /** The route that answers it, and the body that asks for it (APP_ID's, with its right secret). */
  route: string
  body: Record<string, unknown>
  /** The credential in a successful envelope's data, or undefined when it holds none. */
  read: (data: unknown) => Served | undefined
  /** The WeChat stand-in endpoint each of its upstream fetches calls (unless `upstream` starts another stand-in). */
  endpoint: MockEndpoint
  /** Starts the stand-in it is fetched from, when not WeChat's (WeCom's, say). */
  upstream?: (t: Teardown) => Promise<Upstream>
  /** Its owner in the store (APP_ID when absent). */
  owner?: string
  /** Its slot in the store (src/store/types.ts). */
  slot: string
  /** The env var of its budget of upstream calls per owner (daily or hourly), and the apiCode of a request past it. */
  budget: { env: string, apiCode: number }
  /**
   * stable: a fetch returns the credential served (a store that lost it may fetch again); classic: a fetch retires
   * the one other instances serve (a store that lost it gets an instance's copy back, without a fetch).
   */
  mode: 'stable' | 'classic'
  /** More env for every instance (the token mode, say). */
  env?: Record<string, string>
  /** Cases skipped for this kind, each with the reason (an engine defect it revealed, say). */
  skip?: Partial<Record<ContractCase, string>>
}

/** Time left on a credential when the refresh-ahead case asks for it: within every kind's window, above the serving margin (120 s). */
const LEFT_WHEN_DUE_MS = 250_000
const HERD = 60

/** Envelope data as the access token and ticket routes give it: the credential under its own name, expiresAt in Unix seconds. */
export function readAs (field: string): CredentialKind['read'] {
  return (data) => {
    const record = data as Record<string, unknown> | undefined
    const value = record?.[field]
    const expiresAt = Number(record?.expiresAt)
    return typeof value === 'string' && Number.isSafeInteger(expiresAt) ? { value, expiresAt: expiresAt * 1000 } : undefined
  }
}

interface Setup {
  apps: FastifyInstance[]
  clock: TestClock
  mock: Upstream
}

export function credentialContract (t: Test, kind: CredentialKind): void {
  /** Every instance: WECHAT_APPS (a configured, so verified, secret), no scheduler, no hot cache (each request reads the store). */
  const baseEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
    WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }),
    SCHEDULER_INTERVAL_SECONDS: '0',
    HOT_CACHE_MS: '0',
    ...kind.env,
    ...extra
  })

  async function ask (app: FastifyInstance): Promise<{ statusCode: number, apiCode: number | undefined, message: string, served: Served | undefined }> {
    const { body } = await post<unknown>(app, kind.route, kind.body)
    return { statusCode: body.statusCode, apiCode: body.apiCode, message: body.message, served: body.statusCode === 200 ? kind.read(body.data) : undefined }
  }

  const calls = (mock: Upstream): number => mock.calls()
  const owner = kind.owner ?? APP_ID

  /** The kind's stand-in: WeChat's, counting the kind's endpoint for APP_ID, unless the kind starts its own. */
  async function startUpstream (t: Teardown): Promise<Upstream> {
    if (kind.upstream) return await kind.upstream(t)
    const { mock, url } = await startMock(t)
    return {
      calls: () => mock.calls(kind.endpoint, APP_ID),
      slow: (ms) => { mock.inject({ fault: { kind: 'latency', ms }, endpoint: kind.endpoint }) },
      advance: (ms) => { mock.advance(ms) },
      env: { WECHAT_API_BASE: url }
    }
  }
  const skip = (name: ContractCase): { skip: string } | object => kind.skip?.[name] ? { skip: kind.skip[name] } : {}

  /** The cases every store runs; `setup` makes the instances (one on the memory store, three on Redis). */
  function sharedCases (t: Test, setup: (t: Test, env?: Record<string, string>) => Promise<Setup>): void {
    t.test(`a cold herd of ${HERD} requests: one upstream fetch, one value for all`, skip('herd'), async (t) => {
      const { apps, mock } = await setup(t)
      // The fetch takes a while, so the whole herd arrives while it is in flight.
      mock.slow(200)
      const answers = await Promise.all(Array.from({ length: HERD }, async (_, i) => await ask(apps[i % apps.length]!)))
      const failed = answers.filter((a) => a.served === undefined)
      t.same(failed.map((a) => a.message), [], 'every caller was answered')
      t.equal(new Set(answers.map((a) => a.served?.value)).size, 1, 'every caller got the same value')
      t.equal(calls(mock), 1, `exactly one ${kind.endpoint} call`)
    })

    t.test(`the budget: past ${kind.budget.env}, apiCode ${kind.budget.apiCode} and no upstream call`, skip('budget'), async (t) => {
      const { apps, mock, clock } = await setup(t, { [kind.budget.env]: '2' })
      // To a second past the turn of a clock hour (never a Beijing midnight's second): no budget window ends meanwhile.
      clock.advance(3600_000 - (clock.now() % 3600_000) + 1000)
      const on = (i: number): FastifyInstance => apps[i % apps.length]!
      for (let i = 0; i < 2; i++) {
        const answer = await ask(on(i))
        t.ok(answer.served, `fetch ${i + 1} is within the budget: ${answer.message}`)
        t.equal(calls(mock), i + 1)
        await on(i).store.delete(owner, kind.slot)
      }
      const refused = await ask(on(2))
      t.equal(refused.apiCode, kind.budget.apiCode, `the third fetch is refused: ${refused.message}`)
      t.equal(refused.served, undefined)
      t.equal(calls(mock), 2, 'and never reached WeChat')
    })

    t.test('refresh ahead: answered from the cache at once, one background refresh, then a later expiry', skip('refresh ahead'), async (t) => {
      const { apps, clock, mock } = await setup(t)
      const first = (await ask(apps[0]!)).served
      t.ok(first, 'served')
      t.equal(calls(mock), 1)
      const advance = first!.expiresAt - clock.now() - LEFT_WHEN_DUE_MS
      clock.advance(advance)
      mock.advance(advance)
      const due = await ask(apps[1 % apps.length]!)
      // A caller that waited for the refresh would hold the new value: the stand-in issues a new one at each fetch now.
      t.same(due.served, first, 'the cached value, though due, answered without waiting for the refresh')
      t.ok(await until(() => calls(mock) === 2), 'the stand-in saw one background refresh')
      t.ok(await until(async () => ((await apps[0]!.store.get(owner, kind.slot))?.expiresAt ?? 0) > first!.expiresAt),
        'the refreshed value is stored')
      for (const app of apps) {
        const after = (await ask(app)).served
        t.not(after?.value, first!.value, 'the next caller gets the refreshed value')
        t.ok((after?.expiresAt ?? 0) > first!.expiresAt, 'with a later expiry')
      }
      t.equal(calls(mock), 2, 'exactly one refresh')
    })
  }

  t.test(`${kind.name} credential contract`, async (t) => {
    t.test('memory store, one instance', async (t) => {
      sharedCases(t, async (t, env) => {
        const mock = await startUpstream(t)
        const clock = new TestClock()
        const { app } = await build(t, { clock, env: baseEnv({ ...mock.env, ...env }) })
        await mock.prepare?.([app])
        return { apps: [app], clock, mock }
      })
    })

    t.test('Redis, a fleet of 3 instances', async (t) => {
      const { redis, fleet } = await fleetRedis(t)
      const setup = async (t: Test, env?: Record<string, string>): Promise<Setup> => {
        const mock = await startUpstream(t)
        // Commands fail fast while Redis is down (the outage case).
        const { apps, clock } = await fleet(t, 3, mock.env.WECHAT_API_BASE ?? 'http://127.0.0.1:9', baseEnv({ ...mock.env, REDIS_COMMAND_TIMEOUT_MS: '300', ...env }))
        t.ok(await until(() => apps.every((app) => app.store.pubsubUp)), 'every instance hears change messages')
        await mock.prepare?.(apps)
        return { apps, clock, mock }
      }
      sharedCases(t, setup)

      /** Every instance serves the credential once; the value they all got. */
      async function servedByAll (t: Test, apps: FastifyInstance[]): Promise<Served> {
        const answers: Array<Served | undefined> = []
        for (const app of apps) answers.push((await ask(app)).served)
        t.ok(answers[0], 'served')
        t.ok(answers.every((a) => a?.value === answers[0]?.value), 'every instance serves the same value')
        return answers[0]!
      }

      t.test('Redis down: an instance that served the credential answers it from its copy', skip('outage'), async (t) => {
        const { apps, mock } = await setup(t)
        const before = await servedByAll(t, apps)
        const fetched = calls(mock)
        await redis.stop()
        try {
          const during = await ask(apps[1]!)
          t.equal(during.statusCode, 200, `answered while Redis is down: ${during.message}`)
          t.same(during.served, before, 'with its copy')
          t.equal(calls(mock), fetched, 'without an upstream call')
        } finally {
          await redis.restart()
        }
        t.ok(await until(() => apps.every((app) => app.store.pubsubUp)), 'every instance is back on Redis')
        const after = await servedByAll(t, apps)
        if (kind.mode === 'classic') t.equal(after.value, before.value, 'classic: the copy was put back into the empty store')
      })

      t.test(`FLUSHALL: ${kind.mode === 'classic' ? 'the copy is put back, no upstream fetch' : 'at most one upstream fetch'}, then one value everywhere`, skip('flush'), async (t) => {
        const { apps, mock } = await setup(t)
        const before = await servedByAll(t, apps)
        const fetched = calls(mock)
        const client = redis.client()
        t.teardown(() => client.disconnect())
        await client.flushall()
        const next = await ask(apps[1]!)
        t.ok(next.served, `answered after the flush: ${next.message}`)
        if (kind.mode === 'classic') {
          t.same(next.served, before, 'the copy put back')
          t.equal(calls(mock), fetched, 'no upstream fetch: one would retire the value every instance serves')
        } else {
          t.ok(calls(mock) <= fetched + 1, `at most one upstream fetch (${calls(mock) - fetched})`)
        }
        for (const app of apps) t.equal((await ask(app)).served?.value, next.served?.value, 'every instance serves that value')
        t.ok(calls(mock) <= fetched + (kind.mode === 'classic' ? 0 : 1), 'and no instance fetched again')
      })
    })
  })
}
