/** Shared state between instances: change messages, flushes, corrupted values, a store that refuses pub/sub. */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiCodes } from '../src/api-codes.js'
import { fingerprint } from '../src/fingerprint.js'
import type { TokenEntry } from '../src/store/types.js'
import { APP_ID, APP_SECRET, TestClock, build, post, startMock, type Teardown } from './helpers/build.js'
import { fleet as fleetOf, fleetRedis } from './helpers/fleet.js'
import { RedisServer } from './helpers/redis-server.js'
import { nextChange, until } from './helpers/until.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const REFRESH = '/api/v3/refresh-wechat-access-token'
const TICKET = '/api/v3/get-wechat-jsapi-ticket'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const MINUTE = 60_000

const { redis, fleet } = await fleetRedis(t)
let prefixes = 0

function client (t: Teardown) {
  const c = redis.client()
  t.teardown(() => c.disconnect())
  return c
}

t.test('a read in flight when the token is replaced does not put the old token back in the hot cache', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [a, b] } = await fleet(t, 2, url, { HOT_CACHE_MS: '60000' })
  const t1 = (await post(b!, ROUTE, body)).body.data!.accessToken
  const store = a!.store
  const get = store.get.bind(store)
  let gate: Promise<void> | undefined
  let open = (): void => {}
  let held = false
  store.get = async (appId) => {
    const entry = await get(appId)
    if (gate) {
      held = true
      await gate
    }
    return entry
  }
  gate = new Promise((resolve) => { open = resolve })
  const inflight = post(a!, ROUTE, body)
  t.ok(await until(() => held), 'A\'s read of T1 is held')
  gate = undefined
  const heard = nextChange(a!.store, APP_ID, 2)
  const t2 = (await post(b!, REFRESH, { ...body, accessToken: t1 })).body.data!.accessToken
  t.not(t2, t1, 'B replaced the token (a forced refresh: T1 is dead at WeChat)')
  t.equal(mock.check(t1), 'invalid')
  await heard
  open()
  t.equal((await inflight).body.data?.accessToken, t1, 'the delayed read answers what it read')
  const next = await post(a!, ROUTE, body)
  t.equal(next.body.data?.accessToken, t2, 'the next request on A gets the new token, not the old one from its hot cache')
})

t.test('after a flush, a copy that another instance superseded is never restored', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [a, b], clock } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: 'classic', HOT_CACHE_MS: '0' })
  const t1 = (await post(a!, ROUTE, body)).body.data!.accessToken
  const t2 = (await post(b!, REFRESH, { ...body, accessToken: t1 })).body.data!.accessToken
  t.not(t2, t1, 'B replaced T1 with T2')
  clock.advance(6 * MINUTE)
  mock.advance(6 * MINUTE)
  t.equal(mock.check(t1), 'expired', 'six minutes later WeChat no longer takes T1')
  await client(t).flushall()
  const fromA = (await post(a!, ROUTE, body)).body.data!.accessToken
  t.not(fromA, t1, 'A does not serve its superseded copy')
  t.equal(mock.check(fromA), 'valid', 'A serves a token WeChat takes')
  const fromB = (await post(b!, ROUTE, body)).body.data!.accessToken
  t.equal(fromB, fromA, 'and both instances serve the same one')
})

t.test('after a flush, an instance whose copy is current puts it back instead of fetching', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [a, b] } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: 'classic', HOT_CACHE_MS: '0' })
  const t1 = (await post(a!, ROUTE, body)).body.data!.accessToken
  await post(b!, ROUTE, body)
  await client(t).flushall()
  t.equal((await post(b!, ROUTE, body)).body.data?.accessToken, t1, 'restored')
  t.equal((await post(a!, ROUTE, body)).body.data?.accessToken, t1)
  t.equal(mock.issued(APP_ID), 1, 'no fetch: a classic fetch would have retired the token every instance serves')
})

t.test('a corrupted generation counter is repaired, and callers are only handed stored tokens', async (t) => {
  const { mock, url } = await startMock(t, { autoRegister: true })
  const { apps, env } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: 'classic' })
  const c = client(t)
  for (const [i, corrupt] of ['abc', '-3', '1.5', '1e400', ''].entries()) {
    const appId = `wx00000000000000e${i}`
    await c.set(`${env.REDIS_KEY_PREFIX}:{${appId}}:generation`, corrupt)
    const tokens = new Set<string>()
    for (let n = 0; n < 10; n++) {
      const answer = await post(apps[0]!, ROUTE, { appId, appSecret: APP_SECRET })
      t.equal(answer.body.statusCode, 200)
      tokens.add(answer.body.data!.accessToken)
    }
    t.equal(mock.issued(appId), 1, `generation "${corrupt}": 10 requests, one upstream call`)
    t.equal(tokens.size, 1, `generation "${corrupt}": one token handed out`)
    t.match(await c.get(`${env.REDIS_KEY_PREFIX}:{${appId}}:generation`), /^[1-9]\d*$/, 'the counter is a number again')
  }
})

t.test('a stored entry with absurd values is treated as corrupt; an upstream lifetime is capped at 7200 s', async (t) => {
  const { url } = await startMock(t, { tokenTtlSeconds: 1e12 })
  const { apps, env } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: 'classic', HOT_CACHE_MS: '0' })
  const now = Date.now()
  const capped = await post(apps[0]!, ROUTE, body)
  t.equal(capped.body.statusCode, 200)
  t.ok(capped.body.data!.expiresIn <= 7200, `expires_in 1e12 is served as ${capped.body.data!.expiresIn} s`)
  t.ok(Number(capped.body.data!.expiresAt) <= now / 1000 + 7201)

  const c = client(t)
  const absurd: Array<Partial<TokenEntry>> = [
    { expiresAt: 1e300 },
    { expiresAt: now + 365 * 24 * 3600_000 },
    { sentAt: now + 3600_000, fetchedAt: now + 3600_000, expiresAt: now + 3600_000 + 7200_000 },
    { sentAt: now + 1000 },
    { generation: -1 },
    { accessToken: 'x'.repeat(10_000) }
  ]
  for (const fields of absurd) {
    const entry: TokenEntry = {
      accessToken: 'forged-token', expiresAt: now + 3600_000, mode: 'classic', secretFingerprint: fingerprint(APP_ID, APP_SECRET), sentAt: now, fetchedAt: now, generation: 5, ...fields
    }
    await c.set(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:token`, JSON.stringify(entry), 'PX', 60_000)
    const answer = await post(apps[0]!, ROUTE, body)
    t.equal(answer.body.statusCode, 200)
    t.not(answer.body.data?.accessToken, entry.accessToken, `${JSON.stringify(fields).slice(0, 60)}: not served`)
    t.match(answer.body.data?.expiresAt, /^\d{10}$/)
  }
})

t.test('a Redis user without pub/sub rights: warned once, shown by a metric and readiness, served by polling', async (t) => {
  const admin = client(t)
  const prefix = `coherence${++prefixes}`
  await admin.call('ACL', 'SETUSER', 'nopubsub', 'on', '>nopubsub-password-1', '~*', '+@all', 'resetchannels')
  t.teardown(async () => {
    const c = redis.client()
    await c.call('ACL', 'DELUSER', 'nopubsub')
    c.disconnect()
  })
  const { mock, url } = await startMock(t)
  const env = { REDIS_URL: `redis://nopubsub:nopubsub-password-1@127.0.0.1:${redis.port}`, REDIS_KEY_PREFIX: prefix, HOT_CACHE_MS: '60000' }
  const a = await build(t, { upstream: url, env })
  const b = await build(t, { upstream: url, env })
  await sleep(300)
  const t1 = (await post(a.app, ROUTE, body)).body.data!.accessToken
  t.equal((await post(a.app, ROUTE, body)).body.data?.accessToken, t1)
  const t2 = (await post(b.app, REFRESH, { ...body, accessToken: t1 })).body.data!.accessToken
  t.not(t2, t1)
  t.equal((await post(a.app, ROUTE, body)).body.data?.accessToken, t2, 'A reads the store instead of trusting a hot copy it cannot invalidate')
  for (let i = 0; i < 5; i++) await post(b.app, REFRESH, { ...body, accessToken: 'not-current' })
  t.equal(mock.check(t2), 'valid')

  const warnings = a.logs.records.filter((r) => r.level === 40 && /pub\/sub/i.test(String(r.msg)))
  t.equal(warnings.length, 1, 'one warning')
  t.match(String(warnings[0]?.msg), new RegExp(`&${prefix}:changed`), 'which names the channel rights to grant')

  const ready = await a.app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200, 'still ready: it serves')
  t.match(ready.json(), { status: 'degraded', storeUp: true, pubsubUp: false })
  const metrics = (await a.app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /^wxtoken_store_pubsub_up 0$/m)
  t.match(metrics, /^wxtoken_store_up 1$/m)
})

t.test('an error that is not the store\'s is an internal error, not "store unavailable"', async (t) => {
  const { url } = await startMock(t)
  const { apps: [app], instances: [instance] } = await fleet(t, 1, url)
  app!.store.get = async () => { throw new TypeError('a bug') }
  const answer = await post(app!, ROUTE, body)
  t.equal(answer.body.apiCode, ApiCodes.INTERNAL.apiCode)
  t.ok(instance!.logs.records.some((r) => r.level === 50 && /a bug/.test(JSON.stringify(r))), 'logged as an error with its cause')
})

t.test('closing waits for a background refresh and releases its lock', async (t) => {
  const { mock, url } = await startMock(t)
  const prefix = `coherence${++prefixes}`
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, clock, env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, WECHAT_TOKEN_MODE: 'classic' } })
  const t1 = (await post(app, ROUTE, body)).body.data!.accessToken
  clock.advance(7200_000 - 300_000)
  mock.inject({ fault: { kind: 'latency', ms: 400 }, times: 1 })
  t.equal((await post(app, ROUTE, body)).body.data?.accessToken, t1, 'due: served at once, refreshed in the background')
  t.ok(await until(() => mock.calls('token') === 2), 'the background refresh is with WeChat')
  await app.close()
  const c = client(t)
  t.equal(await c.exists(`${prefix}:{${APP_ID}}:lock`), 0, 'the lock was released, not left to its lease')
  t.not(JSON.parse(await c.get(`${prefix}:{${APP_ID}}:token`) ?? '{}').accessToken, t1, 'and the refreshed token was stored')
})

t.test('the least Redis rights the threat model lists are enough, pub/sub included', async (t) => {
  const threatModel = await readFile(new URL('../docs/security.md', import.meta.url), 'utf8')
  const rule = /`(ACL SETUSER wxtoken [^`]+)`/.exec(threatModel)?.[1]
  t.ok(rule, 'docs/security.md gives the rule')
  const admin = client(t)
  const prefix = 'least'
  const args = rule!.replace(/<password>/, 'least-password-0123').replaceAll('wxtoken:', `${prefix}:`).split(' ').slice(2)
  await admin.call('ACL', 'SETUSER', ...args)
  t.teardown(async () => {
    const c = redis.client()
    await c.call('ACL', 'DELUSER', 'wxtoken')
    c.disconnect()
  })
  const { mock, url } = await startMock(t)
  const env = {
    REDIS_URL: `redis://wxtoken:least-password-0123@127.0.0.1:${redis.port}`,
    REDIS_KEY_PREFIX: prefix,
    RATE_LIMIT_PER_CALLER: '100',
    RATE_LIMIT_PER_APP: '100',
    WECHAT_TOKEN_MODE: 'classic'
  }
  const a = await build(t, { upstream: url, env })
  const b = await build(t, { upstream: url, env })
  await sleep(300)
  const t1 = (await post(a.app, ROUTE, body)).body.data!.accessToken
  const t2 = (await post(b.app, REFRESH, { ...body, accessToken: t1 })).body.data!.accessToken
  t.not(t2, t1)
  t.equal((await post(a.app, ROUTE, body)).body.data?.accessToken, t2)
  t.equal(mock.issued(APP_ID), 2)
  // A ticket: fetched by one instance, read from the store (with its token, in one MGET) by the other.
  const ticket = (await post<{ ticket: string }>(a.app, TICKET, body)).body.data?.ticket
  t.ok(ticket)
  t.equal((await post<{ ticket: string }>(b.app, TICKET, body)).body.data?.ticket, ticket, 'the other instance reads it from the store')
  t.equal(mock.calls('getticket'), 1)
  const ready = (await a.app.inject({ method: 'GET', url: '/health/ready' })).json()
  t.match(ready, { status: 'ready', storeUp: true, pubsubUp: true }, 'store and pub/sub work with these rights')
  for (const instance of [a, b]) {
    t.notOk(instance.logs.records.some((r) => Number(r.level) >= 40 && /NOPERM|redis error|may not run/i.test(JSON.stringify(r))), 'nothing refused')
  }
})

t.test('with the rule of an earlier version (no MGET), a ticket is read with two GETs, and that is said once', async (t) => {
  const threatModel = await readFile(new URL('../docs/security.md', import.meta.url), 'utf8')
  const rule = /`(ACL SETUSER wxtoken [^`]+)`/.exec(threatModel)?.[1]
  t.match(rule, / \+mget /, 'the rule lets the service run MGET')
  const admin = client(t)
  const prefix = 'nomget'
  const args = rule!.replace(/<password>/, 'nomget-password-0123').replace(' +mget', '').replaceAll('wxtoken:', `${prefix}:`).split(' ').slice(2)
  await admin.call('ACL', 'SETUSER', ...args.map((arg) => arg === 'wxtoken' ? 'wxold' : arg))
  t.teardown(async () => {
    const c = redis.client()
    await c.call('ACL', 'DELUSER', 'wxold')
    c.disconnect()
  })
  const { mock, url } = await startMock(t)
  const env = { REDIS_URL: `redis://wxold:nomget-password-0123@127.0.0.1:${redis.port}`, REDIS_KEY_PREFIX: prefix, HOT_CACHE_MS: '0' }
  const a = await build(t, { upstream: url, env })
  const b = await build(t, { upstream: url, env })
  const ticket = (await post<{ ticket: string }>(a.app, TICKET, body)).body.data?.ticket
  t.ok(ticket)
  const answers = await Promise.all(Array.from({ length: 10 }, async () => await post<{ ticket: string }>(b.app, TICKET, body)))
  t.same(answers.map((answer) => answer.body.data?.ticket), Array<string | undefined>(10).fill(ticket), 'the other instance reads it from the store, ten at once')
  t.equal((await post<{ ticket: string }>(b.app, TICKET, body)).body.data?.ticket, ticket, 'and again')
  t.equal(mock.calls('getticket'), 1, 'never fetched as if the store were down')
  const said = b.logs.records.filter((r) => /may not run MGET/.test(String(r.msg)))
  t.equal(said.length, 1, 'the refused MGET is logged once')
  t.equal(Number(said[0]?.level), 40, 'at warn')
})

t.test('a user refused the app\'s keys is a store that refuses, not a user without MGET', async (t) => {
  const threatModel = await readFile(new URL('../docs/security.md', import.meta.url), 'utf8')
  const rule = /`(ACL SETUSER wxtoken [^`]+)`/.exec(threatModel)?.[1]
  const admin = client(t)
  // The documented rule for another prefix: MGET allowed, the service's keys not.
  const args = rule!.replace(/<password>/, 'elsewhere-password-0123').replaceAll('wxtoken:', 'elsewhere:').split(' ').slice(2)
  await admin.call('ACL', 'SETUSER', ...args.map((arg) => arg === 'wxtoken' ? 'wxelse' : arg))
  t.teardown(async () => {
    const c = redis.client()
    await c.call('ACL', 'DELUSER', 'wxelse')
    c.disconnect()
  })
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { REDIS_URL: `redis://wxelse:elsewhere-password-0123@127.0.0.1:${redis.port}`, REDIS_KEY_PREFIX: 'mine', HOT_CACHE_MS: '0' } })
  const answer = await post(app, TICKET, body)
  t.equal(answer.body.apiCode, ApiCodes.STORE_UNAVAILABLE.apiCode, 'the store is unavailable to it')
  t.notOk(logs.records.some((r) => /may not run MGET/.test(String(r.msg))), 'and it is not told to add +mget')
})

t.test('a refresh that wrote nothing (a refused secret) does not empty the other instances\' hot caches', async (t) => {
  const { url } = await startMock(t)
  const { apps: [a, b] } = await fleet(t, 2, url, { HOT_CACHE_MS: '60000' })
  const token = (await post(a!, ROUTE, body)).body.data!.accessToken
  t.equal((await post(a!, ROUTE, body)).body.data?.accessToken, token, 'A has it in its hot cache')
  let reads = 0
  const get = a!.store.get.bind(a!.store)
  a!.store.get = async (appId) => { reads++; return await get(appId) }
  t.equal((await post(b!, ROUTE, { appId: APP_ID, appSecret: 'f'.repeat(32) })).body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode)
  await sleep(100)
  for (let i = 0; i < 5; i++) t.equal((await post(a!, ROUTE, body)).body.data?.accessToken, token)
  t.equal(reads, 0, 'A answered from its hot cache throughout')
})

t.test('a change missed while a subscriber reconnected: later reads correct the copy, and after a restart no dead token comes back', async (t) => {
  for (const mode of ['classic', 'stable']) {
    const own = await RedisServer.start()
    t.teardown(() => own.stop())
    const { mock, url } = await startMock(t)
    const clock = new TestClock()
    const { apps: [a, b] } = await fleetOf(t, own.url, 2, url, { WECHAT_TOKEN_MODE: mode, HOT_CACHE_MS: '0', REDIS_COMMAND_TIMEOUT_MS: '300' }, clock)
    const t1 = (await post(a!, ROUTE, body)).body.data!.accessToken
    const admin = own.client()
    await admin.client('KILL', 'TYPE', 'pubsub')
    admin.disconnect()
    const t2 = (await post(b!, REFRESH, { ...body, accessToken: t1 })).body.data!.accessToken
    t.not(t2, t1, `${mode}: B replaced the token while the subscribers were away`)
    for (let i = 0; i < 100 && !(a!.store.pubsubUp && b!.store.pubsubUp); i++) await sleep(20)
    for (let i = 0; i < 3; i++) t.equal((await post(a!, ROUTE, body)).body.data?.accessToken, t2, `${mode}: A reads the new token`)
    clock.advance(6 * MINUTE)
    mock.advance(6 * MINUTE)
    t.not(mock.check(t1), 'valid', `${mode}: WeChat no longer takes the old token`)
    await own.stop()
    const during = await post(a!, ROUTE, body)
    t.equal(during.body.data?.accessToken, t2, `${mode}: during the outage A answers its copy, the new token`)
    await own.restart()
    for (let i = 0; i < 100 && !a!.store.pubsubUp; i++) await sleep(20)
    const after = (await post(a!, ROUTE, body)).body.data!.accessToken
    t.equal(mock.check(after), 'valid', `${mode}: after the restart A serves a token WeChat takes`)
    t.equal((await post(b!, ROUTE, body)).body.data?.accessToken, after, `${mode}: and so does B`)
  }
})

t.test('values of the wrong type are repaired by the next write, not taken for a store outage', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [app], env } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: 'classic', RATE_LIMIT_PER_APP: '100' })
  const c = client(t)
  const key = (name: string): string => `${env.REDIS_KEY_PREFIX}:{${APP_ID}}:${name}`
  await c.rpush(key('generation'), 'x')
  await c.hset(key('token'), 'x', 'y')
  await c.sadd(key('negative'), 'x')
  await c.rpush(key('verified'), 'x')
  await c.hset(key('jsapi_ticket'), 'x', 'y')
  const first = await post(app!, ROUTE, body)
  t.equal(first.body.statusCode, 200)
  t.equal(mock.issued(APP_ID), 1, 'fetched once')
  t.equal((await post(app!, ROUTE, body)).body.data?.accessToken, first.body.data?.accessToken, 'then served from the store')
  t.equal(await c.type(key('generation')), 'string')
  t.equal(await c.type(key('token')), 'string')
  t.equal(await c.get(key('generation')), '1')
  // A ticket is read with its token in one command (MGET), which reads a value of another type as missing.
  const ticket = await post<{ ticket: string }>(app!, TICKET, body)
  t.equal(ticket.body.statusCode, 200, 'a ticket over a value of another type')
  t.equal(mock.calls('getticket'), 1)
  t.equal((await post<{ ticket: string }>(app!, TICKET, body)).body.data?.ticket, ticket.body.data?.ticket, 'then served from the store')
  t.equal(await c.type(key('jsapi_ticket')), 'string')
})
