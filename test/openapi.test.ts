/** The OpenAPI description: valid, complete, generated from the routes, and the committed copy in step with it. */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { Validator } from '@seriousme/openapi-schema-validator'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, CALLER_KEYS, build, post, startMock } from './helpers/build.js'

interface Operation {
  operationId?: string
  deprecated?: boolean
  tags?: string[]
  security?: Array<Record<string, string[]>>
  parameters?: Array<{ in: string, name: string }>
  requestBody?: { content: Record<string, { schema: { properties: Record<string, unknown>, required?: string[] } }> }
  responses: Record<string, { description: string, content?: Record<string, { schema: Record<string, unknown> }> }>
}
interface OpenApi {
  openapi: string
  info: { description: string }
  paths: Record<string, Record<string, Operation>>
  components: { securitySchemes: Record<string, { type: string, in: string, name: string }> }
}

const API_ROUTES = [
  '/api/v3/get-wechat-access-token-info', '/api/v3/get-wechat-access-token', '/api/v3/refresh-wechat-access-token',
  '/api/v3/get-wechat-jsapi-ticket', '/api/v3/get-wechat-jssdk-signature', '/api/v3/get-wechat-miniprogram-phone',
  '/api/v3/decrypt-wechat-miniprogram-data', '/api/v3/get-wecom-access-token', '/api/v3/get-wecom-jsapi-ticket',
  '/api/v3/get-wecom-jssdk-signature', '/api/v3/get-component-access-token', '/api/v3/get-component-pre-auth-code',
  '/api/v3/get-authorizer-access-token', '/api/v3/exchange-authorization-code', '/api/v3/get-authorizer-jsapi-ticket',
  '/api/v3/get-authorizer-jssdk-signature'
]

async function served (t: Parameters<typeof build>[0], env: Record<string, string> = {}) {
  const { app } = await build(t, { env: { WECHAT_API_BASE: 'http://127.0.0.1:9', ...env } })
  const res = await app.inject({ method: 'GET', url: '/openapi.json' })
  return { app, res, doc: res.json() as OpenApi }
}

t.test('GET /openapi.json is a valid OpenAPI 3 document', async (t) => {
  const { res, doc } = await served(t)
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /application\/json/)
  t.match(doc.openapi, /^3\./)
  const result = await new Validator().validate(doc as unknown as Parameters<Validator['validate']>[0])
  t.equal(result.valid, true, JSON.stringify(result.errors ?? '').slice(0, 2000))
})

t.test('it covers every route, with its body, headers, envelopes, the caller-key scheme and the obsolete route deprecated', async (t) => {
  const { app, doc } = await served(t)
  t.same(Object.keys(doc.paths).sort(), [...API_ROUTES, '/health/live', '/health/ready', '/metrics'].sort(), 'every route, no more')
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const method of Object.keys(methods)) t.ok(app.hasRoute({ method: method.toUpperCase() as 'GET', url: path }), `${method} ${path} is served`)
  }
  const scheme = doc.components.securitySchemes.callerKey
  t.same(scheme && { type: scheme.type, in: scheme.in, name: scheme.name }, { type: 'apiKey', in: 'header', name: 'authorization' })
  const codes = [...new Set(Object.values(ApiCodes).map((code) => code.apiCode))].sort((a, b) => a - b)
  for (const path of API_ROUTES) {
    const op = doc.paths[path]?.post
    if (!op) {
      t.fail(`POST ${path} is described`)
      continue
    }
    t.ok(op.operationId, `${path}: operationId`)
    t.ok(op.tags?.length, `${path}: tagged`)
    t.same(op.security, [{ callerKey: [] }, {}], `${path}: the caller key, optional (needed only with AUTH_TOKENS)`)
    const body = op.requestBody?.content['application/json']?.schema
    t.ok(body && (body.required ?? []).length > 0, `${path}: a JSON body with its required fields`)
    t.ok(op.parameters?.some((p) => p.in === 'header' && p.name === 'x-authing-app-id'), `${path}: the SDK headers`)
    const ok = op.responses['200']?.content?.['application/json']?.schema as { properties: Record<string, { enum?: number[] }> } | undefined
    t.ok(ok?.properties.data, `${path}: the success envelope with data`)
    t.same(ok?.properties.apiCode?.enum, codes, `${path}: the error envelope's apiCode, every code`)
    t.ok(op.responses['429'], `${path}: the 429 of the rate limits`)
    t.equal(op.deprecated ?? false, path === '/api/v3/get-wechat-access-token', `${path}: deprecated only if obsolete`)
  }
  for (const code of Object.values(ApiCodes)) t.ok(doc.info.description.includes(`| ${code.apiCode} | ${code.statusCode} |`), `apiCode ${code.apiCode} in the table`)
  t.ok(doc.paths['/metrics']?.get?.responses['200']?.content?.['text/plain'], '/metrics answers text')
})

t.test('the committed docs/openapi.json is the one served (npm run openapi writes it)', async (t) => {
  const { doc } = await served(t)
  const committed = JSON.parse(await readFile(new URL('../docs/openapi.json', import.meta.url), 'utf8')) as OpenApi
  t.same(committed, doc, 'docs/openapi.json is out of date: run npm run openapi')
})

t.test('like /metrics, the docs need no caller key; DOCS_ENABLED=false turns them off', async (t) => {
  const { app } = await served(t, { AUTH_TOKENS: CALLER_KEYS.join(',') })
  t.equal((await app.inject({ method: 'GET', url: '/openapi.json' })).statusCode, 200)
  const page = await app.inject({ method: 'GET', url: '/docs' })
  t.equal(page.statusCode, 200)
  t.match(page.body, /swagger-ui/)
  t.notMatch(page.body, /https?:\/\/(?!127\.0\.0\.1|localhost)/, 'nothing from another origin')
  t.equal((await post(app, API_ROUTES[0]!, { appId: APP_ID, appSecret: APP_SECRET })).body.apiCode, 2003, 'the API still needs one')

  const { app: off } = await build(t, { env: { WECHAT_API_BASE: 'http://127.0.0.1:9', DOCS_ENABLED: 'false' } })
  for (const url of ['/openapi.json', '/docs', '/docs/json', '/docs/static/index.html']) {
    const res = await off.inject({ method: 'GET', url })
    t.equal(res.statusCode, 404, `${url} is gone`)
    t.equal((res.json() as { apiCode: number }).apiCode, 1005)
  }
})

t.test('the docs page loads only its own assets', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const res = await app.inject({ method: 'GET', url: '/docs' })
  const page = res.body
  t.match(res.headers['content-security-policy'], /default-src 'self'/, 'a Content-Security-Policy of its own origin')
  t.notMatch(res.headers['content-security-policy'], /upgrade-insecure-requests/, 'that works over plain http too')
  const assets = [...page.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
  t.ok(assets.length > 0)
  for (const asset of assets) {
    t.notMatch(asset, /^(https?:)?\/\//, `${asset}: served here`)
    const res = await app.inject({ method: 'GET', url: new URL(asset, 'http://x/docs/').pathname })
    t.equal(res.statusCode, 200, `${asset} is served`)
  }
})
