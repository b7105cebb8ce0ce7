import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { APP_ID, APP_SECRET } from './helpers/build.js'
import { keptAliveCaller, shed } from './helpers/shed.js'
import { Crowd, envelopeOf, rawPost } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

const SLOWLORIS = `POST ${ROUTE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n`

for (const [kind, send] of [['silent', undefined], ['slowloris', SLOWLORIS]] as const) {
  t.test(`a caller's kept-alive connection idle for longer than CONNECTION_GRACE_MS is kept while a crowd of ${kind} connections reconnects`, async (t) => {
    const { app, port, kept, first } = await keptAliveCaller(t, 100)
    t.equal(first.statusCode, 200, 'the caller\'s first request is served')
    // The crowd of the documented claim: connections that never complete a request, opened again as soon as they are closed.
    const crowd = new Crowd(port, { size: 110, reconnect: true, ...(send ? { send } : {}) })
    t.teardown(async () => { await crowd.stop() })
    await crowd.opens(110 + 50)
    // The caller's next request comes 2.5 s later (the default CONNECTION_GRACE_MS is 1 s).
    await sleep(2500)
    t.notOk(kept.closed, 'the caller\'s kept-alive connection is still open')
    t.equal((await shed(app)).idle, 0, 'no idle connection was closed: only crowd connections, none of which ever sent a whole request')
    if (!kept.closed) {
      kept.write(rawPost(ROUTE, body))
      t.equal(envelopeOf(await kept.response()).statusCode, 200, 'and serves the caller\'s next request')
    }
  })
}
