/** Liveness (the process answers) and readiness (the token store answers). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { safeError } from '../logger.js'
import { HealthSchema } from '../schemas/health.js'

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health/live', { schema: { response: { 200: HealthSchema } } }, async (request, reply) => {
    app.finish(request, reply, 200)
    return { status: 'ok' }
  })

  app.get('/health/ready', { schema: { response: { 200: HealthSchema, 503: HealthSchema } } }, async (request, reply) => {
    try {
      await app.store.ping()
      app.finish(request, reply, 200)
      return { status: 'ready', store: app.store.kind }
    } catch (err) {
      request.log.warn({ err: safeError(err) }, 'readiness check failed: store unavailable')
      app.finish(request, reply, 503)
      return await reply.code(503).send({ status: 'unavailable', store: app.store.kind })
    }
  })
}

export default healthRoutes
