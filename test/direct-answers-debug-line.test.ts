/**
 * At LOG_LEVEL debug (or trace), each request logs one 'request completed' line. Fastify runs onResponse hooks on the
 * response's 'finish' event whatever wrote the response, so a success written directly must not log the line itself.
 */
import t from 'tap'
import { APP_ID, APP_SECRET, build, post, startMock } from './helpers/build.js'
import { until } from './helpers/until.js'

const CURRENT = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

for (const [name, env] of [
  ['rate limits off (written directly)', { LOG_LEVEL: 'debug' }],
  ['rate limits on (Fastify\'s send)', { LOG_LEVEL: 'debug', RATE_LIMIT_PER_CALLER: '1000' }]
] as const) {
  t.test(`one 'request completed' line per request: ${name}`, async (t) => {
    const { url } = await startMock(t)
    const { app, logs } = await build(t, { upstream: url, env })
    for (const id of ['miss-1', 'hit-2']) {
      const { body: envelope } = await post(app, CURRENT, body, { 'x-request-id': id })
      t.equal(envelope.statusCode, 200, `${id}: answered`)
      const lines = () => logs.records.filter((r) => r.msg === 'request completed' && r.reqId === id)
      t.ok(await until(() => lines().length >= 1), `${id}: logged`)
      t.equal(lines().length, 1, `${id}: logged once (${JSON.stringify(lines())})`)
    }
  })
}
