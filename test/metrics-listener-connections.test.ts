import t from 'tap'
import type { AddressInfo } from 'node:net'
import { build } from './helpers/build.js'
import { Crowd, exchange } from './helpers/raw-http.js'
import { shed } from './helpers/shed.js'

const KEY = 'metrics-key-0123456789abcdef'

t.test('with METRICS_PORT and METRICS_KEY, a crowd of silent connections to the metrics port cannot keep Prometheus out', async (t) => {
  // docs/metrics.md: METRICS_KEY is "useful where the metrics stay on PORT, or where the metrics port cannot be kept private".
  const { app } = await build(t, { env: { METRICS_PORT: '0', METRICS_HOST: '127.0.0.1', METRICS_KEY: KEY, METRICS_SCRAPES_PER_SECOND: '100' } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const metricsPort = (app.metricsServer!.server.address() as AddressInfo).port
  const crowd = new Crowd(metricsPort, { size: 70, reconnect: true })
  t.teardown(async () => { await crowd.stop() })
  await crowd.opens(70 + 50)
  let scraped = 0
  for (let i = 0; i < 10; i++) {
    const res = await exchange(metricsPort, `GET /metrics HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${KEY}\r\nconnection: close\r\n\r\n`).catch(() => undefined)
    if (res?.status === 200) scraped++
  }
  t.ok(scraped >= 9, `${scraped} of 10 scrapes with the key answered`)
  t.ok((await shed(app, 'metrics')).silent! > 0, 'the metrics listener closed crowd connections to make room, counted under listener="metrics"')
  t.equal((await shed(app, 'main')).silent, 0, 'and none of the main listener')
})
