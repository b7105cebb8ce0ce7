/**
 * A check of a secret not yet verified takes a lock of its own, not the one the owner's verified fetch needs: when
 * WeChat is slow (but answers within the deadline), a stranger's check ahead of the owner does not eat the owner's
 * deadline, and nothing backs the app off, since WeChat answered every request it got.
 */
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, TestClock, startMock, type Envelope } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { until } from './helpers/until.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const HOUR = 3600_000
const { fleet } = await fleetRedis(t)

async function from (app: FastifyInstance, ip: string, payload: unknown): Promise<Envelope> {
  const res = await app.inject({ method: 'POST', url: TOKEN, remoteAddress: ip, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload) })
  return res.json() as Envelope
}

t.test('WeChat answering in 1.2 s of a 2 s deadline: a stranger\'s wrong secret ahead of the owner does not hold the owner back', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { apps } = await fleet(t, 2, url, { REQUEST_DEADLINE_MS: '2000', SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const owner = { appId: APP_ID, appSecret: APP_SECRET }
  t.equal((await from(apps[0]!, '10.0.0.1', owner)).statusCode, 200, 'the owner\'s secret is verified')
  clock.advance(2 * HOUR)
  mock.advance(2 * HOUR)
  mock.inject({ fault: { kind: 'latency', ms: 1200 }, endpoint: 'stable_token' })
  const calls = mock.calls('stable_token')
  const stranger = from(apps[0]!, '192.0.2.66', { appId: APP_ID, appSecret: OTHER_SECRET })
  t.ok(await until(() => mock.calls('stable_token') === calls + 1), 'the stranger\'s check is with WeChat, holding the app\'s lock')
  const ownerAnswer = await from(apps[1]!, '10.0.0.1', owner)
  t.equal((await stranger).apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'WeChat refused the stranger\'s secret in 1.2 s')
  t.equal(ownerAnswer.statusCode, 200, `the owner, whose fetch WeChat answers in 1.2 s of its 2 s, is served (got apiCode ${ownerAnswer.apiCode}: ${ownerAnswer.message})`)
  const next = await from(apps[0]!, '10.0.0.1', owner)
  t.not(next.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, `and the app is not backed off (got apiCode ${next.apiCode})`)
})
