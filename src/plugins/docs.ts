/**
 * The API description and the interactive docs: an OpenAPI 3 document generated from the routes' own schemas
 * (@fastify/swagger, the Fastify team's plugin: the routes stay the one source of truth), served at /openapi.json,
 * and Swagger UI at /docs (@fastify/swagger-ui, whose assets ship in the package: nothing comes from a CDN). Neither is
 * behind caller keys, like /metrics; DOCS_ENABLED=false turns both off. Register before the routes: the description
 * is collected as routes are added.
 */
import type { FastifySchema } from 'fastify'
import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { ApiCodes } from '../api-codes.js'
import { SdkHeadersSchema } from '../schemas/token.js'
import { VERSION } from '../version.js'

/** The apiCode table, as docs/api.md has it, for the description's text. */
function apiCodeTable (): string {
  const rows = Object.values(ApiCodes).map((code) => `| ${code.apiCode} | ${code.statusCode} | ${code.summary} |`)
  return ['| apiCode | statusCode | meaning |', '|---|---|---|', ...rows].join('\n')
}

/** A refused scrape of /metrics: the envelope without data. */
const REFUSED = {
  type: 'object',
  required: ['statusCode', 'message', 'apiCode', 'requestId'],
  properties: { statusCode: { type: 'integer' }, message: { type: 'string' }, apiCode: { type: 'integer' }, requestId: { type: 'string' } }
}

const DESCRIPTION = `A self-hosted, GenAuth-compatible service that fetches, caches and hands out WeChat access tokens, JS-SDK
tickets and wx.config signatures, and exchanges Mini Program phone codes.

Every answer of the /api routes is the GenAuth envelope \`{statusCode, message, apiCode?, requestId, data?}\`. As GenAuth,
errors are answered with **HTTP 200** and the error in the body (statusCode, apiCode, message, no data); throttling
(apiCode 4004) is a real HTTP 429, an unknown route a real 404.

With AUTH_TOKENS set, every /api route needs a caller key in \`authorization\` (raw, or \`Bearer <key>\`).

${apiCodeTable()}`

/**
 * How a route is described. The /api routes show the headers the SDKs send, which no route validates: Node gives every
 * header as a string, so a validator of optional strings could refuse none, and would cost each request its time.
 * /metrics answers Prometheus text, which its route does not declare as a schema (the reply would be serialized).
 */
function describe ({ schema, url }: { schema: FastifySchema, url: string }): { schema: FastifySchema, url: string } {
  if (url.startsWith('/api/')) return { schema: { ...schema, headers: SdkHeadersSchema }, url }
  if (url !== '/metrics') return { schema, url }
  return {
    schema: {
      ...schema,
      summary: 'Prometheus metrics of this instance',
      tags: ['operations'],
      response: {
        200: { description: 'The Prometheus text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } },
        401: { description: 'METRICS_KEY is set and authorization does not hold it: the envelope, apiCode 2003', content: { 'application/json': { schema: REFUSED } } },
        429: { description: 'More than METRICS_SCRAPES_PER_SECOND scrapes this second: the envelope, apiCode 4004, with retry-after', content: { 'application/json': { schema: REFUSED } } }
      }
    },
    url
  }
}

export default fp<{ enabled: boolean }>(async (app, { enabled }) => {
  if (!enabled) return
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'wechat-token-cache', version: VERSION, description: DESCRIPTION, license: { name: 'MIT' } },
      tags: [
        { name: 'tokens', description: 'WeChat access tokens (GenAuth\'s token routes)' },
        { name: 'tickets', description: 'JS-SDK and card tickets, and wx.config signatures' },
        { name: 'mini program', description: 'GenAuth\'s Mini Program phone-number route' },
        { name: 'open-platform', description: 'Open Platform third-party platforms (WECHAT_COMPONENTS): component tokens' },
        { name: 'operations', description: 'Health and metrics (never behind caller keys)' }
      ],
      components: {
        securitySchemes: {
          callerKey: {
            type: 'apiKey',
            in: 'header',
            name: 'authorization',
            description: 'A caller key of AUTH_TOKENS, raw or as "Bearer <key>". Not needed when AUTH_TOKENS is unset.'
          }
        }
      }
    },
    transform: describe
  })
  // staticCSP: a Content-Security-Policy on the UI's pages that allows their own origin only; without the plugin's
  // upgrade-insecure-requests, which would send the page's own assets to https:// on a service reached over http.
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    transformStaticCSP: (header) => header.replace(/\s*upgrade-insecure-requests;?/, ''),
    uiConfig: { docExpansion: 'list', tryItOutEnabled: false }
  })
  app.get('/openapi.json', { schema: { hide: true } }, async (request, reply) => {
    app.finish(request, reply, 200)
    return app.swagger()
  })
}, { name: 'docs', fastify: '5.x', dependencies: ['envelope'] })
