/**
 * One server for the benchmark, in its own process, running the compiled service as production does (npm run build
 * first): BENCH_VARIANT=service (the app, configured by the environment) or bare (a bare Fastify route with the same
 * framework set-up and body schema, answering a constant envelope of the same size). Prints its port once listening,
 * followed by the metrics listener's when METRICS_PORT gives /metrics one of its own. BENCH_ENV_FILE names a JSON
 * object of more variables, for a value longer than one environment string may be (Linux: 128 KiB; a WECOM_APPS of
 * 10,000 applications is about 600 KB).
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import Fastify, { LogController } from 'fastify'
import { buildApp } from '../dist/app.js'
import { loadConfig } from '../dist/config.js'
import { createLogger, requestLoggerFactory } from '../dist/logger.js'
import { requestIdFrom } from '../dist/plugins/envelope.js'
import { EnvelopeSchema, TokenRequestSchema } from '../dist/schemas/token.js'

if (process.env.BENCH_ENV_FILE) Object.assign(process.env, JSON.parse(readFileSync(process.env.BENCH_ENV_FILE, 'utf8')))
const level = process.env.LOG_LEVEL ?? 'warn'

async function bare () {
  const app = Fastify({
    loggerInstance: createLogger(level),
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: requestLoggerFactory,
    requestIdHeader: false,
    genReqId: (req) => requestIdFrom(req.headers['x-request-id'], randomUUID),
    ajv: { customOptions: { coerceTypes: false, allErrors: false } }
  })
  const envelope = {
    statusCode: 200,
    message: 'Operation successful',
    requestId: '5f0a1c2e-8d1b-4c0e-9a7f-3b2d1e0c9f8a',
    data: { accessToken: `88_${'A'.repeat(129)}`, expiresAt: '1795542463', expiresIn: 7199 }
  }
  app.post('/api/v3/get-wechat-access-token-info', { schema: { body: TokenRequestSchema, response: { 200: EnvelopeSchema } } }, async () => envelope)
  return app
}

// Before listening: the parent may signal as soon as the port is printed.
// Started with --expose-gc: SIGUSR2 collects garbage and prints the memory left, as JSON on stderr.
process.on('SIGUSR2', () => {
  globalThis.gc?.()
  process.stderr.write(JSON.stringify(process.memoryUsage()) + '\n')
})
const app = process.env.BENCH_VARIANT === 'bare' ? await bare() : await buildApp(loadConfig(), { logger: createLogger(level) })
process.on('SIGTERM', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
await app.listen({ port: 0, host: '127.0.0.1' })
const metricsAddress = app.metricsServer?.server.address()
console.log(metricsAddress ? `${app.server.address().port} ${metricsAddress.port}` : String(app.server.address().port))
