/**
 * A success written directly on the response (no hook sets headers: rate limits off) has the status, headers, header
 * order and body that Fastify's send path gives the same answer (rate limits on, their x-ratelimit-* headers aside),
 * on every shape of route that answers this way, HEAD included. Over real HTTP, to see the raw header lines.
 */
import t from 'tap'
import { request, type IncomingMessage, type ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { APP_ID, APP_SECRET, TestClock, build, startMock } from './helpers/build.js'
import { listen } from './helpers/raw-http.js'

interface Answer { status: number, headers: string[], body: string }

async function ask (port: number, method: string, path: string, payload?: string): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = request({
      port,
      host: '127.0.0.1',
      method,
      path,
      headers: { 'x-request-id': 'same-request-id', ...(payload === undefined ? {} : { 'content-type': 'application/json' }) }
    }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.rawHeaders, body }) })
    })
    req.on('error', reject)
    req.end(payload)
  })
}

/** Header lines as sent, in order, without the date and without the rate limits' own. */
function lines (answer: Answer): string[] {
  const out: string[] = []
  for (let i = 0; i < answer.headers.length; i += 2) {
    const name = answer.headers[i]!.toLowerCase()
    if (name !== 'date' && !name.startsWith('x-ratelimit-')) out.push(`${name}: ${answer.headers[i + 1]!}`)
  }
  return out
}

t.test('an answer written directly is the answer Fastify\'s send path makes, header lines and their order included', async (t) => {
  const { url } = await startMock(t)
  const at = Date.now()
  const clock = Object.assign(new TestClock(), { now: () => at })
  const env = { WECHAT_COMPAT_API: 'true', SCHEDULER_INTERVAL_SECONDS: '0' }
  const apps: Array<{ app: FastifyInstance, port: number }> = []
  // How each answer was written: the direct path hands writeHead a list of header lines, Fastify's send an object.
  const paths: string[] = []
  const settings: Array<Record<string, string>> = [{}, { RATE_LIMIT_PER_CALLER: '1000', RATE_LIMIT_PER_APP: '1000' }]
  for (const limits of settings) {
    const { app } = await build(t, { upstream: url, clock, env: { ...env, ...limits } })
    app.server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
      const writeHead = res.writeHead
      res.writeHead = function (this: ServerResponse, ...args: Parameters<ServerResponse['writeHead']>) {
        if (args[0] === 200) paths.push(Array.isArray(args[1]) ? 'direct' : 'send')
        return writeHead.apply(this, args)
      } as ServerResponse['writeHead']
    })
    apps.push({ app, port: await listen(app) })
  }
  const token = JSON.stringify({ appId: APP_ID, appSecret: APP_SECRET })
  const cgi = `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`
  const cases: Array<[string, string, string | undefined]> = [
    ['POST', '/api/v3/get-wechat-access-token-info', token],
    ['POST', '/api/v3/get-wechat-access-token', token],
    ['POST', '/api/v3/get-wechat-jsapi-ticket', token],
    ['GET', cgi, undefined],
    ['HEAD', cgi, undefined]
  ]
  for (const [method, path, payload] of cases) {
    const name = `${method} ${path.split('?')[0]!}`
    // Each twice: a fetch or store read, then (hot cache or not) the same again.
    for (const { port } of apps) await ask(port, method, path, payload)
    paths.length = 0
    const plain = await ask(apps[0]!.port, method, path, payload)
    const limited = await ask(apps[1]!.port, method, path, payload)
    t.same(paths.splice(0), ['direct', 'send'], `${name}: written directly without rate limits, by Fastify's send with them`)
    t.equal(plain.status, limited.status, `${name}: the same status`)
    t.same(lines(plain), lines(limited), `${name}: the same header lines in the same order`)
    // Each app fetched its own: a ticket differs, an expiry may be a second apart.
    const same = (body: string) => body.replace(/"expires(At|In|_in)":"?\d+"?/g, '"expires$1":0').replace(/"ticket":"[^"]+"/, '"ticket":""')
    t.equal(same(plain.body), same(limited.body), `${name}: the same body`)
    if (method === 'HEAD') t.equal(plain.body, '', `${name}: no body`)
    else t.match(plain.body, /"(accessToken|ticket|access_token)":/, `${name}: a credential`)
  }
  // The obsolete route's own headers are in both.
  const obsolete = await ask(apps[0]!.port, 'POST', '/api/v3/get-wechat-access-token', token)
  t.match(lines(obsolete).join('\n'), /deprecation: @1704067200\nlink: /, 'the obsolete route\'s Deprecation and Link')
})
