/**
 * Writes docs/openapi.json: the OpenAPI description the service serves at /openapi.json, as the default configuration
 * builds it (npm run openapi). A test fails when the committed copy drifts from the served one.
 */
import { writeFileSync } from 'node:fs'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/logger.js'

const app = await buildApp(loadConfig({ LOG_LEVEL: 'silent' }), { logger: createLogger('silent') })
await app.ready()
writeFileSync(new URL('../docs/openapi.json', import.meta.url), JSON.stringify(app.swagger(), null, 2) + '\n')
await app.close()
