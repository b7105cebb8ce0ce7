/**
 * A local stand-in for WeChat's API: the classic and stable token endpoints, token invalidation, quotas, errcodes with
 * their rid suffix and injectable faults; the calls made with a token: JS-SDK / card tickets (getticket) and the
 * Mini Program phone number (codes a test mints); and Mini Program logins (jscode2session, for wx.login codes a test
 * mints), with the open data WeChat encrypts under a login's session key; and a few other API calls, with token
 * checks: the callback IPs, the menu, a customer-service message, media upload and download. Used by the tests and by
 * WECHAT_API_BASE=mock.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { StandIn, type MockFault } from './server.js'

export type MockEndpoint = 'token' | 'stable_token' | 'get_api_domain_ip' | 'clear_quota' | 'getticket' | 'getuserphonenumber' | 'jscode2session' |
  ApiCall

/** A few of WeChat's other API calls, answered with token checks (what passed-through calls are tested on). */
export type ApiCall = 'getcallbackip' | 'menu/get' | 'message/custom/send' | 'media/upload' | 'media/get'
const API_CALLS: readonly ApiCall[] = ['getcallbackip', 'menu/get', 'message/custom/send', 'media/upload', 'media/get']

/** A message WeChat accepted on message/custom/send: for which app, and what was sent. */
export interface DeliveredMessage { appId: string, body: Record<string, unknown> }

export type { MockFault } from './server.js'

export interface FaultRule {
  fault: MockFault
  appId?: string
  endpoint?: MockEndpoint
  /** How many matching requests it applies to; unlimited when absent. */
  times?: number
}

export interface MockWechatOptions {
  /** appId to secret of the apps it knows. */
  apps?: Record<string, string>
  /** Accept any well-formed appId, registering the secret of its first call. */
  autoRegister?: boolean
  tokenTtlSeconds?: number
  classicDailyQuota?: number
  stableDailyQuota?: number
  stableMinuteQuota?: number
  forceRefreshDailyLimit?: number
  forceRefreshMinIntervalSeconds?: number
  /** getticket calls per app per day; WeChat publishes none (45009 has been reported after about 10,000). */
  ticketDailyQuota?: number
  /**
   * The offline demo: also accept phone codes `demo-<6 to 15 digits>`, once each, for that number, and wx.login codes
   * `demo-<6 to 64 letters, digits, _ or ->` once each, whose session key is demoSessionKey(code).
   */
  demoPhoneCodes?: boolean
}

/** A wx.login code as minted: the user's session key (base64 of 16 bytes) and openid. */
export interface MintedLogin { code: string, sessionKey: string, openid: string, unionid?: string }

interface IssuedToken { appId: string, expiresAt: number }
interface PhoneCode { appId: string, purePhoneNumber: string, countryCode: string, expiresAt: number }
interface LoginCode { appId: string, sessionKey: string, openid: string, unionid?: string | undefined, expiresAt: number }
interface AppState {
  secret: string
  classic?: string
  stable?: string
  day: number
  classicCalls: number
  stableCalls: number
  forcedToday: number
  lastForcedAt: number
  minute: number
  stableCallsThisMinute: number
  clearQuotaCalls: number
  ticketCalls: number
  tickets: Partial<Record<string, string>>
}

const GRACE_MS = 5 * 60 * 1000
const PHONE_CODE_LIFE_MS = 5 * 60 * 1000
const LOGIN_CODE_LIFE_MS = 5 * 60 * 1000
const DEMO_LOGIN_CODE = /^demo-[A-Za-z0-9_-]{6,64}$/
const DAY_MS = 24 * 3600 * 1000
const BEIJING_OFFSET_MS = 8 * 3600 * 1000
export const APPID = /^wx[0-9a-fA-F]{16}$/

/** WeChat's errmsg for each errcode (before the rid suffix), as its API answers them. */
export const ERRMSG: Readonly<Record<number, string>> = {
  [-1]: 'system error',
  40001: 'invalid credential, access_token is invalid or not latest',
  40002: 'invalid grant_type',
  40013: 'invalid appid',
  40125: 'invalid appsecret',
  40029: 'invalid code',
  40163: 'code been used',
  41008: 'missing code',
  40097: 'invalid args',
  41001: 'access_token missing',
  41002: 'appid missing',
  41004: 'appsecret missing',
  42001: 'access_token expired',
  43002: 'require POST method',
  45009: 'reach max api daily quota limit',
  45011: 'api minute-quota reach limit mustslower retry next minute',
  47001: 'data format error',
  40007: 'invalid media_id',
  44001: 'empty media data',
  48006: 'forbid to clear quota because of reaching the limit'
}

export class MockWechat extends StandIn {
  private readonly apps = new Map<string, AppState>()
  private readonly tokens = new Map<string, IssuedToken>()
  private readonly tickets = new Map<string, IssuedToken>()
  private readonly phoneCodes = new Map<string, PhoneCode>()
  private readonly usedDemoCodes = new Set<string>()
  private readonly loginCodes = new Map<string, LoginCode>()
  private readonly usedLoginCodes = new Set<string>()
  private readonly everIssued: string[] = []
  private readonly everIssuedTickets: string[] = []
  private readonly rules: FaultRule[] = []
  private readonly issuedCount = new Map<string, number>()
  private readonly callCount = new Map<string, number>()
  readonly options: Required<Omit<MockWechatOptions, 'apps'>>
  /** Phone numbers answered and codes minted, for tests that search logs and stores for them. */
  readonly phonesAnswered: string[] = []
  readonly codesMinted: string[] = []
  /** Session keys, openids and unionids answered by jscode2session, for the same searches. */
  readonly sessionsAnswered: string[] = []
  /** Messages accepted on message/custom/send, in order. */
  readonly delivered: DeliveredMessage[] = []
  /** Media uploaded, by media_id: the whole body as it arrived. */
  private readonly media = new Map<string, Buffer>()
  /** The headers and the target (path and query, as sent) of the last request to each endpoint. */
  private readonly lastHeaders = new Map<MockEndpoint, IncomingMessage['headers']>()
  private readonly lastTargets = new Map<MockEndpoint, string>()

  constructor (options: MockWechatOptions = {}) {
    super()
    this.options = {
      autoRegister: options.autoRegister ?? false,
      tokenTtlSeconds: options.tokenTtlSeconds ?? 7200,
      classicDailyQuota: options.classicDailyQuota ?? 2000,
      stableDailyQuota: options.stableDailyQuota ?? 500000,
      stableMinuteQuota: options.stableMinuteQuota ?? 10000,
      forceRefreshDailyLimit: options.forceRefreshDailyLimit ?? 20,
      forceRefreshMinIntervalSeconds: options.forceRefreshMinIntervalSeconds ?? 30,
      ticketDailyQuota: options.ticketDailyQuota ?? 10000,
      demoPhoneCodes: options.demoPhoneCodes ?? false
    }
    for (const [appId, secret] of Object.entries(options.apps ?? {})) this.setApp(appId, secret)
  }

  setApp (appId: string, secret: string): void {
    const state = this.apps.get(appId)
    if (state) state.secret = secret
    else this.apps.set(appId, this.newState(secret))
  }

  inject (rule: FaultRule): void { this.rules.push({ ...rule }) }
  clearFaults (): void { this.rules.length = 0 }

  /** Tokens issued for an app (both endpoints, or one). */
  issued (appId: string, endpoint?: 'token' | 'stable_token'): number {
    if (endpoint) return this.issuedCount.get(`${endpoint}:${appId}`) ?? 0
    return (this.issuedCount.get(`token:${appId}`) ?? 0) + (this.issuedCount.get(`stable_token:${appId}`) ?? 0)
  }

  /** stable_token requests that asked for force_refresh, for an app. */
  forcedCalls (appId: string): number { return this.callCount.get(`forced:${appId}`) ?? 0 }

  /** Requests received, for an endpoint and optionally one app. */
  calls (endpoint: MockEndpoint, appId?: string): number {
    return this.callCount.get(appId ? `${endpoint}:${appId}` : endpoint) ?? 0
  }

  /** Every appid value any request carried, well-formed or not. */
  seenAppIds (): string[] {
    return [...new Set([...this.callCount.keys()].filter((key) => key.includes(':')).map((key) => key.slice(key.indexOf(':') + 1)))]
  }

  /** Every token it has issued, for tests that search logs and stores for them. */
  issuedTokens (): string[] { return [...this.everIssued] }

  /** The headers of the last request made to an endpoint. */
  headersOf (endpoint: MockEndpoint): IncomingMessage['headers'] | undefined { return this.lastHeaders.get(endpoint) }

  /** The target of the last request made to an endpoint, as it was sent (path and query). */
  targetOf (endpoint: MockEndpoint): string | undefined { return this.lastTargets.get(endpoint) }

  /** The bytes of an uploaded medium, as they arrived. */
  mediaBytes (mediaId: string): Buffer | undefined { return this.media.get(mediaId) }

  /** Stores a medium, as if uploaded (for downloads); returns its media_id. */
  putMedia (bytes: Buffer): string {
    const mediaId = createHash('sha256').update(bytes).digest('base64url').slice(0, 32)
    this.media.set(mediaId, bytes)
    return mediaId
  }

  /** Every ticket it has issued. */
  issuedTickets (): string[] { return [...this.everIssuedTickets] }

  /** What WeChat would say of a ticket used in a page now. */
  checkTicket (ticket: string): 'valid' | 'expired' | 'invalid' {
    const issued = this.tickets.get(ticket)
    if (!issued) return 'invalid'
    return issued.expiresAt > this.now() ? 'valid' : 'expired'
  }

  /**
   * Invalidates the app's tokens at once, as when another system fetched a new one (a forced stable_token, or a
   * classic fetch once its grace has passed).
   */
  revokeTokens (appId: string): void {
    for (const [token, issued] of this.tokens) if (issued.appId === appId) this.tokens.delete(token)
    const state = this.apps.get(appId)
    if (state) {
      delete state.classic
      delete state.stable
    }
  }

  /** A code as a getPhoneNumber button gives it: for this app, single use, valid for 5 minutes. */
  mintPhoneCode (appId: string, purePhoneNumber = '13800138000', countryCode = '86'): string {
    const code = randomBytes(32).toString('hex')
    this.phoneCodes.set(code, { appId, purePhoneNumber, countryCode, expiresAt: this.now() + PHONE_CODE_LIFE_MS })
    this.codesMinted.push(code)
    return code
  }

  /**
   * A code as wx.login gives it: for this app, single use (40163 after), valid for 5 minutes, with a new session key
   * for the user (openid random unless given).
   */
  mintLoginCode (appId: string, user: { openid?: string, unionid?: string } = {}): MintedLogin {
    const code = randomBytes(16).toString('hex')
    const sessionKey = randomBytes(16).toString('base64')
    const openid = user.openid ?? `o${randomBytes(14).toString('base64url')}`
    this.loginCodes.set(code, { appId, sessionKey, openid, unionid: user.unionid, expiresAt: this.now() + LOGIN_CODE_LIFE_MS })
    this.codesMinted.push(code)
    return { code, sessionKey, openid, ...(user.unionid ? { unionid: user.unionid } : {}) }
  }

  /**
   * Accepts a token issued elsewhere for `appId` (an authorizer_access_token the Open Platform stand-in issued), so
   * that the calls made with it (getticket, ...) work as with a token of its own, for `expiresInMs` on this clock. An
   * app it did not know is added without a secret: it has no token of its own to fetch.
   */
  adoptToken (appId: string, token: string, expiresInMs: number): void {
    if (!this.apps.has(appId)) this.apps.set(appId, this.newState(''))
    this.tokens.set(token, { appId, expiresAt: this.now() + expiresInMs })
  }

  /** Ends an adopted token: at once (then unknown: 40001), or within `withinMs` (then expired: 42001). */
  endAdoptedToken (token: string, withinMs = 0): void {
    const issued = this.tokens.get(token)
    if (!issued) return
    if (withinMs <= 0) this.tokens.delete(token)
    else issued.expiresAt = Math.min(issued.expiresAt, this.now() + withinMs)
  }

  /** What WeChat would say of a token used now. */
  check (token: string): 'valid' | 'expired' | 'invalid' {
    const issued = this.tokens.get(token)
    if (!issued) return 'invalid'
    return issued.expiresAt > this.now() ? 'valid' : 'expired'
  }

  private newState (secret: string): AppState {
    return {
      secret,
      day: this.day(),
      classicCalls: 0,
      stableCalls: 0,
      forcedToday: 0,
      lastForcedAt: -Infinity,
      minute: Math.floor(this.now() / 60000),
      stableCallsThisMinute: 0,
      clearQuotaCalls: 0,
      ticketCalls: 0,
      tickets: {}
    }
  }

  private day (): number { return Math.floor((this.now() + BEIJING_OFFSET_MS) / DAY_MS) }

  /**
   * The Open Platform's component calls (/cgi-bin/component/...) are answered by this stand-in (they are on WeChat's
   * API host too, as in production, so the service reaches both through WECHAT_API_BASE).
   */
  delegateComponents (openPlatform: StandIn): void { this.components = openPlatform }
  private components: StandIn | undefined

  protected override async respond (req: IncomingMessage, res: ServerResponse, rawBody: string, bytes: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://mock')
    if (this.components !== undefined && url.pathname.includes('/cgi-bin/component/')) {
      await this.components.serve(req, res, rawBody, bytes)
      return
    }
    const endpoint = endpointOf(url.pathname)
    if (!endpoint) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return
    }
    this.lastHeaders.set(endpoint, req.headers)
    this.lastTargets.set(endpoint, req.url ?? '')
    let body: Record<string, unknown> = {}
    let badJson = false
    if (req.method === 'POST' && rawBody.length > 0 && endpoint !== 'media/upload') {
      try {
        const parsed: unknown = JSON.parse(rawBody)
        if (typeof parsed === 'object' && parsed !== null) body = parsed as Record<string, unknown>
        else badJson = true
      } catch {
        badJson = true
      }
    }
    const appId = String(url.searchParams.get('appid') ?? body.appid ?? this.tokens.get(url.searchParams.get('access_token') ?? '')?.appId ?? '')
    this.count(this.callCount, endpoint)
    if (appId) this.count(this.callCount, `${endpoint}:${appId}`)
    if (endpoint === 'stable_token' && body.force_refresh === true) this.count(this.callCount, `forced:${appId}`)

    if (await this.fault(this.takeFault(endpoint, appId), req, res, (errcode, errmsg) => this.error(errcode, errmsg))) return

    if (endpoint === 'media/get' && this.download(res, url.searchParams)) return
    if (endpoint === 'media/upload') {
      this.send(res, this.upload(url.searchParams, req.method, bytes))
      return
    }
    this.send(res, this.answer(endpoint, req.method, url.searchParams, body, badJson))
  }

  /** media/get: the medium's bytes as a file, as WeChat sends it (false: an error to answer as JSON). */
  private download (res: ServerResponse, query: URLSearchParams): boolean {
    const state = this.tokenOwner(query.get('access_token'))
    const bytes = this.media.get(query.get('media_id') ?? '')
    if (!isState(state) || bytes === undefined) return false
    res.writeHead(200, {
      'content-type': 'image/jpeg',
      'content-disposition': `attachment; filename="${query.get('media_id') ?? ''}.jpg"`,
      'content-length': String(bytes.length),
      'cache-control': 'no-cache, must-revalidate'
    }).end(bytes)
    return true
  }

  /** media/upload: the body kept whole (the test reads it back), its media_id derived from it. */
  private upload (query: URLSearchParams, method: string | undefined, bytes: Buffer): Record<string, unknown> {
    if (method !== 'POST') return this.error(43002)
    const state = this.tokenOwner(query.get('access_token'))
    if (!isState(state)) return state
    if (bytes.length === 0) return this.error(44001)
    return { type: query.get('type') ?? 'image', media_id: this.putMedia(bytes), created_at: Math.floor(this.now() / 1000) }
  }

  /** An API call made with a token: the token checked first, as WeChat does, before anything is acted on. */
  private apiCall (endpoint: ApiCall, method: string | undefined, query: URLSearchParams, body: Record<string, unknown>, badJson: boolean): Record<string, unknown> {
    const state = this.tokenOwner(query.get('access_token'))
    if (!isState(state)) return state
    switch (endpoint) {
      case 'getcallbackip': return { ip_list: ['101.226.103.61', '101.226.103.62'] }
      case 'menu/get': return { menu: { button: [{ type: 'click', name: 'Today', key: 'V1001_TODAY' }] } }
      case 'media/get': return this.error(40007)
      case 'media/upload': return this.error(43002)
      case 'message/custom/send':
        if (method !== 'POST') return this.error(43002)
        if (badJson || typeof body.touser !== 'string') return this.error(47001)
        this.delivered.push({ appId: (this.tokens.get(query.get('access_token') as string) as IssuedToken).appId, body })
        return { errcode: 0, errmsg: 'ok' }
    }
  }

  private answer (endpoint: MockEndpoint, method: string | undefined, query: URLSearchParams,
    body: Record<string, unknown>, badJson: boolean): Record<string, unknown> {
    switch (endpoint) {
      case 'token': return this.classic(query)
      case 'stable_token':
        if (method !== 'POST') return this.error(43002)
        return badJson ? this.error(47001) : this.stable(body)
      case 'get_api_domain_ip': return this.domainIp(query.get('access_token'))
      case 'clear_quota': return this.clearQuota(query.get('access_token'), body.appid)
      case 'getticket': return this.getTicket(query.get('access_token'), query.get('type'))
      case 'getuserphonenumber':
        if (method !== 'POST') return this.error(43002)
        return badJson ? this.error(47001) : this.phoneNumber(query.get('access_token'), body.code)
      case 'jscode2session': return this.codeToSession(query)
      default: return this.apiCall(endpoint, method, query, body, badJson)
    }
  }

  private takeFault (endpoint: MockEndpoint, appId: string): MockFault | undefined {
    const index = this.rules.findIndex((rule) =>
      (rule.endpoint === undefined || rule.endpoint === endpoint) && (rule.appId === undefined || rule.appId === appId))
    const rule = this.rules[index]
    if (!rule) return undefined
    if (rule.times !== undefined && --rule.times <= 0) this.rules.splice(index, 1)
    return rule.fault
  }

  /** The app of a call made with appid and secret (the token endpoints with client_credential, jscode2session with authorization_code). */
  private authenticate (grantType: unknown, appId: unknown, secret: unknown, expectedGrant = 'client_credential'): AppState | Record<string, unknown> {
    if (grantType !== expectedGrant) return this.error(40002)
    if (typeof appId !== 'string' || appId === '') return this.error(41002)
    if (typeof secret !== 'string' || secret === '') return this.error(41004)
    let state = this.apps.get(appId)
    if (!state && this.options.autoRegister && APPID.test(appId)) {
      state = this.newState(secret)
      this.apps.set(appId, state)
    }
    if (!state) return this.error(40013)
    if (state.secret !== secret) return this.error(40125)
    this.rollCounters(state)
    return state
  }

  private rollCounters (state: AppState): void {
    const day = this.day()
    if (state.day !== day) {
      state.day = day
      state.classicCalls = 0
      state.stableCalls = 0
      state.forcedToday = 0
      state.ticketCalls = 0
    }
    const minute = Math.floor(this.now() / 60000)
    if (state.minute !== minute) {
      state.minute = minute
      state.stableCallsThisMinute = 0
    }
  }

  private classic (query: URLSearchParams): Record<string, unknown> {
    const appId = query.get('appid')
    const state = this.authenticate(query.get('grant_type'), appId, query.get('secret'))
    if (!isState(state)) return state
    if (state.classicCalls >= this.options.classicDailyQuota) return this.error(45009)
    state.classicCalls++
    this.retire(state.classic)
    state.classic = this.issue(appId as string, 'token')
    return { access_token: state.classic, expires_in: this.options.tokenTtlSeconds }
  }

  private stable (body: Record<string, unknown>): Record<string, unknown> {
    const appId = body.appid
    const state = this.authenticate(body.grant_type, appId, body.secret)
    if (!isState(state)) return state
    if (state.stableCallsThisMinute >= this.options.stableMinuteQuota) return this.error(45011)
    if (state.stableCalls >= this.options.stableDailyQuota) return this.error(45009)
    state.stableCalls++
    state.stableCallsThisMinute++
    const now = this.now()
    const current = state.stable ? this.tokens.get(state.stable) : undefined
    if (body.force_refresh === true) {
      const tooSoon = now - state.lastForcedAt < this.options.forceRefreshMinIntervalSeconds * 1000
      if (!tooSoon || !current || current.expiresAt <= now) {
        if (state.forcedToday >= this.options.forceRefreshDailyLimit) return this.error(45009)
        state.forcedToday++
        state.lastForcedAt = now
        if (state.stable) this.tokens.delete(state.stable)
        state.stable = this.issue(appId as string, 'stable_token')
      }
    } else if (!current || current.expiresAt - now <= GRACE_MS) {
      state.stable = this.issue(appId as string, 'stable_token')
    }
    const token = this.tokens.get(state.stable as string) as IssuedToken
    return { access_token: state.stable, expires_in: Math.floor((token.expiresAt - now) / 1000) }
  }

  private domainIp (token: string | null): Record<string, unknown> {
    if (!token) return this.error(41001)
    const verdict = this.check(token)
    if (verdict === 'invalid') return this.error(40001)
    if (verdict === 'expired') return this.error(42001)
    return { ip_list: ['101.226.103.0/25', '101.226.233.128/25'] }
  }

  /** The token's app, or the errcode WeChat answers for a missing (41001), unknown (40001) or expired (42001) token. */
  private tokenOwner (token: string | null): AppState | Record<string, unknown> {
    if (!token) return this.error(41001)
    const verdict = this.check(token)
    if (verdict === 'invalid') return this.error(40001)
    if (verdict === 'expired') return this.error(42001)
    const state = this.apps.get((this.tokens.get(token) as IssuedToken).appId)
    if (!state) return this.error(40001)
    this.rollCounters(state)
    return state
  }

  /** A new ticket at each call (the previous one stays usable for five more minutes, as a classic token). */
  private getTicket (token: string | null, type: string | null): Record<string, unknown> {
    const state = this.tokenOwner(token)
    if (!isState(state)) return state
    if (type !== 'jsapi' && type !== 'wx_card') return this.error(40097)
    if (state.ticketCalls >= this.options.ticketDailyQuota) return this.error(45009)
    state.ticketCalls++
    const appId = (this.tokens.get(token as string) as IssuedToken).appId
    const previous = state.tickets[type]
    const retired = previous ? this.tickets.get(previous) : undefined
    if (retired) retired.expiresAt = Math.min(retired.expiresAt, this.now() + GRACE_MS)
    const ticket = `${type === 'jsapi' ? 'sM4AOVdWfPE4DxkXGEs8V' : 'Ie5KqgFKz4iRMuq9Y0gqI'}${randomBytes(48).toString('base64url')}`
    this.tickets.set(ticket, { appId, expiresAt: this.now() + this.options.tokenTtlSeconds * 1000 })
    this.everIssuedTickets.push(ticket)
    state.tickets[type] = ticket
    return { errcode: 0, errmsg: 'ok', ticket, expires_in: this.options.tokenTtlSeconds }
  }

  /** The number behind a code minted for the token's app, once; 40029 for any other code. */
  private phoneNumber (token: string | null, code: unknown): Record<string, unknown> {
    const state = this.tokenOwner(token)
    if (!isState(state)) return state
    const appId = (this.tokens.get(token as string) as IssuedToken).appId
    let minted = typeof code === 'string' ? this.phoneCodes.get(code) : undefined
    if (typeof code === 'string') this.phoneCodes.delete(code)
    const demo = typeof code === 'string' && this.options.demoPhoneCodes ? /^demo-(\d{6,15})$/.exec(code) : null
    if (demo && !this.usedDemoCodes.has(code as string)) {
      this.usedDemoCodes.add(code as string)
      minted = { appId, purePhoneNumber: demo[1] as string, countryCode: '86', expiresAt: Infinity }
    }
    if (!minted || minted.appId !== appId || minted.expiresAt <= this.now()) return this.error(40029)
    const phoneNumber = minted.countryCode === '86' ? minted.purePhoneNumber : `+${minted.countryCode}${minted.purePhoneNumber}`
    this.phonesAnswered.push(minted.purePhoneNumber)
    return {
      errcode: 0,
      errmsg: 'ok',
      phone_info: {
        phoneNumber,
        purePhoneNumber: minted.purePhoneNumber,
        countryCode: minted.countryCode,
        watermark: { timestamp: Math.floor(this.now() / 1000), appid: appId }
      }
    }
  }

  /** A login code's session: once per code (40163 after), for its own app, within 5 minutes (40029 else). */
  private codeToSession (query: URLSearchParams): Record<string, unknown> {
    const appId = query.get('appid') as string
    const state = this.authenticate(query.get('grant_type'), appId, query.get('secret'), 'authorization_code')
    if (!isState(state)) return state
    const code = query.get('js_code')
    if (!code) return this.error(41008)
    if (this.usedLoginCodes.has(code)) return this.error(40163)
    let login = this.loginCodes.get(code)
    if (!login && this.options.demoPhoneCodes && DEMO_LOGIN_CODE.test(code)) {
      login = { appId, sessionKey: demoSessionKey(code), openid: `demo-openid-${code.slice(5)}`, expiresAt: Infinity }
    }
    if (!login || login.appId !== appId || login.expiresAt <= this.now()) return this.error(40029)
    this.loginCodes.delete(code)
    this.usedLoginCodes.add(code)
    this.sessionsAnswered.push(login.sessionKey, login.openid, ...(login.unionid ? [login.unionid] : []))
    return { session_key: login.sessionKey, openid: login.openid, ...(login.unionid ? { unionid: login.unionid } : {}) }
  }

  private clearQuota (token: string | null, appId: unknown): Record<string, unknown> {
    if (!token) return this.error(41001)
    if (this.check(token) !== 'valid') return this.error(40001)
    const state = typeof appId === 'string' ? this.apps.get(appId) : undefined
    if (!state) return this.error(40013)
    if (state.clearQuotaCalls >= 10) return this.error(48006)
    state.clearQuotaCalls++
    state.classicCalls = 0
    state.stableCalls = 0
    return { errcode: 0, errmsg: 'ok' }
  }

  /** The previous classic token stays usable for five more minutes, never past its own expiry. */
  private retire (token: string | undefined): void {
    const issued = token ? this.tokens.get(token) : undefined
    if (issued) issued.expiresAt = Math.min(issued.expiresAt, this.now() + GRACE_MS)
  }

  private issue (appId: string, endpoint: 'token' | 'stable_token'): string {
    const token = `${Math.floor(Math.random() * 90) + 10}_${randomBytes(96).toString('base64url')}`
    this.tokens.set(token, { appId, expiresAt: this.now() + this.options.tokenTtlSeconds * 1000 })
    this.everIssued.push(token)
    this.count(this.issuedCount, `${endpoint}:${appId}`)
    return token
  }

  private error (errcode: number, errmsg?: string): Record<string, unknown> {
    const rid = [0, 0, 0].map(() => randomBytes(4).toString('hex')).join('-')
    return { errcode, errmsg: `${errmsg ?? ERRMSG[errcode] ?? 'error'} rid: ${rid}` }
  }
}

function isState (value: AppState | Record<string, unknown>): value is AppState {
  return typeof (value as AppState).secret === 'string' && 'classicCalls' in value
}

/**
 * Open data as WeChat gives it to a Mini Program: the JSON of `payload` encrypted with AES-128-CBC under the user's
 * session key (base64 of 16 bytes), a random iv, PKCS#7 padding; both in base64.
 */
export function encryptOpenData (sessionKey: string, payload: unknown): { encryptedData: string, iv: string } {
  const iv = randomBytes(16)
  const cipher = createCipheriv('aes-128-cbc', Buffer.from(sessionKey, 'base64'), iv)
  const encrypted = Buffer.concat([cipher.update(JSON.stringify(payload), 'utf8'), cipher.final()])
  return { encryptedData: encrypted.toString('base64'), iv: iv.toString('base64') }
}

/** The session key of a demo wx.login code (`demo-…`): derived from the code, so the demo can encrypt data for it. */
export function demoSessionKey (code: string): string {
  return createHash('sha256').update(`wechat-token-cache demo session\0${code}`).digest().subarray(0, 16).toString('base64')
}

function endpointOf (pathname: string): MockEndpoint | undefined {
  const call = API_CALLS.find((name) => pathname.endsWith(`/cgi-bin/${name}`))
  if (call !== undefined) return call
  if (pathname.endsWith('/sns/jscode2session')) return 'jscode2session'
  if (pathname.endsWith('/cgi-bin/ticket/getticket')) return 'getticket'
  if (pathname.endsWith('/wxa/business/getuserphonenumber')) return 'getuserphonenumber'
  const match = /\/cgi-bin\/(token|stable_token|get_api_domain_ip|clear_quota)$/.exec(pathname)
  return match?.[1] as MockEndpoint | undefined
}
