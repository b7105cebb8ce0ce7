import t from 'tap'
import { readFile } from 'node:fs/promises'
import { ApiCodes } from '../src/api-codes.js'
import { ConfigSchema } from '../src/config.js'
import { build } from './helpers/build.js'

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
const example = await readFile(new URL('../.env.example', import.meta.url), 'utf8')

t.test('every config variable is in .env.example and in the README table with its default', async (t) => {
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${name}=`, 'm'), `.env.example has ${name}`)
    const fallback = (schema as { default?: unknown }).default
    const cell = fallback === undefined ? 'unset' : `\`${String(fallback)}\``
    t.ok(readme.includes(`| \`${name}\` | ${cell} |`), `README row for ${name} with default ${cell}`)
  }
})

t.test('the README apiCode table is the one in api-codes.ts', async (t) => {
  const rows = [...readme.matchAll(/^\| (\d{4}) \| (\d{3}) \|/gm)].map((m) => [Number(m[1]), Number(m[2])])
  const codes = Object.values(ApiCodes).map((c) => [c.apiCode, c.statusCode]).sort((a, b) => a[0]! - b[0]!)
  t.same(rows.sort((a, b) => a[0]! - b[0]!), codes)
})

t.test('every route in the README is served, and the README lists the routes', async (t) => {
  const { app } = await build(t, { env: { WECHAT_API_BASE: 'http://127.0.0.1:9' } })
  const documented = [...readme.matchAll(/^\| `(GET|POST) (\/[^`]+)` \|/gm)].map((m) => ({ method: m[1] as 'GET' | 'POST', url: m[2]! }))
  t.same(documented.map((r) => `${r.method} ${r.url}`).sort(), [
    'GET /docs', 'GET /health/live', 'GET /health/ready', 'GET /metrics', 'GET /openapi.json',
    'POST /api/v3/get-wechat-access-token', 'POST /api/v3/get-wechat-access-token-info', 'POST /api/v3/get-wechat-jsapi-ticket',
    'POST /api/v3/get-wechat-jssdk-signature', 'POST /api/v3/get-wechat-miniprogram-phone', 'POST /api/v3/refresh-wechat-access-token'
  ])
  for (const route of documented) t.ok(app.hasRoute(route), `${route.method} ${route.url} is served`)
})

t.test('npm start, the image and the README give the service the same heap limit', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  const dockerfile = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8')
  const flag = /--max-old-space-size=\d+/.exec(pkg.scripts.start!)?.[0]
  t.ok(flag, 'npm start sets a heap limit')
  t.match(dockerfile, new RegExp(`NODE_OPTIONS=${flag}\\b`), 'the image sets the same one')
  t.ok(readme.includes(`\`${flag}\``), 'the README names it')
})
