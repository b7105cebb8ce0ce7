/**
 * A local stand-in for WeChat's side of an Open Platform third-party platform (a component): it pushes
 * component_verify_tickets and authorization events to the component's callback (encrypted and signed as WeChat does,
 * on a timer or when told), and answers the component endpoints (/cgi-bin/component/...) with WeChat's errcodes.
 * Authorizations are made by the test (authorize), as a merchant's admin would by scanning the authorization page.
 *
 * Choices where WeChat says little (each is where a test would look first if the service disagrees):
 * - Every push mints a new ticket valid 12 hours; earlier tickets stay valid until their own end (WeChat documents the
 *   12 hours and not that a push ends the previous ticket; a service that keeps the latest one is right either way).
 * - A new component_access_token retires the previous one after a grace (5 minutes), as for classic tokens; a retired
 *   token then answers 40001 ("not latest"), one past its 7200 s 42001. The same holds for an authorizer's token
 *   replaced by api_authorizer_token or api_query_auth.
 * - The refresh token stays the same across api_authorizer_token calls unless rotateRefreshTokens(true): then each call
 *   answers a new one and the one it was called with is gone (61023 when used again).
 * - A re-authorization (authorize on an authorizer still authorized) keeps its refresh token; after unauthorize, a new
 *   authorization gets a new one.
 * - The query's timestamp is the wall clock's (what a callback checks for freshness against its own clock); CreateTime
 *   and AuthorizationCodeExpiredTime are on this stand-in's clock, like the validity they describe.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { hash, randomBytes, randomInt } from 'node:crypto'
import { request } from 'undici'
import { componentCrypto, type ComponentCrypto } from '../open-platform/msg-crypto.js'
import { StandIn, type MockFault } from './server.js'
import { APPID, ERRMSG as WECHAT_ERRMSG, type MockWechat } from './wechat.js'

export type OpenPlatformEndpoint =
  | 'api_component_token' | 'api_create_preauthcode' | 'api_query_auth' | 'api_authorizer_token'
  | 'api_get_authorizer_list' | 'api_get_authorizer_info' | 'api_start_push_ticket'

const ENDPOINTS: readonly OpenPlatformEndpoint[] = [
  'api_component_token', 'api_create_preauthcode', 'api_query_auth', 'api_authorizer_token',
  'api_get_authorizer_list', 'api_get_authorizer_info', 'api_start_push_ticket'
]

/** A component as WeChat's console shows it. */
export interface MockComponent {
  appId: string
  appSecret: string
  token: string
  encodingAESKey: string
}

export interface OpenPlatformFaultRule {
  fault: MockFault
  componentAppId?: string
  endpoint?: OpenPlatformEndpoint
  /** How many matching requests it applies to; unlimited when absent. */
  times?: number
}

export interface MockOpenPlatformOptions {
  components?: MockComponent[]
  /** component_verify_ticket life (WeChat: 12 hours). */
  ticketTtlSeconds?: number
  /** component_access_token life (WeChat: 7200). */
  componentTokenTtlSeconds?: number
  /** authorizer_access_token life (WeChat: 7200). */
  authorizerTokenTtlSeconds?: number
  /** pre_auth_code life (WeChat: 1800). */
  preAuthCodeTtlSeconds?: number
  /** Authorization code life (10 minutes here). */
  authorizationCodeTtlSeconds?: number
  /** How long a replaced token keeps working. */
  graceSeconds?: number
  /** How long after api_start_push_ticket answers the ticket is pushed. */
  startPushDelayMs?: number
  /** How long a push waits for the callback's answer (WeChat: 5 s). */
  pushTimeoutMs?: number
  /**
   * The WeChat stand-in that plays the ordinary API: the authorizer tokens issued here are valid there (getticket,
   * ...) for as long as they are here, and end there when they end here.
   */
  wechat?: MockWechat
}

export type PushInfoType = 'component_verify_ticket' | 'authorized' | 'updateauthorized' | 'unauthorized'

/** A push and what the callback answered. */
export interface PushRecord {
  componentAppId: string
  infoType: PushInfoType
  authorizerAppId?: string
  /** The ticket pushed, for a ticket push. */
  ticket?: string
  /** The HTTP status and body (trimmed) the callback answered, when it answered. */
  status?: number
  answer?: string
  /** Why there is no answer: no callback set, or the request failed (the error's code or name). */
  error?: string
  /** Whether the callback answered `success` (status 200): what WeChat takes for received. */
  accepted: boolean
}

type Verdict = 'valid' | 'expired' | 'invalid'

interface Issued {
  componentAppId: string
  expiresAt: number
  /** A replaced token's end of grace; past it the token answers 40001. */
  retiredAt?: number
}
interface AuthorizerToken extends Issued { authorizerAppId: string }
interface AuthorizationCode { componentAppId: string, authorizerAppId: string, expiresAt: number, preAuthCode: string }
interface Authorizer {
  appId: string
  refreshToken: string
  /** Seconds since the epoch, on this stand-in's clock. */
  authTime: number
  token?: string
}
interface Component {
  config: MockComponent
  crypto: ComponentCrypto
  callback?: string
  latestTicket?: string
  token?: string
  preAuthCode?: string
  authorizers: Map<string, Authorizer>
  timer?: NodeJS.Timeout
}

/** WeChat's errmsg of the errcodes the component endpoints add. */
const ERRMSG: Readonly<Record<number, string>> = {
  ...WECHAT_ERRMSG,
  61003: 'component is not authorized by this account',
  61004: 'access clientip is not registered',
  61005: 'component ticket is expired',
  61006: 'component ticket is invalid',
  61009: 'code is invalid',
  61010: 'code is expired',
  61014: 'must use component token for component api',
  61023: 'refresh_token is invalid'
}

/** An answer, or the errcode to answer. */
type Answer = Record<string, unknown> | number

export class MockOpenPlatform extends StandIn {
  private readonly components = new Map<string, Component>()
  private readonly tickets = new Map<string, Issued>()
  private readonly componentTokens = new Map<string, Issued>()
  private readonly authorizerTokens = new Map<string, AuthorizerToken>()
  private readonly refreshTokens = new Map<string, { componentAppId: string, authorizerAppId: string }>()
  private readonly preAuthCodes = new Map<string, Issued>()
  private readonly authorizationCodes = new Map<string, AuthorizationCode>()
  private readonly ever = {
    tickets: [] as string[],
    componentTokens: [] as string[],
    authorizerTokens: [] as string[],
    refreshTokens: [] as string[],
    preAuthCodes: [] as string[],
    authorizationCodes: [] as string[]
  }

  private readonly pushLog: PushRecord[] = []
  private readonly inFlight = new Set<Promise<unknown>>()
  private readonly startPushTimers = new Set<NodeJS.Timeout>()
  private readonly rules: OpenPlatformFaultRule[] = []
  private readonly callCount = new Map<string, number>()
  private rotating = false
  readonly options: Required<Omit<MockOpenPlatformOptions, 'components' | 'wechat'>>
  private readonly wechat: MockWechat | undefined

  constructor (options: MockOpenPlatformOptions = {}) {
    super()
    this.options = {
      ticketTtlSeconds: options.ticketTtlSeconds ?? 12 * 3600,
      componentTokenTtlSeconds: options.componentTokenTtlSeconds ?? 7200,
      authorizerTokenTtlSeconds: options.authorizerTokenTtlSeconds ?? 7200,
      preAuthCodeTtlSeconds: options.preAuthCodeTtlSeconds ?? 1800,
      authorizationCodeTtlSeconds: options.authorizationCodeTtlSeconds ?? 600,
      graceSeconds: options.graceSeconds ?? 300,
      startPushDelayMs: options.startPushDelayMs ?? 200,
      pushTimeoutMs: options.pushTimeoutMs ?? 5000
    }
    this.wechat = options.wechat
    for (const component of options.components ?? []) this.setComponent(component)
  }

  /** Adds a component, or replaces its settings (its tickets, tokens and authorizers stay). */
  setComponent (config: MockComponent): void {
    if (!APPID.test(config.appId)) throw new Error('a component appId is wx and 16 hex digits')
    const crypto = componentCrypto(config)
    const known = this.components.get(config.appId)
    if (known) {
      known.config = { ...config }
      known.crypto = crypto
    } else {
      this.components.set(config.appId, { config: { ...config }, crypto, authorizers: new Map() })
    }
  }

  /** The URL the component's pushes go to (WeChat's console: 授权事件接收URL). */
  setCallback (componentAppId: string, url: string): void {
    this.component(componentAppId).callback = url
  }

  inject (rule: OpenPlatformFaultRule): void { this.rules.push({ ...rule }) }
  clearFaults (): void { this.rules.length = 0 }

  /** From now on each api_authorizer_token call answers a new refresh token and ends the one it was called with. */
  rotateRefreshTokens (on: boolean): void { this.rotating = on }

  /** Requests received, for an endpoint and optionally one component (as component_appid or the token named it). */
  calls (endpoint: OpenPlatformEndpoint, componentAppId?: string): number {
    return this.callCount.get(componentAppId ? `${endpoint}:${componentAppId}` : endpoint) ?? 0
  }

  /** The pushes made so far (optionally for one component), each with what the callback answered. */
  pushes (componentAppId?: string): PushRecord[] {
    return this.pushLog.filter((push) => componentAppId === undefined || push.componentAppId === componentAppId).map((push) => ({ ...push }))
  }

  // ---- Tickets ----

  /**
   * Pushes a new component_verify_ticket to the component's callback, as WeChat does every 10 minutes; the ticket is
   * valid from now whether or not the callback takes it. Resolves to whether the callback answered `success`.
   */
  async pushTicket (componentAppId: string): Promise<boolean> {
    const component = this.component(componentAppId)
    const ticket = `ticket@@@${randomBytes(48).toString('base64url')}`
    this.tickets.set(ticket, { componentAppId, expiresAt: this.now() + this.options.ticketTtlSeconds * 1000 })
    this.ever.tickets.push(ticket)
    component.latestTicket = ticket
    return await this.push(component, 'component_verify_ticket', { ComponentVerifyTicket: ticket }, { ticket })
  }

  /** Pushes a ticket every `everyMs` (WeChat: 10 minutes), the first one `everyMs` from now. */
  startPushing (componentAppId: string, everyMs = 10 * 60 * 1000): void {
    const component = this.component(componentAppId)
    clearInterval(component.timer)
    component.timer = setInterval(() => { this.track(this.pushTicket(componentAppId)) }, everyMs)
    component.timer.unref()
  }

  /** Stops the timed pushes of one component, or of all. */
  stopPushing (componentAppId?: string): void {
    for (const [appId, component] of this.components) {
      if (componentAppId !== undefined && appId !== componentAppId) continue
      clearInterval(component.timer)
      delete component.timer
    }
  }

  /** The ticket pushed last for a component. */
  latestTicket (componentAppId: string): string | undefined { return this.component(componentAppId).latestTicket }

  /** What WeChat would say of a ticket given to api_component_token now (for its own component). */
  checkTicket (ticket: string): Verdict { return this.verdict(this.tickets.get(ticket)) }

  // ---- Authorizations ----

  /**
   * An authorization of the component by an authorizer (a merchant's account), as made on WeChat's authorization page:
   * the authorization code (valid 10 minutes, once) that the redirect and the `authorized` event carry. The authorizer
   * gets a refresh token if it has none.
   */
  authorize (componentAppId: string, authorizerAppId: string): string {
    if (!APPID.test(authorizerAppId)) throw new Error('an authorizer appId is wx and 16 hex digits')
    const component = this.component(componentAppId)
    if (!component.authorizers.has(authorizerAppId)) {
      const refreshToken = this.newRefreshToken(componentAppId, authorizerAppId)
      component.authorizers.set(authorizerAppId, { appId: authorizerAppId, refreshToken, authTime: Math.floor(this.now() / 1000) })
    }
    const code = `queryauthcode@@@${randomBytes(48).toString('base64url')}`
    const preAuthCode = this.validPreAuthCode(component) ?? this.newPreAuthCode(componentAppId)
    this.authorizationCodes.set(code, {
      componentAppId, authorizerAppId, preAuthCode, expiresAt: this.now() + this.options.authorizationCodeTtlSeconds * 1000
    })
    this.ever.authorizationCodes.push(code)
    return code
  }

  /**
   * Sends an authorization event. `authorized` and `updateauthorized` carry the authorizer's newest unused
   * authorization code (one is made, with authorize, if it has none). `unauthorized` is only the message: unauthorize
   * also ends the authorization. Resolves to whether the callback answered `success`.
   */
  async pushEvent (componentAppId: string, infoType: 'authorized' | 'updateauthorized' | 'unauthorized', authorizerAppId: string): Promise<boolean> {
    const component = this.component(componentAppId)
    if (infoType === 'unauthorized') {
      return await this.push(component, infoType, { AuthorizerAppid: authorizerAppId }, { authorizerAppId })
    }
    let code = this.pendingCode(componentAppId, authorizerAppId)
    if (!code) {
      this.authorize(componentAppId, authorizerAppId)
      code = this.pendingCode(componentAppId, authorizerAppId) as [string, AuthorizationCode]
    }
    const [authorizationCode, issued] = code
    return await this.push(component, infoType, {
      AuthorizerAppid: authorizerAppId,
      AuthorizationCode: authorizationCode,
      AuthorizationCodeExpiredTime: String(Math.floor(issued.expiresAt / 1000)),
      PreAuthCode: issued.preAuthCode
    }, { authorizerAppId })
  }

  /**
   * Ends an authorization, as when the merchant cancels it: the refresh token, the authorizer's tokens and its unused
   * codes stop working, it leaves the authorizer list, and the `unauthorized` event is pushed.
   */
  async unauthorize (componentAppId: string, authorizerAppId: string): Promise<boolean> {
    const component = this.component(componentAppId)
    const authorizer = component.authorizers.get(authorizerAppId)
    if (authorizer) {
      this.refreshTokens.delete(authorizer.refreshToken)
      component.authorizers.delete(authorizerAppId)
    }
    this.revokeAuthorizerTokens(componentAppId, authorizerAppId)
    for (const [code, issued] of this.authorizationCodes) {
      if (issued.componentAppId === componentAppId && issued.authorizerAppId === authorizerAppId) this.authorizationCodes.delete(code)
    }
    return await this.pushEvent(componentAppId, 'unauthorized', authorizerAppId)
  }

  /** The authorizer's current refresh token. */
  refreshTokenOf (componentAppId: string, authorizerAppId: string): string | undefined {
    return this.component(componentAppId).authorizers.get(authorizerAppId)?.refreshToken
  }

  // ---- Tokens ----

  /** What WeChat would say of a component_access_token used now. */
  checkComponentToken (token: string): Verdict { return this.verdict(this.componentTokens.get(token)) }

  /** What WeChat would say of an authorizer_access_token used now (for the authorizer's ordinary API calls). */
  checkAuthorizerToken (token: string): Verdict { return this.verdict(this.authorizerTokens.get(token)) }

  /** The authorizer a valid authorizer_access_token is for. */
  authorizerOf (token: string): { componentAppId: string, authorizerAppId: string } | undefined {
    const issued = this.authorizerTokens.get(token)
    if (!issued || this.verdict(issued) !== 'valid') return undefined
    return { componentAppId: issued.componentAppId, authorizerAppId: issued.authorizerAppId }
  }

  /** Ends a component's tokens at once (40001 from now), as when another system fetched a new one past the grace. */
  revokeComponentTokens (componentAppId: string): void {
    for (const [token, issued] of this.componentTokens) {
      if (issued.componentAppId === componentAppId) this.componentTokens.delete(token)
    }
    delete this.component(componentAppId).token
  }

  /** Ends an authorizer's tokens at once (40001 from now); its refresh token stays. */
  revokeAuthorizerTokens (componentAppId: string, authorizerAppId: string): void {
    for (const [token, issued] of this.authorizerTokens) {
      if (issued.componentAppId !== componentAppId || issued.authorizerAppId !== authorizerAppId) continue
      this.authorizerTokens.delete(token)
      this.wechat?.endAdoptedToken(token)
    }
    const authorizer = this.component(componentAppId).authorizers.get(authorizerAppId)
    if (authorizer) delete authorizer.token
  }

  // ---- Everything issued, for tests that search logs, stores and metrics for it ----

  issuedTickets (): string[] { return [...this.ever.tickets] }
  issuedComponentTokens (): string[] { return [...this.ever.componentTokens] }
  issuedAuthorizerTokens (): string[] { return [...this.ever.authorizerTokens] }
  issuedRefreshTokens (): string[] { return [...this.ever.refreshTokens] }
  issuedPreAuthCodes (): string[] { return [...this.ever.preAuthCodes] }
  issuedAuthorizationCodes (): string[] { return [...this.ever.authorizationCodes] }

  /** All of the above, and each component's secret, token and EncodingAESKey. */
  secrets (): string[] {
    const settings = [...this.components.values()].flatMap(({ config }) => [config.appSecret, config.token, config.encodingAESKey])
    return [...settings, ...Object.values(this.ever).flat()]
  }

  /** Stops the timed and requested pushes, waits for those under way, and closes the server. */
  override async close (): Promise<void> {
    this.stopPushing()
    for (const timer of this.startPushTimers) clearTimeout(timer)
    this.startPushTimers.clear()
    await Promise.allSettled([...this.inFlight])
    await super.close()
  }

  // ---- The endpoints ----

  protected override async respond (req: IncomingMessage, res: ServerResponse, rawBody: string): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://mock')
    const endpoint = endpointOf(url.pathname)
    if (!endpoint) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return
    }
    const body = parseBody(rawBody)
    const token = url.searchParams.get('component_access_token')
    const componentAppId = stringOr(body?.component_appid) ?? this.componentTokens.get(token ?? '')?.componentAppId ?? ''
    this.count(this.callCount, endpoint)
    if (componentAppId) this.count(this.callCount, `${endpoint}:${componentAppId}`)

    const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '')
    if (await this.fault(this.takeFault(endpoint, componentAppId), req, res, (errcode, errmsg) => this.error(errcode, ip, errmsg))) return

    let answer: Answer
    if (req.method !== 'POST') answer = 43002
    else if (body === undefined) answer = 47001
    else answer = this.answer(endpoint, token, body)
    this.send(res, typeof answer === 'number' ? this.error(answer, ip) : answer)
  }

  private answer (endpoint: OpenPlatformEndpoint, token: string | null, body: Record<string, unknown>): Answer {
    switch (endpoint) {
      case 'api_component_token': return this.componentToken(body)
      case 'api_start_push_ticket': return this.startPushTicket(body)
    }
    const component = this.tokenOwner(token, body.component_appid)
    if (typeof component === 'number') return component
    switch (endpoint) {
      case 'api_create_preauthcode': return this.preAuthCode(component)
      case 'api_query_auth': return this.queryAuth(component, body.authorization_code)
      case 'api_authorizer_token': return this.authorizerToken(component, body.authorizer_appid, body.authorizer_refresh_token)
      case 'api_get_authorizer_list': return this.authorizerList(component, body.offset, body.count)
      case 'api_get_authorizer_info': return this.authorizerInfo(component, body.authorizer_appid)
    }
  }

  /** The component a call made with its appid and secret is for (api_component_token, api_start_push_ticket). */
  private authenticate (appId: unknown, secret: unknown): Component | number {
    if (typeof appId !== 'string' || appId === '') return 41002
    if (typeof secret !== 'string' || secret === '') return 41004
    const component = this.components.get(appId)
    if (!component) return 40013
    if (component.config.appSecret !== secret) return 40125
    return component
  }

  /** A ticket that is not this component's (or none) is invalid, 61006; one of its own past its 12 hours, 61005. */
  private componentToken (body: Record<string, unknown>): Answer {
    const component = this.authenticate(body.component_appid, body.component_appsecret)
    if (typeof component === 'number') return component
    const ticket = this.tickets.get(stringOr(body.component_verify_ticket) ?? '')
    if (!ticket || ticket.componentAppId !== component.config.appId) return 61006
    if (ticket.expiresAt <= this.now()) return 61005
    this.retire(component.token ? this.componentTokens.get(component.token) : undefined)
    const token = tokenText()
    this.componentTokens.set(token, { componentAppId: component.config.appId, expiresAt: this.now() + this.options.componentTokenTtlSeconds * 1000 })
    this.ever.componentTokens.push(token)
    component.token = token
    return { component_access_token: token, expires_in: this.options.componentTokenTtlSeconds }
  }

  /** Answers, then pushes a ticket a little later (WeChat: "shortly"). */
  private startPushTicket (body: Record<string, unknown>): Answer {
    const component = this.authenticate(body.component_appid, body.component_secret)
    if (typeof component === 'number') return component
    const timer = setTimeout(() => {
      this.startPushTimers.delete(timer)
      this.track(this.pushTicket(component.config.appId))
    }, this.options.startPushDelayMs)
    this.startPushTimers.add(timer)
    return { errcode: 0, errmsg: 'ok' }
  }

  /**
   * The component of a component_access_token: 41001 missing, 40001 unknown or replaced, 42001 expired, 61014 an
   * authorizer's token; and the body's component_appid must be the token's (40013 otherwise).
   */
  private tokenOwner (token: string | null, componentAppId: unknown): Component | number {
    if (!token) return 41001
    if (this.authorizerTokens.has(token)) return 61014
    const issued = this.componentTokens.get(token)
    const verdict = this.verdict(issued)
    if (verdict === 'invalid') return 40001
    if (verdict === 'expired') return 42001
    const component = this.components.get((issued as Issued).componentAppId)
    if (!component) return 40001
    if (componentAppId !== component.config.appId) return 40013
    return component
  }

  private preAuthCode (component: Component): Answer {
    const code = this.newPreAuthCode(component.config.appId)
    return { pre_auth_code: code, expires_in: this.options.preAuthCodeTtlSeconds }
  }

  /** An authorization code, once (61009 after, or for another component's code; 61010 past its 10 minutes). */
  private queryAuth (component: Component, code: unknown): Answer {
    const issued = this.authorizationCodes.get(stringOr(code) ?? '')
    if (!issued || issued.componentAppId !== component.config.appId) return 61009
    if (issued.expiresAt <= this.now()) return 61010
    this.authorizationCodes.delete(code as string)
    const authorizer = component.authorizers.get(issued.authorizerAppId)
    if (!authorizer) return 61009
    const token = this.newAuthorizerToken(component, authorizer)
    return {
      authorization_info: {
        authorizer_appid: authorizer.appId,
        authorizer_access_token: token,
        expires_in: this.options.authorizerTokenTtlSeconds,
        authorizer_refresh_token: authorizer.refreshToken,
        func_info: []
      }
    }
  }

  /** A new authorizer token for a refresh token of this component and authorizer; 61023 for any other. */
  private authorizerToken (component: Component, authorizerAppId: unknown, refreshToken: unknown): Answer {
    const owner = this.refreshTokens.get(stringOr(refreshToken) ?? '')
    const authorizer = component.authorizers.get(stringOr(authorizerAppId) ?? '')
    if (!owner || !authorizer || owner.componentAppId !== component.config.appId || owner.authorizerAppId !== authorizer.appId) return 61023
    if (this.rotating) {
      this.refreshTokens.delete(authorizer.refreshToken)
      authorizer.refreshToken = this.newRefreshToken(component.config.appId, authorizer.appId)
    }
    const token = this.newAuthorizerToken(component, authorizer)
    return {
      authorizer_access_token: token,
      expires_in: this.options.authorizerTokenTtlSeconds,
      authorizer_refresh_token: authorizer.refreshToken
    }
  }

  /** The authorizers in the order they authorized, `count` (1 to 500) from `offset`; 40097 for other values. */
  private authorizerList (component: Component, offset: unknown, count: unknown): Answer {
    if (!Number.isSafeInteger(offset) || (offset as number) < 0) return 40097
    if (!Number.isSafeInteger(count) || (count as number) < 1 || (count as number) > 500) return 40097
    const all = [...component.authorizers.values()]
    const page = all.slice(offset as number, (offset as number) + (count as number))
    return {
      total_count: all.length,
      list: page.map((authorizer) => ({ authorizer_appid: authorizer.appId, refresh_token: authorizer.refreshToken, auth_time: authorizer.authTime }))
    }
  }

  /** An authorizer's account and authorization; 61003 when it has not authorized the component. */
  private authorizerInfo (component: Component, authorizerAppId: unknown): Answer {
    const authorizer = component.authorizers.get(stringOr(authorizerAppId) ?? '')
    if (!authorizer) return 61003
    return {
      authorizer_info: {
        nick_name: `stand-in ${authorizer.appId}`,
        user_name: `gh_${authorizer.appId.slice(2, 14)}`,
        service_type_info: { id: 2 },
        verify_type_info: { id: 0 }
      },
      authorization_info: {
        authorizer_appid: authorizer.appId,
        authorizer_refresh_token: authorizer.refreshToken,
        func_info: []
      }
    }
  }

  // ---- Pushing ----

  /** Encrypts and signs the message as WeChat does, posts it, and records what the callback answered. */
  private async push (component: Component, infoType: PushInfoType, fields: Record<string, string>,
    about: { ticket?: string, authorizerAppId?: string }): Promise<boolean> {
    const record: PushRecord = { componentAppId: component.config.appId, infoType, ...about, accepted: false }
    this.pushLog.push(record)
    if (component.callback === undefined) {
      record.error = 'no callback'
      return false
    }
    const message = '<xml>' +
      `<AppId><![CDATA[${component.config.appId}]]></AppId>` +
      `<CreateTime>${Math.floor(this.now() / 1000)}</CreateTime>` +
      `<InfoType><![CDATA[${infoType}]]></InfoType>` +
      Object.entries(fields).map(([name, value]) => /^\d+$/.test(value) ? `<${name}>${value}</${name}>` : `<${name}><![CDATA[${value}]]></${name}>`).join('') +
      '</xml>'
    const encrypted = component.crypto.encrypt(message)
    const timestamp = String(Math.floor(Date.now() / 1000))
    const nonce = String(randomInt(100_000_000, 2_000_000_000))
    const query = new URLSearchParams({
      signature: hash('sha1', [component.config.token, timestamp, nonce].sort().join(''), 'hex'),
      timestamp,
      nonce,
      encrypt_type: 'aes',
      msg_signature: component.crypto.signature(timestamp, nonce, encrypted)
    })
    const target = new URL(component.callback)
    for (const [name, value] of query) target.searchParams.set(name, value)
    const body = `<xml><ToUserName><![CDATA[${component.config.appId}]]></ToUserName><Encrypt><![CDATA[${encrypted}]]></Encrypt></xml>`
    try {
      const res = await request(target, {
        method: 'POST',
        headers: { 'content-type': 'text/xml' },
        body,
        headersTimeout: this.options.pushTimeoutMs,
        bodyTimeout: this.options.pushTimeoutMs
      })
      record.status = res.statusCode
      record.answer = (await res.body.text()).trim()
      record.accepted = res.statusCode === 200 && record.answer === 'success'
    } catch (error) {
      record.error = (error as { code?: string }).code ?? (error as Error).name
    }
    return record.accepted
  }

  /** Keeps a push started by a timer until it ends, so that close waits for it. */
  private track (push: Promise<unknown>): void {
    const tracked = push.catch(() => undefined).finally(() => this.inFlight.delete(tracked))
    this.inFlight.add(tracked)
  }

  // ---- Bookkeeping ----

  private component (componentAppId: string): Component {
    const component = this.components.get(componentAppId)
    if (!component) throw new Error(`no component ${componentAppId}: add it with setComponent`)
    return component
  }

  private verdict (issued: Issued | undefined): Verdict {
    if (!issued) return 'invalid'
    const now = this.now()
    if (issued.retiredAt !== undefined && issued.retiredAt <= now) return 'invalid'
    return issued.expiresAt > now ? 'valid' : 'expired'
  }

  /** A replaced token keeps working for the grace, never past its own end. */
  private retire (issued: Issued | undefined): void {
    if (issued && issued.retiredAt === undefined) issued.retiredAt = this.now() + this.options.graceSeconds * 1000
  }

  private newRefreshToken (componentAppId: string, authorizerAppId: string): string {
    const token = `refreshtoken@@@${randomBytes(32).toString('base64url')}`
    this.refreshTokens.set(token, { componentAppId, authorizerAppId })
    this.ever.refreshTokens.push(token)
    return token
  }

  private newPreAuthCode (componentAppId: string): string {
    const code = `preauthcode@@@${randomBytes(32).toString('base64url')}`
    this.preAuthCodes.set(code, { componentAppId, expiresAt: this.now() + this.options.preAuthCodeTtlSeconds * 1000 })
    this.ever.preAuthCodes.push(code)
    this.component(componentAppId).preAuthCode = code
    return code
  }

  private validPreAuthCode (component: Component): string | undefined {
    const code = component.preAuthCode
    return code && this.verdict(this.preAuthCodes.get(code)) === 'valid' ? code : undefined
  }

  /** The authorizer's newest authorization code not yet used nor expired. */
  private pendingCode (componentAppId: string, authorizerAppId: string): [string, AuthorizationCode] | undefined {
    let found: [string, AuthorizationCode] | undefined
    for (const entry of this.authorizationCodes) {
      const [, issued] = entry
      if (issued.componentAppId === componentAppId && issued.authorizerAppId === authorizerAppId && issued.expiresAt > this.now()) found = entry
    }
    return found
  }

  /** A new token for the authorizer; the previous one is retired after the grace. */
  private newAuthorizerToken (component: Component, authorizer: Authorizer): string {
    const previous = authorizer.token
    const retired = previous ? this.authorizerTokens.get(previous) : undefined
    this.retire(retired)
    if (previous && retired?.retiredAt !== undefined) this.wechat?.endAdoptedToken(previous, retired.retiredAt - this.now())
    const token = tokenText()
    const lifeMs = this.options.authorizerTokenTtlSeconds * 1000
    this.authorizerTokens.set(token, { componentAppId: component.config.appId, authorizerAppId: authorizer.appId, expiresAt: this.now() + lifeMs })
    this.ever.authorizerTokens.push(token)
    this.wechat?.adoptToken(authorizer.appId, token, lifeMs)
    authorizer.token = token
    return token
  }

  private takeFault (endpoint: OpenPlatformEndpoint, componentAppId: string): MockFault | undefined {
    const index = this.rules.findIndex((rule) =>
      (rule.endpoint === undefined || rule.endpoint === endpoint) && (rule.componentAppId === undefined || rule.componentAppId === componentAppId))
    const rule = this.rules[index]
    if (!rule) return undefined
    if (rule.times !== undefined && --rule.times <= 0) this.rules.splice(index, 1)
    return rule.fault
  }

  /** WeChat's errmsg with its rid; 61004 names the caller's address, as WeChat does. */
  private error (errcode: number, ip: string, errmsg?: string): Record<string, unknown> {
    const rid = [0, 0, 0].map(() => randomBytes(4).toString('hex')).join('-')
    const text = errmsg ?? ERRMSG[errcode] ?? 'error'
    return { errcode, errmsg: `${text}${errcode === 61004 && errmsg === undefined ? ` requestIP: ${ip}` : ''} rid: ${rid}` }
  }
}

/** A token as WeChat's look: a two-digit prefix, an underscore, base64url. */
function tokenText (): string {
  return `${randomInt(10, 100)}_${randomBytes(96).toString('base64url')}`
}

function stringOr (value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}

/** The JSON object a POST carries; an empty body is an empty object, anything else undefined. */
function parseBody (rawBody: string): Record<string, unknown> | undefined {
  if (rawBody.length === 0) return {}
  try {
    const parsed: unknown = JSON.parse(rawBody)
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? parsed as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

function endpointOf (pathname: string): OpenPlatformEndpoint | undefined {
  const match = /\/cgi-bin\/component\/([a-z_]+)$/.exec(pathname)
  return ENDPOINTS.find((endpoint) => endpoint === match?.[1])
}
