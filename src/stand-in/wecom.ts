/**
 * A local stand-in for WeCom's (企业微信) API: application tokens (gettoken, one token per application of a corp, the
 * same one within its lifetime, ended early on demand), the corp's jsapi ticket and the application's agent_config
 * ticket with their hourly limits, a member's details (user/get, with the token checks of every WeCom API call), WeCom's
 * errcodes with their hint suffix, and the faults of the WeChat stand-in.
 * Its own server on its own port; used by the tests.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { randomBytes } from 'node:crypto'
import { StandIn, type MockFault } from './server.js'

export type WecomEndpoint = 'gettoken' | 'get_jsapi_ticket' | 'ticket/get' | 'user/get'

export interface WecomFaultRule {
  fault: MockFault
  corpId?: string
  /** The application, as its agentId; gettoken knows it by the secret, the ticket calls by the token. */
  agentId?: string
  endpoint?: WecomEndpoint
  /** How many matching requests it applies to; unlimited when absent. */
  times?: number
}

export interface MockWecomOptions {
  /** corpId to its applications: agentId to the application's secret. */
  corps?: Record<string, Record<string, string>>
  tokenTtlSeconds?: number
  ticketTtlSeconds?: number
  /** get_jsapi_ticket answers per corp in any hour (WeCom: 400). */
  corpTicketHourlyLimit?: number
  /** ticket/get?type=agent_config answers per application in any hour (WeCom: 100). */
  agentTicketHourlyLimit?: number
}

/** How a token ended early, and so what WeCom answers when it is used: 40014 invalid, 42001 expired. */
export type EarlyEnd = 40014 | 42001

interface IssuedToken { corpId: string, agentId: string, expiresAt: number, endedAs?: EarlyEnd }
interface IssuedTicket { corpId: string, agentId?: string, expiresAt: number }
interface Application {
  agentId: string
  secret: string
  token?: string
  ticket?: string
  /** When its agent_config tickets were answered, within the last hour. */
  ticketCalls: number[]
}
interface Corp {
  corpId: string
  applications: Map<string, Application>
  ticket?: string
  /** When its jsapi tickets were answered, within the last hour. */
  ticketCalls: number[]
}

const HOUR_MS = 3600 * 1000

const ERRMSG: Record<number, string> = {
  [-1]: 'system busy',
  40001: 'invalid credential',
  40013: 'invalid corpid',
  40014: 'invalid access_token',
  40056: 'invalid agentid',
  40058: 'invalid parameter',
  41001: 'access_token missing',
  41002: 'corpid missing',
  41004: 'corpsecret missing',
  42001: 'access_token expired',
  45009: 'api freq out of limit',
  45033: 'api concurrent out of limit',
  60020: 'not allow to access from your ip',
  60111: 'invalid string value `userid`',
  301002: 'not allow operate another agent with this accesstoken'
}

export class MockWecom extends StandIn {
  private readonly corps = new Map<string, Corp>()
  private readonly tokens = new Map<string, IssuedToken>()
  private readonly tickets = new Map<string, IssuedTicket>()
  private readonly everIssued: string[] = []
  private readonly everIssuedTickets: string[] = []
  private readonly rules: WecomFaultRule[] = []
  private readonly issuedCount = new Map<string, number>()
  private readonly callCount = new Map<string, number>()
  readonly options: Required<Omit<MockWecomOptions, 'corps'>>

  constructor (options: MockWecomOptions = {}) {
    super()
    this.options = {
      tokenTtlSeconds: options.tokenTtlSeconds ?? 7200,
      ticketTtlSeconds: options.ticketTtlSeconds ?? 7200,
      corpTicketHourlyLimit: options.corpTicketHourlyLimit ?? 400,
      agentTicketHourlyLimit: options.agentTicketHourlyLimit ?? 100
    }
    for (const [corpId, applications] of Object.entries(options.corps ?? {})) {
      for (const [agentId, secret] of Object.entries(applications)) this.setApplication(corpId, agentId, secret)
    }
  }

  /** Adds an application to a corp, or gives it a new secret (its token stays valid, as in WeCom). */
  setApplication (corpId: string, agentId: string, secret: string): void {
    let corp = this.corps.get(corpId)
    if (!corp) {
      corp = { corpId, applications: new Map(), ticketCalls: [] }
      this.corps.set(corpId, corp)
    }
    for (const other of corp.applications.values()) {
      if (other.agentId !== agentId && other.secret === secret) throw new Error('each application of a corp has its own secret')
    }
    const application = corp.applications.get(agentId)
    if (application) application.secret = secret
    else corp.applications.set(agentId, { agentId, secret, ticketCalls: [] })
  }

  inject (rule: WecomFaultRule): void { this.rules.push({ ...rule }) }
  clearFaults (): void { this.rules.length = 0 }

  /** Tokens issued for an application. */
  issued (corpId: string, agentId: string): number { return this.issuedCount.get(`${corpId}:${agentId}`) ?? 0 }

  /** Requests received, for an endpoint and optionally one corp (as the corpid or the token named it). */
  calls (endpoint: WecomEndpoint, corpId?: string): number {
    return this.callCount.get(corpId ? `${endpoint}:${corpId}` : endpoint) ?? 0
  }

  /** Every token it has issued, for tests that search logs and stores for them. */
  issuedTokens (): string[] { return [...this.everIssued] }

  /** Every ticket it has issued, corp and application tickets. */
  issuedTickets (): string[] { return [...this.everIssuedTickets] }

  /**
   * Ends an application's current token before its time, as WeCom may: using it then answers `as` (42001 expired by
   * default, or 40014 invalid), and the next gettoken issues a new one.
   */
  endToken (corpId: string, agentId: string, as: EarlyEnd = 42001): void {
    const application = this.corps.get(corpId)?.applications.get(agentId)
    const issued = application?.token ? this.tokens.get(application.token) : undefined
    if (issued) issued.endedAs = as
    if (application) delete application.token
  }

  /** What WeCom would say of a token used now. */
  check (token: string): 'valid' | 'expired' | 'invalid' {
    const issued = this.tokens.get(token)
    if (!issued || issued.endedAs === 40014) return 'invalid'
    return issued.expiresAt > this.now() && issued.endedAs === undefined ? 'valid' : 'expired'
  }

  /** What WeCom would say of a ticket used in a page now. */
  checkTicket (ticket: string): 'valid' | 'expired' | 'invalid' {
    const issued = this.tickets.get(ticket)
    if (!issued) return 'invalid'
    return issued.expiresAt > this.now() ? 'valid' : 'expired'
  }

  protected override async respond (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://mock')
    const endpoint = endpointOf(url.pathname)
    if (!endpoint) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return
    }
    const query = url.searchParams
    const owner = endpoint === 'gettoken' ? this.applicationOf(query.get('corpid'), query.get('corpsecret')) : this.tokens.get(query.get('access_token') ?? '')
    const corpId = owner?.corpId ?? (endpoint === 'gettoken' ? query.get('corpid') ?? '' : '')
    this.count(this.callCount, endpoint)
    if (corpId) this.count(this.callCount, `${endpoint}:${corpId}`)

    const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '')
    if (await this.fault(this.takeFault(endpoint, corpId, owner?.agentId), req, res, (errcode, errmsg) => this.error(errcode, ip, errmsg))) return

    const answer = this.answer(endpoint, query)
    this.send(res, typeof answer === 'number' ? this.error(answer, ip) : answer)
  }

  /** The answer, or the errcode to answer. */
  private answer (endpoint: WecomEndpoint, query: URLSearchParams): Record<string, unknown> | number {
    switch (endpoint) {
      case 'gettoken': return this.getToken(query.get('corpid'), query.get('corpsecret'))
      case 'get_jsapi_ticket': return this.corpTicket(query.get('access_token'))
      case 'ticket/get': return this.agentTicket(query.get('access_token'), query.get('type'))
      case 'user/get': return this.member(query.get('access_token'), query.get('userid'))
    }
  }

  private applicationOf (corpId: string | null, secret: string | null): { corpId: string, agentId: string } | undefined {
    if (!corpId || !secret) return undefined
    for (const application of this.corps.get(corpId)?.applications.values() ?? []) {
      if (application.secret === secret) return { corpId, agentId: application.agentId }
    }
    return undefined
  }

  private takeFault (endpoint: WecomEndpoint, corpId: string, agentId: string | undefined): MockFault | undefined {
    const index = this.rules.findIndex((rule) =>
      (rule.endpoint === undefined || rule.endpoint === endpoint) &&
      (rule.corpId === undefined || rule.corpId === corpId) &&
      (rule.agentId === undefined || rule.agentId === agentId))
    const rule = this.rules[index]
    if (!rule) return undefined
    if (rule.times !== undefined && --rule.times <= 0) this.rules.splice(index, 1)
    return rule.fault
  }

  /** The application's current token while it lives (its remaining life in expires_in), else a new one. */
  private getToken (corpId: string | null, secret: string | null): Record<string, unknown> | number {
    if (!corpId) return 41002
    if (!secret) return 41004
    const corp = this.corps.get(corpId)
    if (!corp) return 40013
    const owner = this.applicationOf(corpId, secret)
    if (!owner) return 40001
    const application = corp.applications.get(owner.agentId) as Application
    const now = this.now()
    let issued = application.token ? this.tokens.get(application.token) : undefined
    if (!issued || issued.endedAs !== undefined || issued.expiresAt <= now) {
      const token = randomBytes(96).toString('base64url')
      issued = { corpId, agentId: application.agentId, expiresAt: now + this.options.tokenTtlSeconds * 1000 }
      this.tokens.set(token, issued)
      this.everIssued.push(token)
      this.count(this.issuedCount, `${corpId}:${application.agentId}`)
      application.token = token
    }
    return { errcode: 0, errmsg: 'ok', access_token: application.token, expires_in: Math.ceil((issued.expiresAt - now) / 1000) }
  }

  /** The token's owner, or the errcode WeCom answers for a missing (41001), unknown (40014) or expired (42001) token. */
  private tokenOwner (token: string | null): { corp: Corp, application: Application } | number {
    if (!token) return 41001
    const issued = this.tokens.get(token)
    if (!issued) return 40014
    if (issued.endedAs !== undefined) return issued.endedAs
    if (issued.expiresAt <= this.now()) return 42001
    const corp = this.corps.get(issued.corpId)
    const application = corp?.applications.get(issued.agentId)
    if (!corp || !application) return 40014
    return { corp, application }
  }

  /** The corp's jsapi ticket, the same one within its lifetime; 400 answers an hour per corp. */
  private corpTicket (token: string | null): Record<string, unknown> | number {
    const owner = this.tokenOwner(token)
    if (typeof owner === 'number') return owner
    const { corp } = owner
    if (!this.withinLimit(corp.ticketCalls, this.options.corpTicketHourlyLimit)) return 45009
    corp.ticket = this.currentTicket(corp.ticket, { corpId: corp.corpId })
    return this.ticketAnswer(corp.ticket)
  }

  /** The application's agent_config ticket, the same one within its lifetime; 100 answers an hour per application. */
  private agentTicket (token: string | null, type: string | null): Record<string, unknown> | number {
    const owner = this.tokenOwner(token)
    if (typeof owner === 'number') return owner
    if (type !== 'agent_config') return 40058
    const { application } = owner
    if (!this.withinLimit(application.ticketCalls, this.options.agentTicketHourlyLimit)) return 45009
    application.ticket = this.currentTicket(application.ticket, { corpId: owner.corp.corpId, agentId: application.agentId })
    return this.ticketAnswer(application.ticket)
  }

  /** A member of the token's corp: made up from the userid (60111 without one), as WeCom answers it. */
  private member (token: string | null, userId: string | null): Record<string, unknown> | number {
    const owner = this.tokenOwner(token)
    if (typeof owner === 'number') return owner
    if (!userId) return 60111
    return { errcode: 0, errmsg: 'ok', userid: userId, name: `member ${userId}`, department: [1], status: 1 }
  }

  /** Drops the answers older than an hour; counts this one unless the limit is reached. */
  private withinLimit (calls: number[], limit: number): boolean {
    const now = this.now()
    while (calls.length > 0 && (calls[0] as number) <= now - HOUR_MS) calls.shift()
    if (calls.length >= limit) return false
    calls.push(now)
    return true
  }

  private currentTicket (ticket: string | undefined, owner: Omit<IssuedTicket, 'expiresAt'>): string {
    if (ticket && this.checkTicket(ticket) === 'valid') return ticket
    const fresh = randomBytes(64).toString('base64url')
    this.tickets.set(fresh, { ...owner, expiresAt: this.now() + this.options.ticketTtlSeconds * 1000 })
    this.everIssuedTickets.push(fresh)
    return fresh
  }

  private ticketAnswer (ticket: string): Record<string, unknown> {
    const issued = this.tickets.get(ticket) as IssuedTicket
    return { errcode: 0, errmsg: 'ok', ticket, expires_in: Math.ceil((issued.expiresAt - this.now()) / 1000) }
  }

  /** WeCom's errmsg: the message, then a hint, the caller's IP and where to read about the errcode. */
  private error (errcode: number, ip: string, errmsg?: string): Record<string, unknown> {
    const hint = `${Math.floor(this.now() / 1000)}_${Math.floor(Math.random() * 100)}_${randomBytes(16).toString('hex')}`
    return {
      errcode,
      errmsg: `${errmsg ?? ERRMSG[errcode] ?? 'error'}, hint: [${hint}], from ip: ${ip}, more info at https://open.work.weixin.qq.com/devtool/query?e=${errcode}`
    }
  }
}

function endpointOf (pathname: string): WecomEndpoint | undefined {
  if (pathname.endsWith('/cgi-bin/gettoken')) return 'gettoken'
  if (pathname.endsWith('/cgi-bin/get_jsapi_ticket')) return 'get_jsapi_ticket'
  if (pathname.endsWith('/cgi-bin/ticket/get')) return 'ticket/get'
  if (pathname.endsWith('/cgi-bin/user/get')) return 'user/get'
  return undefined
}
