/**
 * One server for the benchmark, in its own process: BENCH_VARIANT=service (the app, configured by the environment)
 * or bare (a bare Fastify route with the same body schema, answering a constant envelope of the same size).
 * Prints its port on stdout once listening.
 */
import type { AddressInfo } from 'node:net'
import { randomUUID } from 'node:crypto'
import Fastify, { LogController } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/logger.js'
import { requestIdFrom } from '../src/plugins/envelope.js'
import { EnvelopeSchema, TokenRequestSchema } from '../src/schemas/token.js'

/** The same framework set-up as the service (logger, request ids, validation) with nothing behind the route. */
async function bare () {
  const app = Fastify({
    loggerInstance: createLogger(process.env.LOG_LEVEL ?? 'warn'),
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: (req) => requestIdFrom(req.headers['x-request-id'], randomUUID),
    ajv: { customOptions: { coerceTypes: false, allErrors: false } }
  }).withTypeProvider<TypeBoxTypeProvider>()
  const envelope = {
    statusCode: 200,
    message: 'Operation successful',
    requestId: '5f0a1c2e-8d1b-4c0e-9a7f-3b2d1e0c9f8a',
    data: { accessToken: `88_${'A'.repeat(129)}`, expiresAt: '1795542463', expiresIn: 7199 }
  }
  app.post('/api/v3/get-wechat-access-token-info', { schema: { body: TokenRequestSchema, response: { 200: EnvelopeSchema } } }, async () => envelope)
  return app
}

const app = process.env.BENCH_VARIANT === 'bare'
  ? await bare()
  : await buildApp(loadConfig(), { logger: createLogger(process.env.LOG_LEVEL ?? 'warn') })
await app.listen({ port: 0, host: '127.0.0.1' })
console.log(String((app.server.address() as AddressInfo).port))
process.on('SIGTERM', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
