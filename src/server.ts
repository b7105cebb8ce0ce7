/** The entry point: loads the config, builds the app, listens, and shuts down gracefully on SIGTERM/SIGINT. */
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { loadConfig, type Config } from './config.js'
import { createLogger, safeError } from './logger.js'

let config: Config
try {
  config = loadConfig()
} catch (err) {
  console.error(`Invalid configuration: ${(err as Error).message}`)
  process.exit(1)
}

const logger = createLogger(config.LOG_LEVEL)
const app = await buildApp(config, { logger })

closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS, logger }, async ({ signal, err }) => {
  if (err) logger.error({ err: safeError(err) }, 'shutting down after an error')
  else logger.info({ signal }, 'shutting down')
  await app.close()
})

await app.listen({ port: config.PORT, host: config.HOST })
