/**
 * Every other WeChat API call, passed through (WECHAT_PASSTHROUGH=true): a WeChat SDK whose API host is this service
 * sends all its calls here, and only this service's address calls WeChat (the one address on the IP whitelist).
 *
 * - Where: WeChat's own path roots (`/cgi-bin/…`, `/sns/…`, `/wxa/…` and the rest of PASSTHROUGH_ROOTS), GET and POST,
 *   to WECHAT_API_BASE; a call carrying a WeCom token this service handed out goes to WECOM_API_BASE instead. The
 *   upstream path is built from the route the router matched and the rest of the path it captured, checked to hold
 *   only what WeChat's paths hold: no host, no absolute form, no `.` or `..` segment reaches the upstream.
 * - What: the method, path and query as sent; the body streamed (at most WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES), with
 *   its content-type and nothing else of the caller's headers (its caller key stays here); WeChat's answer streamed
 *   back as WeChat sent it (JSON, images, files, a redirect not followed), within WECHAT_PASSTHROUGH_TIMEOUT_MS.
 * - The token and ticket endpoints are never passed on: they are answered from the cache (routes.ts), and a fetch
 *   past the cache would retire the token every other caller holds.
 * - A refused token is repaired here: when WeChat answers 40001 / 42001 / 40014 to a call made with a token this
 *   service handed out, the owner's token is replaced once while the refused one is still current (the rule of every
 *   call made with a token, src/tokens/with-token.ts: a normal fetch, refused-again remembered), and the call is sent
 *   again, once, with the owner's current token (WeChat refuses such calls before acting on them). A fleet of SDKs
 *   holding the refused token costs one replacement; a token never handed out here gets WeChat's answer as it is.
 *
 * Nothing of a call's target is logged: its query holds the token, and for some calls a secret.
 */
import { Readable } from 'node:stream'
import { Agent } from 'undici'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { CallerKeySecurity } from '../schemas/token.js'
import type { Metrics } from '../metrics.js'
import { originOf } from '../plugins/auth.js'
import { context } from '../request-context.js'
import { usable } from '../tokens/rules.js'
import type { TokenHolder } from '../tokens/with-token.js'
import { wechatErrorHandler, type Dialect } from './errors.js'
import type { HandedOut } from './handed-out.js'

/** The first segment of WeChat's API paths (Official Accounts, Mini Programs, WeCom): what is passed through. */
export const PASSTHROUGH_ROOTS = [
  'cgi-bin', 'sns', 'wxa', 'wxaapi', 'wxopen', 'datacube', 'card', 'customservice', 'merchant', 'shop', 'product',
  'channels', 'semantic', 'shakearound', 'bizwifi', 'tcb', 'union', 'intp', 'express', 'marketing', 'xpay'
] as const

/**
 * The endpoints answered from the cache, by path (lower case): never passed on, whatever the method or the spelling
 * (WeChat's answer to the other method, as WeChat gives it).
 */
const ANSWERED_HERE = new Map<string, [number, string]>([
  ['cgi-bin/token', [43001, 'require GET method']],
  ['cgi-bin/gettoken', [43001, 'require GET method']],
  ['cgi-bin/ticket/getticket', [43001, 'require GET method']],
  ['cgi-bin/get_jsapi_ticket', [43001, 'require GET method']],
  ['cgi-bin/ticket/get', [43001, 'require GET method']],
  ['cgi-bin/stable_token', [43002, 'require POST method']]
])

/** What a segment of WeChat's API paths holds. */
const SEGMENT = /^[A-Za-z0-9_\-.]{1,128}$/
/** What a query holds: visible ASCII only (Node's parser already refuses spaces and controls), and no fragment. */
const QUERY = /^[\x21-\x22\x24-\x7e]{0,8192}$/
/**
 * The errcodes that mean "this token is not (or no longer) valid": WeChat's and WeCom's. Not under /sns/, whose calls
 * take a user's OAuth token: an app's token sent there is refused as the wrong kind, and says nothing of the app's.
 */
const TOKEN_REFUSED = new Set([40001, 42001, 40014])
/** The longest answer read whole to see whether it refused the token (WeChat's refusals are ~150 bytes). */
const PEEK_BYTES = 4096
/**
 * The longest body kept to send again after a refusal (API calls' JSON bodies are a few KB); a larger one (an upload)
 * streams through once. Kept per call in flight, so it bounds memory by the connections.
 */
const REPLAY_BYTES = 64 * 1024
/** How long an answer may wait for a caller that does not read it before the call is cut off, at most. */
const STALL_MS = 10_000
/** The caller's headers that go upstream; everything else (its caller key, cookies, forwarding headers) stays here. */
const FORWARDED_REQUEST_HEADERS = ['content-type', 'content-length', 'accept']
/** WeChat's headers that are about the hop, not the answer. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'trailers',
  'transfer-encoding', 'upgrade', 'x-request-id'])

const DIALECT: Dialect = {
  own: {
    PASSTHROUGH_REFUSED: [40097, 'invalid args'],
    BODY_TOO_LARGE: [40006, 'invalid media size']
  },
  fields: {}
}

export interface PassthroughOptions {
  handedOut: HandedOut
  metrics: Metrics
  bodyLimitBytes: number
  timeoutMs: number
  connections: number
  connectTimeoutMs: number
  /** Whether WECHAT_COMPONENTS is set: then the component token, authorizer token and query_auth endpoints are answered here, never passed on. */
  components: boolean
  now?: (() => number) | undefined
}

type Upstream = 'wechat' | 'wecom'

/** Where a call goes, and who can repair its token when WeChat refuses it. */
interface Target {
  upstream: Upstream
  /** The origin and the path prefix of the upstream's base. */
  origin: string
  prefix: string
  /** The owner of the token the call carries, when this service handed it out. */
  owner?: { key: string, holder: TokenHolder | undefined, id: string, secret: string | undefined }
}

function baseOf (url: string): { origin: string, prefix: string } {
  const base = new URL(url)
  return { origin: base.origin, prefix: base.pathname.replace(/\/+$/, '') }
}

/** The upstream path of the call: the matched root and the captured rest, checked segment by segment. */
/**
 * With WECHAT_COMPONENTS: the component endpoints that fetch or exchange a credential, answered here (POST on WeChat's
 * own spelling, component-routes.ts, static routes the router prefers to this wildcard; and the GenAuth routes). What
 * reaches the pass-through under these paths (another method, another spelling) is refused: a component token fetched
 * past the cache would replace the one every caller holds; an authorizer token fetched past it would too, and a
 * refresh token WeChat rotated on that call would never be saved here; a code exchanged past it leaves no refresh
 * token here (the `authorized` event's exchange of the same code then fails).
 */
const COMPONENT_PATHS = new Set(['cgi-bin/component/api_component_token', 'cgi-bin/component/api_authorizer_token', 'cgi-bin/component/api_query_auth'])

function pathOf (root: string, rest: string, method: string, components: boolean): string {
  const segments = rest.split('/')
  if (!segments.every((segment) => SEGMENT.test(segment) && segment !== '.' && segment !== '..')) {
    throw new AppError('PASSTHROUGH_REFUSED', 'This path holds an empty, "." or ".." segment, or a character WeChat\'s API paths do not hold')
  }
  const path = `${root}/${rest}`
  if (components && COMPONENT_PATHS.has(path.toLowerCase())) {
    throw new AppError('PASSTHROUGH_REFUSED', `api unauthorized: ${method} /${path} is answered from the cache (POST on WeChat's own spelling ` +
      'of the path, or the GenAuth component routes), never passed on', { wechatErrcode: 48001 })
  }
  const here = ANSWERED_HERE.get(path.toLowerCase())
  if (here !== undefined) {
    throw new AppError('PASSTHROUGH_REFUSED', `${here[1]}: ${method} /${path} is answered from the cache with its own method, never passed on`,
      { wechatErrcode: here[0] })
  }
  return `/${path}`
}

/** The body of a call as it streams upstream: counted against the limit, and kept (when small) to be sent again. */
function countedBody (source: Readable, limit: number, kept: Buffer[] | null): AsyncIterable<Buffer> & { replayable: () => boolean } {
  let size = 0
  let done = false
  const iterable = (async function * () {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > limit) throw new AppError('BODY_TOO_LARGE', `The body is larger than WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES (${limit})`)
      if (kept !== null && size <= REPLAY_BYTES) kept.push(chunk)
      yield chunk
    }
    done = true
  })()
  return Object.assign(iterable, { replayable: () => done && kept !== null && size <= REPLAY_BYTES })
}

/**
 * Reads the start of an answer: the whole of it when it ends within PEEK_BYTES (then whether it refused the token can
 * be read), and a stream of all of it either way. A caller that reads none of the rest for `stallMs` is cut off, so
 * that one that stops reading does not hold a connection to WeChat for the whole timeout.
 */
async function peek (body: Readable, stallMs: number): Promise<{ whole: Buffer | undefined, stream: Readable }> {
  const iterator = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
  const head: Buffer[] = []
  let size = 0
  for (;;) {
    const next = await iterator.next()
    if (next.done === true) return { whole: Buffer.concat(head), stream: Readable.from(head) }
    head.push(next.value)
    size += next.value.length
    if (size > PEEK_BYTES) break
  }
  let stall: NodeJS.Timeout | undefined
  const rest = async function * () {
    let finished = false
    const waiting = async function * (chunk: Buffer) {
      stall = setTimeout(() => { out.destroy(new Error('the caller stopped reading the answer')) }, stallMs)
      try {
        yield chunk
      } finally {
        clearTimeout(stall)
      }
    }
    try {
      for (const chunk of head) yield * waiting(chunk)
      for (;;) {
        const next = await iterator.next()
        if (next.done === true) break
        yield * waiting(next.value)
      }
      finished = true
    } finally {
      clearTimeout(stall)
      if (!finished) body.destroy()
    }
  }
  const out = Readable.from(rest())
  return { whole: undefined, stream: out }
}

/** The raw query with the value of its access_token replaced, and nothing else of it touched (its encoding kept). */
function withToken (query: string, token: string): string {
  return query.split('&').map((pair) => {
    const name = pair.split('=', 1)[0]!
    return name === 'access_token' ? `access_token=${encodeURIComponent(token)}` : pair
  }).join('&')
}

/** WeChat's errcode in a whole answer, if it is a JSON object with one. */
function errcodeOf (whole: Buffer | undefined): number | undefined {
  if (whole === undefined || whole.length === 0 || whole[0] !== 0x7b) return undefined
  try {
    const errcode = (JSON.parse(whole.toString('utf8')) as { errcode?: unknown }).errcode
    return typeof errcode === 'number' ? errcode : undefined
  } catch {
    return undefined
  }
}

const passthrough: FastifyPluginAsync<PassthroughOptions> = async (app, opts) => {
  const { handedOut, metrics } = opts
  const now = opts.now ?? Date.now
  const agent = new Agent({
    connections: opts.connections,
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs
  })
  app.addHook('onClose', async () => { await agent.close() })
  const bases: Record<Upstream, { origin: string, prefix: string }> = {
    wechat: baseOf(app.wechat.baseUrl),
    wecom: baseOf(app.wecomClient.baseUrl)
  }

  // The body is not parsed: it streams upstream as it arrives, whatever its type (JSON, a multipart upload).
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => { done(null) })

  /** Where a call with this token goes, and its owner when the token was handed out here (the store unreadable: none). */
  async function targetOf (token: string | null): Promise<Target> {
    const subject = token === null ? undefined : await handedOut.subjectOf(token).catch(() => undefined)
    if (subject !== undefined) {
      const wecomOwner = app.wecomTokens.credential.ownerOf(subject)
      const application = wecomOwner === undefined ? undefined : app.wecomTokens.applicationByOwner(wecomOwner)
      if (wecomOwner !== undefined) {
        return {
          upstream: 'wecom',
          ...bases.wecom,
          owner: { key: wecomOwner, holder: application === undefined ? undefined : app.wecomTokens, id: application?.corpId ?? '', secret: application?.secret }
        }
      }
      const appId = app.tokens.credential.ownerOf(subject)
      if (appId !== undefined) {
        const secret = app.tokens.configuredSecret(appId)
        return { upstream: 'wechat', ...bases.wechat, owner: { key: appId, holder: secret === undefined ? undefined : app.tokens, id: appId, secret } }
      }
    }
    return { upstream: 'wechat', ...bases.wechat }
  }

  interface Sent { statusCode: number, headers: Record<string, string | string[] | undefined>, body: Readable }

  async function send (target: Target, method: 'GET' | 'POST', path: string, query: string, headers: Record<string, string>,
    body: AsyncIterable<Buffer> | Buffer | undefined, signal: AbortSignal): Promise<Sent> {
    const started = performance.now()
    try {
      const res = await agent.request({
        origin: target.origin,
        path: `${target.prefix}${path}${query === '' ? '' : `?${query}`}`,
        method,
        headers,
        ...(body === undefined ? {} : { body: Buffer.isBuffer(body) ? body : Readable.from(body) }),
        signal
      })
      return { statusCode: res.statusCode, headers: res.headers, body: res.body }
    } finally {
      metrics.passthroughSeconds.labels(target.upstream).observe((performance.now() - started) / 1000)
    }
  }

  /**
   * The token to send the call again with after WeChat refused `refused`: the owner's current one when another
   * already replaced it, else a replacement (once, within the rules of calls made with a token); undefined when
   * there is none to try.
   */
  async function repaired (owner: NonNullable<Target['owner']>, refused: string, request: FastifyRequest): Promise<{ token: string, replaced: boolean } | undefined> {
    const current = await app.store.get(owner.key)
    if (current !== null && current.accessToken !== refused && usable(current, current.secretFingerprint, 0, now())) {
      return { token: current.accessToken, replaced: false }
    }
    if (owner.holder === undefined || owner.secret === undefined) return undefined
    if (await owner.holder.refusedAgainRecently(owner.id, owner.secret)) return undefined
    const ctx = context(request, owner.id)
    const outcome = await owner.holder.refreshReported(owner.id, owner.secret, refused, ctx, { force: false })
    const token = outcome.token?.accessToken
    if (token !== undefined && token !== refused) return { token, replaced: true }
    // WeChat gave the refused token back (it is still WeChat's current one, refused for this call alone): fetching
    // again would give it again, so the refusal is remembered as for a replaced token refused again.
    if (token === refused) await owner.holder.rememberRefusedAgain(owner.id, owner.secret, 'WeChat gave the refused token back, on a passed-through call')
    return undefined
  }

  function answer (request: FastifyRequest, reply: FastifyReply, sent: Sent, stream: Readable): FastifyReply {
    for (const [name, value] of Object.entries(sent.headers)) {
      if (value !== undefined && !HOP_BY_HOP.has(name)) reply.header(name, value)
    }
    app.finish(request, reply, sent.statusCode, request.routeOptions.url)
    return reply.code(sent.statusCode).send(stream)
  }

  /**
   * Calls in flight per caller: a caller gets at most half the connections to an upstream, so that one whose calls
   * hang (or who stops reading their answers) leaves the other half to everyone else.
   */
  const inFlight = new Map<string, number>()
  const perCaller = Math.max(1, Math.floor(opts.connections / 2))

  /** Takes one of the caller's calls in flight, given back once the answer is sent or the connection closes. */
  function admit (request: FastifyRequest, reply: FastifyReply): void {
    const caller = originOf(request)
    const held = inFlight.get(caller) ?? 0
    if (held >= perCaller) {
      throw new AppError('RATE_LIMITED', `This caller has ${perCaller} passed-through calls in flight already (half of WECHAT_PASSTHROUGH_CONNECTIONS)`)
    }
    inFlight.set(caller, held + 1)
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      const left = (inFlight.get(caller) ?? 1) - 1
      if (left <= 0) inFlight.delete(caller)
      else inFlight.set(caller, left)
    }
    reply.raw.once('finish', release)
    reply.raw.once('close', release)
  }

  /** The caller went away (closed its connection) before its call was answered. */
  const gone = (request: FastifyRequest): boolean => request.raw.socket?.destroyed === true

  async function handle (request: FastifyRequest<{ Params: { '*': string } }>, reply: FastifyReply): Promise<FastifyReply> {
    const method = request.method === 'POST' ? 'POST' : 'GET'
    /** A refusal of the service's own, counted under the upstream the call would have gone to. */
    const refused = (upstream: Upstream, err: AppError): AppError => {
      metrics.passthroughCalls.labels(upstream, 'refused').inc()
      return err
    }
    const root = (request.routeOptions.url ?? '').split('/')[1] ?? ''
    let path: string
    try {
      path = pathOf(root, request.params['*'], method, opts.components)
    } catch (err) {
      throw err instanceof AppError ? refused('wechat', err) : err
    }
    const raw = request.raw.url ?? ''
    const mark = raw.indexOf('?')
    const query = mark === -1 ? '' : raw.slice(mark + 1)
    if (!QUERY.test(query)) throw refused('wechat', new AppError('PASSTHROUGH_REFUSED', 'The query holds a character WeChat\'s API queries do not hold'))
    const tokens = new URLSearchParams(query).getAll('access_token')
    // Which one WeChat reads is WeChat's business: the token whose owner is repaired must be the one WeChat refused.
    if (tokens.length > 1) throw refused('wechat', new AppError('PASSTHROUGH_REFUSED', 'The query holds more than one access_token'))
    const token = tokens[0] ?? null
    const target = await targetOf(token)
    try {
      admit(request, reply)
    } catch (err) {
      throw refused(target.upstream, err as AppError)
    }

    const headers: Record<string, string> = {}
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const value = request.headers[name]
      if (typeof value === 'string') headers[name] = value
    }
    let body: ReturnType<typeof countedBody> | undefined
    const kept: Buffer[] | null = target.owner === undefined ? null : []
    if (method === 'POST') {
      const declared = Number(request.headers['content-length'] ?? 0)
      if (declared > opts.bodyLimitBytes) {
        reply.header('connection', 'close')
        throw refused(target.upstream, new AppError('BODY_TOO_LARGE', `The body is larger than WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES (${opts.bodyLimitBytes})`))
      }
      body = countedBody(request.raw, opts.bodyLimitBytes, kept)
    } else {
      delete headers['content-length']
    }

    const abort = new AbortController()
    const timer = setTimeout(() => abort.abort(), opts.timeoutMs)
    const stallMs = Math.min(STALL_MS, opts.timeoutMs)
    const outcome = (value: 'answered' | 'failed' | 'abandoned'): void => { metrics.passthroughCalls.labels(target.upstream, value).inc() }
    /** Sends the call (again, with another query and the kept body) and reads the start of WeChat's answer. */
    async function exchange (sendQuery: string, sendBody: AsyncIterable<Buffer> | Buffer | undefined): Promise<Sent & { whole: Buffer | undefined, stream: Readable }> {
      const sent = await send(target, method, path, sendQuery, headers, sendBody, abort.signal)
      return { ...sent, ...await peek(sent.body, stallMs) }
    }
    let answered: Awaited<ReturnType<typeof exchange>>
    try {
      answered = await exchange(query, body)
    } catch (err) {
      clearTimeout(timer)
      if (err instanceof AppError) {
        reply.header('connection', 'close')
        throw refused(target.upstream, err)
      }
      if (gone(request)) {
        // Nobody to answer, and nothing said of WeChat: not a failure of WeChat's.
        outcome('abandoned')
        reply.hijack()
        return reply
      }
      outcome('failed')
      throw new AppError('WECHAT_UNAVAILABLE', 'WeChat could not be reached, its answer broke off, or it did not answer within WECHAT_PASSTHROUGH_TIMEOUT_MS',
        { cause: { code: String((err as { code?: unknown }).code ?? (err as Error).name) } })
    }
    outcome('answered')

    const owner = target.owner
    const refusedHere = (errcode: number | undefined): boolean => errcode !== undefined && TOKEN_REFUSED.has(errcode)
    // Under /sns/ calls take a user's OAuth token; under /cgi-bin/component/ a component's: their refusals say
    // nothing of the app's token.
    const repairable = owner !== undefined && token !== null && root !== 'sns' && !path.startsWith('/cgi-bin/component/')
    if (repairable && refusedHere(errcodeOf(answered.whole))) {
      const repairs = (value: 'replaced' | 'resent' | 'passed_on' | 'refused_again'): void => { metrics.passthroughRepairs.labels(target.upstream, value).inc() }
      const replay = body === undefined ? undefined : body.replayable() ? Buffer.concat(kept ?? []) : null
      let refusedToken = token
      let replaced = false
      let result: 'replaced' | 'resent' | 'passed_on' | 'refused_again' = 'passed_on'
      // At most twice: with the owner's current token, and, when that one is refused too, with its replacement.
      for (let round = 0; round < 2; round++) {
        if (replay === null) break
        const again = await repaired(owner, refusedToken, request).catch(() => undefined)
        if (again === undefined) break
        replaced ||= again.replaced
        const resent = await exchange(withToken(query, again.token), replay).catch(() => undefined)
        if (resent === undefined) break
        answered = resent
        if (!refusedHere(errcodeOf(resent.whole))) {
          result = replaced ? 'replaced' : 'resent'
          break
        }
        if (again.replaced) {
          result = 'refused_again'
          if (owner.holder !== undefined && owner.secret !== undefined) {
            await owner.holder.rememberRefusedAgain(owner.id, owner.secret, 'WeChat refused the replaced token too, on a passed-through call').catch(() => {})
          }
          break
        }
        refusedToken = again.token
      }
      repairs(result)
    }
    answered.stream.once('close', () => clearTimeout(timer))
    return answer(request, reply, answered, answered.stream)
  }

  for (const root of PASSTHROUGH_ROOTS) {
    for (const method of ['GET', 'POST'] as const) {
      app.route<{ Params: { '*': string } }>({
        method,
        url: `/${root}/*`,
        exposeHeadRoute: false,
        // Described once, under /cgi-bin/ (the other roots pass through alike).
        schema: root === 'cgi-bin'
          ? {
              summary: `Any other WeChat (or WeCom) API call made with ${method}, passed through (WECHAT_PASSTHROUGH)`,
              description: `GET and POST under /${PASSTHROUGH_ROOTS.join('/, /')}/ go to WECHAT_API_BASE (WECOM_API_BASE for a WeCom token ` +
                'handed out here) with their path, query and body, and WeChat\'s answer comes back as WeChat sent it. A call WeChat refuses ' +
                'for a token handed out here (40001, 42001, 40014) is sent again once with the owner\'s current token, replaced first while ' +
                'the refused one is current. The token and ticket endpoints are never passed on. Refusals here are {errcode, errmsg}.',
              operationId: method === 'GET' ? 'wechatPassthroughGet' : 'wechatPassthroughPost',
              tags: ['wechat-api'],
              security: CallerKeySecurity,
              response: { 200: { description: 'WeChat\'s answer, as WeChat sent it (JSON, an image, a file); a refusal here is {errcode, errmsg}' } }
            }
          : { hide: true },
        errorHandler: wechatErrorHandler(app as unknown as FastifyInstance, DIALECT),
        onRequest: app.limits.perCaller,
        handler: handle
      })
    }
  }
}

export default passthrough
