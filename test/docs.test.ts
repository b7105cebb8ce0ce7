import t from 'tap'
import { readFile } from 'node:fs/promises'
import { ApiCodes } from '../src/api-codes.js'
import { ConfigSchema } from '../src/config.js'
import { PASSTHROUGH_ROOTS } from '../src/wechat-api/passthrough.js'
import { COMPONENT, build } from './helpers/build.js'

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
const doc = async (name: string): Promise<string> => await readFile(new URL(`../docs/${name}`, import.meta.url), 'utf8')
const configuration = await doc('configuration.md')
const api = await doc('api.md')
const operations = await doc('operations.md')
const example = await readFile(new URL('../.env.example', import.meta.url), 'utf8')

t.test('every config variable is in .env.example and in the table of docs/configuration.md with its default', async (t) => {
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${name}=`, 'm'), `.env.example has ${name}`)
    const fallback = (schema as { default?: unknown }).default
    const cell = fallback === undefined ? 'unset' : `\`${String(fallback)}\``
    t.ok(configuration.includes(`| \`${name}\` | ${cell} |`), `docs/configuration.md row for ${name} with default ${cell}`)
  }
})

t.test('the apiCode table of docs/api.md is the one in api-codes.ts', async (t) => {
  const rows = [...api.matchAll(/^\| (\d{4}) \| (\d{3}) \|/gm)].map((m) => [Number(m[1]), Number(m[2])])
  const codes = Object.values(ApiCodes).map((c) => [c.apiCode, c.statusCode]).sort((a, b) => a[0]! - b[0]!)
  t.same(rows.sort((a, b) => a[0]! - b[0]!), codes)
})

t.test('every route docs/api.md lists is served, and it lists every route', async (t) => {
  const { app } = await build(t, {
    env: {
      WECHAT_API_BASE: 'http://127.0.0.1:9',
      WECHAT_COMPAT_API: 'true',
      WECHAT_PASSTHROUGH: 'true',
      AUTH_TOKENS: 'caller-key-0123456789',
      WECHAT_COMPONENTS: JSON.stringify([COMPONENT]),
      SCHEDULER_INTERVAL_SECONDS: '0'
    }
  })
  const documented = [...api.matchAll(/^\| `(GET|POST) (\/[^`]+)` \|/gm)].map((m) => ({ method: m[1] as 'GET' | 'POST', url: m[2]! }))
  t.same(documented.map((r) => `${r.method} ${r.url}`).sort(), [
    'GET /docs', 'GET /health/live', 'GET /health/ready', 'GET /metrics', 'GET /openapi.json',
    'POST /api/v3/decrypt-wechat-miniprogram-data', 'POST /api/v3/get-wechat-access-token', 'POST /api/v3/get-wechat-access-token-info', 'POST /api/v3/get-wechat-jsapi-ticket',
    'POST /api/v3/get-wechat-jssdk-signature', 'POST /api/v3/get-wechat-miniprogram-phone', 'POST /api/v3/get-wecom-access-token',
    'POST /api/v3/get-wecom-jsapi-ticket', 'POST /api/v3/get-wecom-jssdk-signature',
    'POST /api/v3/refresh-wechat-access-token',
    'GET /cgi-bin/token', 'POST /cgi-bin/stable_token', 'GET /cgi-bin/ticket/getticket', 'GET /cgi-bin/gettoken', 'GET /cgi-bin/get_jsapi_ticket', 'GET /cgi-bin/ticket/get',
    'POST /cgi-bin/component/api_component_token', 'POST /cgi-bin/component/api_create_preauthcode',
    'POST /cgi-bin/component/api_authorizer_token', 'POST /cgi-bin/component/api_query_auth',
    'GET /cgi-bin/*', 'POST /cgi-bin/*',
    'POST /api/v3/get-component-access-token', 'POST /api/v3/get-component-pre-auth-code', 'POST /api/v3/get-authorizer-access-token', 'POST /api/v3/exchange-authorization-code', 'POST /wechat/components/:componentAppId/events',
    'POST /api/v3/get-authorizer-jsapi-ticket', 'POST /api/v3/get-authorizer-jssdk-signature'
  ].sort())
  for (const route of documented) t.ok(app.hasRoute(route), `${route.method} ${route.url} is served`)
  const sdks = await doc('wechat-sdks.md')
  for (const root of PASSTHROUGH_ROOTS) {
    t.ok(api.includes(`\`/${root}/\``) || root === 'cgi-bin', `docs/api.md names /${root}/`)
    t.ok(sdks.includes(`\`/${root}/\``), `docs/wechat-sdks.md names /${root}/`)
    t.ok(app.hasRoute({ method: 'POST', url: `/${root}/*` }), `/${root}/ passes through`)
  }
})

t.test('npm start, the image and docs/operations.md give the service the same heap limits', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  const dockerfile = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8')
  const flags = /--max-old-space-size=\d+ --max-semi-space-size=\d+/.exec(pkg.scripts.start!)?.[0]
  t.ok(flags, 'npm start sets the old and the young generation\'s limits')
  t.ok(dockerfile.includes(`NODE_OPTIONS="${flags}"`), 'the image sets the same ones')
  t.ok(operations.includes(`\`${flags}\``), 'docs/operations.md names them')
})

t.test('the README is short and links every docs page; every relative link in them resolves, anchors included', async (t) => {
  const { readdir } = await import('node:fs/promises')
  const pages = (await readdir(new URL('../docs/', import.meta.url))).filter((name) => name.endsWith('.md'))
  for (const name of pages) t.ok(readme.includes(`](docs/${name})`), `the README links docs/${name}`)
  t.ok(readme.includes('npm ci && npm run demo') && readme.includes('npm ci && npm test'), 'the two commands')
  t.ok(readme.split('\n').length < 120, 'the reference lives in docs/')
  const slug = (heading: string): string => heading.trim().toLowerCase().replace(/[^\w\- ]/g, '').replaceAll(' ', '-')
  const anchorsOf = (text: string): Set<string> => new Set([...text.matchAll(/^#+ (.+)$/gm)].map((m) => slug(m[1]!)))
  const files: Array<[string, string]> = [['README.md', readme], ...await Promise.all(pages.map(async (name): Promise<[string, string]> => [`docs/${name}`, await doc(name)]))]
  for (const [file, text] of files) {
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^https?:/.test(target!)) continue
      const [path, anchor] = target!.split('#') as [string, string | undefined]
      const resolved = path === '' ? new URL(`../${file}`, import.meta.url) : new URL(path, new URL(`../${file}`, import.meta.url))
      let text2: string
      try {
        text2 = await readFile(resolved, 'utf8')
      } catch {
        t.fail(`${file}: ${target} does not exist`)
        continue
      }
      if (anchor !== undefined) t.ok(anchorsOf(text2).has(anchor), `${file}: ${target} has that heading`)
    }
  }
})

t.test('the maximum of every time setting is in its row of docs/configuration.md and its comment in .env.example', async (t) => {
  const lines = example.split('\n')
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    if (!/_(MS|SECONDS)$/.test(name)) continue
    const { maximum } = schema as { maximum?: number }
    const row = configuration.split('\n').find((line) => line.startsWith(`| \`${name}\` |`)) ?? ''
    t.ok(maximum !== undefined && row.includes(`\`${maximum}\``), `docs/configuration.md gives ${name} its maximum, ${maximum}`)
    const at = lines.findIndex((line) => new RegExp(`^#? ?${name}=`).test(line))
    let comment = ''
    for (let i = at - 1; i >= 0 && lines[i]!.startsWith('# ') && !/^# [A-Z_]+=/.test(lines[i]!); i--) comment = lines[i] + '\n' + comment
    t.ok(comment.includes(`at most ${maximum}`), `.env.example gives ${name} its maximum, ${maximum}`)
  }
})

t.test('the README\'s production snippet installs no dev dependency and, binding every interface, points at the threat model', async (t) => {
  const start = readme.indexOf('In production')
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(start))
  t.ok(start >= 0 && block, 'the README shows how to run it in production')
  const commands = block![1]!
  t.match(commands, /npm start/)
  t.ok(/npm prune --omit=dev|npm ci --omit=dev/.test(commands), 'only production dependencies are left installed')
  if (/HOST=0\.0\.0\.0/.test(commands)) {
    const after = readme.slice(start + block!.index + block![0].length).split('\n\n')[1] ?? ''
    t.match(after, /\]\(docs\/security\.md/, 'the paragraph after it links the threat model')
    for (const name of ['AUTH_TOKENS', 'FINGERPRINT_KEY']) t.match(after, name, `and names ${name}`)
  }
})
