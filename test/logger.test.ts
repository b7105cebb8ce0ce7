import t from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import { APP_ID, APP_SECRET, LogCapture, OTHER_SECRET, build, post, repeatedKeys, startMock } from './helpers/build.js'
import { createLogger, deferredChild } from '../src/logger.js'

/** A logger at `level` whose children are counted. */
function counted (level: string) {
  const capture = new LogCapture()
  const logger = createLogger(level, capture)
  let children = 0
  const parent: FastifyBaseLogger = Object.assign(Object.create(logger) as FastifyBaseLogger, {
    child (this: FastifyBaseLogger, bindings: Record<string, unknown>) {
      children++
      return logger.child.call(this, bindings)
    }
  })
  return { capture, parent, children: () => children }
}

t.test('a deferred child makes no pino child for lines below the level', async (t) => {
  const { capture, parent, children } = counted('warn')
  let asked = 0
  const log = deferredChild(parent, () => { asked++; return { appId: 'wx1' } })
  log.debug({ generation: 2 }, 'token stored')
  log.info('checking the secret')
  log.trace('detail')
  t.equal(children(), 0, 'no child made')
  t.equal(asked, 0, 'bindings not even built')
  t.equal(capture.lines.length, 0)
  t.equal(log.level, 'warn')
})

t.test('a deferred child logs enabled lines once, with its bindings', async (t) => {
  const { capture, parent, children } = counted('info')
  const log = deferredChild(parent, () => ({ appId: 'wx1', caller: 'billing' }))
  log.debug('hidden')
  log.info({ generation: 3 }, 'first')
  log.warn('second')
  log.error(new Error('boom'), 'third')
  t.equal(children(), 1, 'one child for the whole request')
  t.same(capture.records.map((r) => [r.msg, r.appId, r.caller]), [
    ['first', 'wx1', 'billing'], ['second', 'wx1', 'billing'], ['third', 'wx1', 'billing']
  ])
  t.equal(capture.records[0]!.generation, 3)
  t.match(capture.records[2]!.err, { message: 'boom' })
  const grandchild = log.child({ audit: 'x' })
  grandchild.info('fourth')
  t.same(capture.records.at(-1), { ...capture.records.at(-1), appId: 'wx1', audit: 'x', msg: 'fourth' })
})

t.test('a deferred child follows its parent\'s level, and redaction still applies', async (t) => {
  const { capture, parent } = counted('silent')
  const log = deferredChild(parent, () => ({ appId: 'wx1' }))
  log.fatal('nothing at silent')
  t.equal(capture.lines.length, 0)
  parent.level = 'debug'
  log.debug({ appSecret: 'must-not-appear' }, 'now on')
  t.equal(capture.lines.length, 1)
  t.notMatch(capture.text, 'must-not-appear')
})

t.test('request log lines still carry the request id, and the route\'s appId and caller', async (t) => {
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { LOG_LEVEL: 'info' } })
  const refused = await post(app, '/api/v3/get-wechat-access-token-info', { appId: 'wx123', appSecret: APP_SECRET })
  const line = logs.records.find((r) => r.apiCode === 1002)
  t.equal(line?.reqId, refused.body.requestId, 'the error line names the request')
  const first = await post(app, '/api/v3/get-wechat-access-token-info', { appId: APP_ID, appSecret: APP_SECRET })
  t.equal(first.body.statusCode, 200)
  const other = await post(app, '/api/v3/get-wechat-access-token-info', { appId: APP_ID, appSecret: OTHER_SECRET }, { 'x-authing-app-id': 'billing' })
  t.not(other.body.statusCode, 200, 'WeChat refuses the other secret')
  const checked = logs.records.find((r) => typeof r.msg === 'string' && r.msg.includes('checking it with WeChat'))
  t.match(checked, { reqId: other.body.requestId, appId: APP_ID, caller: 'billing' })
})

t.test('a wrong secret refused locally (4005) logs one line, and says nothing of a check that did not happen', async (t) => {
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { LOG_LEVEL: 'info', UNVERIFIED_CHECKS_PER_APP: '1' } })
  const route = '/api/v3/get-wechat-access-token-info'
  t.equal((await post(app, route, { appId: APP_ID, appSecret: APP_SECRET })).body.statusCode, 200)
  t.not((await post(app, route, { appId: APP_ID, appSecret: OTHER_SECRET })).body.statusCode, 200, 'one check, refused by WeChat')
  const before = logs.lines.length
  const refused = await post(app, route, { appId: APP_ID, appSecret: 'a'.repeat(32) })
  t.equal(refused.body.apiCode, 4005, 'the next is refused locally')
  const lines = logs.records.slice(before)
  t.equal(lines.length, 1, 'with one line')
  t.equal(lines[0]?.apiCode, 4005)
})

t.test('at the default level a cached answer makes no pino child; a logged error does', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { LOG_LEVEL: 'info' } })
  let children = 0
  const child = app.log.child.bind(app.log)
  app.log.child = (...args: Parameters<typeof child>) => { children++; return child(...args) }
  const body = { appId: APP_ID, appSecret: APP_SECRET }
  await post(app, '/api/v3/get-wechat-access-token-info', body)
  await post(app, '/api/v3/get-wechat-access-token-info', body)
  t.equal(children, 0, 'a fetch and a cached answer log nothing and make no child')
  await post(app, '/api/v3/get-wechat-access-token-info', { appId: 'wx123', appSecret: APP_SECRET })
  t.ok(children > 0, 'a refused request logs a line, through a child with its reqId')
})

t.test('the check of every captured line finds a key named twice in one object, at any depth, and nothing else', async (t) => {
  t.same(repeatedKeys('{"appId":"wx1","caller":"a","audit":"x","appId":"wx1"}'), ['appId'])
  t.same(repeatedKeys('{"a":1,"b":{"a":2,"c":[{"d":1},{"d":2}]},"e":{"f":1,"f":2}}'), ['f'])
  t.same(repeatedKeys('{"msg":"a \\"msg\\": b, \\"msg\\"","x":["msg","msg"]}'), [], 'strings and array items are not keys')
})
