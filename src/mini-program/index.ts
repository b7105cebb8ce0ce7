/**
 * Mini Programs named by identifier (WECHAT_IDENTIFIERS): a user's phone number, made with the app's access token
 * (so this product depends on the Official Account one, which keeps the tokens), and data decrypted with the session
 * of a wx.login code. Without WECHAT_IDENTIFIERS both services are undefined and the routes answer
 * IDENTIFIER_NOT_CONFIGURED.
 */
import fp from 'fastify-plugin'
import { loadApps, loadIdentifiers } from '../config.js'
import type { ProductOptions } from '../official-account/index.js'
import { createDecryptService, type DecryptService } from './decrypt-service.js'
import { createPhoneService, type PhoneService } from './phone-service.js'

export { default as miniProgramRoutes } from './routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Undefined without WECHAT_IDENTIFIERS: the phone route then answers IDENTIFIER_NOT_CONFIGURED. */
    phones: PhoneService | undefined
    /** Undefined without WECHAT_IDENTIFIERS: the decrypt route then answers IDENTIFIER_NOT_CONFIGURED. */
    decrypts: DecryptService | undefined
  }
}

export const miniProgram = fp<ProductOptions>(async (app, { config, metrics, now }) => {
  const apps = loadApps(config)
  const identifiers = loadIdentifiers(config, apps)
  const clock = now ? { now } : {}
  app.decorate('phones', identifiers && apps
    ? createPhoneService({ tokens: app.tokens, wechat: app.wechat, identifiers, apps, requestDeadlineMs: config.REQUEST_DEADLINE_MS, ...clock })
    : undefined)
  app.decorate('decrypts', identifiers && apps
    ? createDecryptService({
      tokens: app.tokens,
      store: app.store,
      wechat: app.wechat,
      identifiers,
      apps,
      dailyBudget: config.SESSION_DAILY_BUDGET,
      negativeCacheSeconds: config.NEGATIVE_CACHE_SECONDS,
      requestDeadlineMs: config.REQUEST_DEADLINE_MS,
      fingerprintKey: config.FINGERPRINT_KEY,
      metrics,
      ...clock
    })
    : undefined)
  app.addHook('onClose', async () => { await app.decrypts?.close() })
}, { name: 'mini-program', fastify: '5.x', dependencies: ['store', 'wechat', 'official-account'], decorators: { fastify: ['tokens'] } })
