import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiCodes } from '../src/api-codes.js'
import { APP_SECRET, build, post, startMock } from './helpers/build.js'
import type { MockFault } from '../src/stand-in/wechat.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const appIdFor = (i: number) => `wx${i.toString(16).padStart(16, '0')}`

function handles (): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1
  return counts
}

t.test('every upstream fault is an envelope within the request deadline', async (t) => {
  const { mock, url } = await startMock(t, { autoRegister: true })
  const deadline = 500
  const { app } = await build(t, { upstream: url, env: { REQUEST_DEADLINE_MS: String(deadline), WECHAT_RETRY_BASE_MS: '50' } })
  const cases: Array<[MockFault, number]> = [
    [{ kind: 'hang' }, ApiCodes.WECHAT_UNAVAILABLE.apiCode],
    [{ kind: 'latency', ms: 2000 }, ApiCodes.WECHAT_UNAVAILABLE.apiCode],
    [{ kind: 'drop' }, ApiCodes.WECHAT_UNAVAILABLE.apiCode],
    [{ kind: 'http', status: 502 }, ApiCodes.WECHAT_BAD_RESPONSE.apiCode],
    [{ kind: 'http', status: 404 }, ApiCodes.WECHAT_BAD_RESPONSE.apiCode],
    [{ kind: 'errcode', errcode: -1 }, ApiCodes.WECHAT_BUSY.apiCode],
    [{ kind: 'garbage' }, ApiCodes.WECHAT_BAD_RESPONSE.apiCode]
  ]
  for (const [i, [fault, apiCode]] of cases.entries()) {
    mock.clearFaults()
    mock.inject({ fault })
    const started = Date.now()
    // A caller each: the checks of a caller that failed without an answer back its next checks off (tested elsewhere).
    const payload = JSON.stringify({ appId: appIdFor(i + 1), appSecret: APP_SECRET })
    const res = await app.inject({ method: 'POST', url: ROUTE, remoteAddress: `10.0.9.${i}`, headers: { 'content-type': 'application/json' }, payload })
    const body = res.json<{ apiCode?: number }>()
    const elapsed = Date.now() - started
    t.equal(body.apiCode, apiCode, `${fault.kind}: apiCode ${apiCode}`)
    t.ok(elapsed < deadline + 300, `${fault.kind}: answered after ${elapsed} ms (deadline ${deadline})`)
  }
})

t.test('1,000 requests against a hanging upstream: every one answered, and no socket or timer left behind', async (t) => {
  const { mock, url } = await startMock(t, { autoRegister: true })
  // The deadline leaves a loaded machine time to open the pool's connections before the requests are abandoned.
  const { app } = await build(t, {
    upstream: url,
    env: { REQUEST_DEADLINE_MS: '1500', WECHAT_POOL_CONNECTIONS: '32', LOG_LEVEL: 'warn', UNVERIFIED_CHECKS_PER_CALLER: '2000' }
  })
  const warm = await post(app, ROUTE, { appId: appIdFor(0), appSecret: APP_SECRET })
  t.equal(warm.body.statusCode, 200)
  await sleep(500)
  const before = handles()

  mock.inject({ fault: { kind: 'hang' } })
  const started = Date.now()
  const answers = await Promise.all(Array.from({ length: 1000 }, async (_, i) =>
    await post(app, ROUTE, { appId: appIdFor(i + 1), appSecret: APP_SECRET })))
  const elapsed = Date.now() - started
  t.ok(answers.every((a) => a.body.apiCode === ApiCodes.WECHAT_UNAVAILABLE.apiCode), 'all 1,000 got the 3008 envelope')
  // How long it took is a figure of the machine (reported, not asserted): that every request was answered is the point.
  t.comment(`all answered in ${elapsed} ms`)
  t.ok(mock.calls('stable_token') > 32, `${mock.calls('stable_token')} upstream requests were made and abandoned`)

  mock.clearFaults()
  await sleep(1600)
  const after = handles()
  t.comment(`handles before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`)
  for (const kind of new Set([...Object.keys(before), ...Object.keys(after)])) {
    t.ok((after[kind] ?? 0) <= (before[kind] ?? 0) + 2, `${kind}: ${before[kind] ?? 0} before, ${after[kind] ?? 0} after`)
  }
  t.equal((await post(app, ROUTE, { appId: appIdFor(5000), appSecret: APP_SECRET })).body.statusCode, 200, 'the pool still works')
})
