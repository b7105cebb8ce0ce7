/** The upstream plugin: the WeChat client on its undici Pool, and the in-process stand-in when WECHAT_API_BASE=mock. */
import fp from 'fastify-plugin'
import type { Config } from '../config.js'
import type { Metrics } from '../metrics.js'
import { MockWechat } from '../stand-in/wechat.js'
import { createWechatClient, type WechatClient, type WechatClientOptions } from '../wechat/client.js'

declare module 'fastify' {
  interface FastifyInstance {
    wechat: WechatClient
  }
}

export interface WechatPluginOptions {
  config: Config
  metrics: Metrics
  now?: () => number
}

/** What every upstream client of the service is given: the timeouts, pool size, retries and deadline of the config. */
export function clientOptions (config: Config, metrics: Metrics, now?: () => number): Omit<WechatClientOptions, 'baseUrl' | 'mode'> {
  return {
    connectTimeoutMs: config.WECHAT_CONNECT_TIMEOUT_MS,
    headersTimeoutMs: config.WECHAT_HEADERS_TIMEOUT_MS,
    bodyTimeoutMs: config.WECHAT_BODY_TIMEOUT_MS,
    connections: config.WECHAT_POOL_CONNECTIONS,
    maxRetries: config.WECHAT_MAX_RETRIES,
    retryBaseMs: config.WECHAT_RETRY_BASE_MS,
    requestDeadlineMs: config.REQUEST_DEADLINE_MS,
    metrics,
    ...(now ? { now } : {})
  }
}

export default fp<WechatPluginOptions>(async (app, { config, metrics, now }) => {
  let baseUrl = config.WECHAT_API_BASE
  if (baseUrl === 'mock') {
    const mock = new MockWechat({ autoRegister: true, demoPhoneCodes: true })
    baseUrl = await mock.start()
    app.log.warn({ upstream: baseUrl }, 'WECHAT_API_BASE=mock: tokens come from the built-in WeChat stand-in, not from WeChat')
    app.addHook('onClose', async () => { await mock.close() })
  }
  const client = createWechatClient({ baseUrl, mode: config.WECHAT_TOKEN_MODE, ...clientOptions(config, metrics, now) })
  app.decorate('wechat', client)
  app.addHook('onClose', async () => { await client.close() })
}, { name: 'wechat', fastify: '5.x' })
