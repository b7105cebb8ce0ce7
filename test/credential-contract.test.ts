/** The credential contract (test/helpers/credential-contract.ts) for every kind of credential the service keeps. */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { fingerprint } from '../src/fingerprint.js'
import type { FastifyInstance } from 'fastify'
import { AGENT_ID, AGENT_SECRET, APP_ID, APP_SECRET, COMPONENT, CORP_ID, startOpenPlatformMock, startWecomMock, type Teardown } from './helpers/build.js'
import { credentialContract, readAs, type CredentialKind, type Upstream } from './helpers/credential-contract.js'
import { listen } from './helpers/raw-http.js'
import { until } from './helpers/until.js'
import { authorizerSpace } from '../src/open-platform/refresh-tokens.js'
import type { OpenPlatformEndpoint } from '../src/stand-in/open-platform.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const TICKET = '/api/v3/get-wechat-jsapi-ticket'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const tokenBudget = { env: 'DAILY_UPSTREAM_BUDGET', apiCode: ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode }
const ticketBudget = { env: 'TICKET_DAILY_BUDGET', apiCode: ApiCodes.TICKET_BUDGET_EXHAUSTED.apiCode }

const kinds: CredentialKind[] = [
  { name: 'access_token (stable mode)', route: TOKEN, body, read: readAs('accessToken'), endpoint: 'stable_token', slot: 'token', budget: tokenBudget, mode: 'stable' },
  {
    name: 'access_token (classic mode)',
    route: TOKEN,
    body,
    read: readAs('accessToken'),
    endpoint: 'token',
    slot: 'token',
    budget: tokenBudget,
    mode: 'classic',
    env: { WECHAT_TOKEN_MODE: 'classic' }
  },
  // A ticket fetch may retire the ticket other instances serve, whatever the token's mode: a classic-mode credential.
  { name: 'jsapi_ticket', route: TICKET, body: { ...body, type: 'jsapi' }, read: readAs('ticket'), endpoint: 'getticket', slot: 'jsapi_ticket', budget: ticketBudget, mode: 'classic' },
  { name: 'wx_card_ticket', route: TICKET, body: { ...body, type: 'wx_card' }, read: readAs('ticket'), endpoint: 'getticket', slot: 'wx_card_ticket', budget: ticketBudget, mode: 'classic' },
  {
    name: 'wecom_token',
    route: '/api/v3/get-wecom-access-token',
    body: { corpId: CORP_ID, corpSecret: AGENT_SECRET },
    read: readAs('accessToken'),
    endpoint: 'stable_token', // unused: the WeCom stand-in counts its own calls
    upstream: async (t) => {
      const { mock, url } = await startWecomMock(t)
      return {
        calls: () => mock.calls('gettoken', CORP_ID),
        slow: (ms) => { mock.inject({ fault: { kind: 'latency', ms }, endpoint: 'gettoken' }) },
        advance: (ms) => { mock.advance(ms) },
        env: { WECOM_API_BASE: url, WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }) }
      }
    },
    owner: `${CORP_ID}:${fingerprint(CORP_ID, AGENT_SECRET).slice(0, 22)}`,
    slot: 'token',
    budget: { env: 'WECOM_DAILY_BUDGET', apiCode: ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode },
    // WeCom answers the same token until it expires: there is nothing to refresh ahead (test/wecom.test.ts shows the
    // token served to its last seconds, then fetched once).
    skip: { 'refresh ahead': 'WeCom answers the same token to every fetch until it expires' },
    mode: 'stable'
  },
  ...(['corp', 'agent'] as const).map((type): CredentialKind => ({
    name: `wecom_${type}_ticket`,
    route: '/api/v3/get-wecom-jsapi-ticket',
    body: { corpId: CORP_ID, corpSecret: AGENT_SECRET, type },
    read: readAs('ticket'),
    endpoint: 'getticket', // unused: the WeCom stand-in counts its own calls
    upstream: async (t) => {
      const endpoint = type === 'corp' ? 'get_jsapi_ticket' : 'ticket/get'
      const { mock, url } = await startWecomMock(t)
      return {
        calls: () => mock.calls(endpoint, CORP_ID),
        slow: (ms) => { mock.inject({ fault: { kind: 'latency', ms }, endpoint }) },
        advance: (ms) => { mock.advance(ms) },
        env: { WECOM_API_BASE: url, WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }) }
      }
    },
    // The corp's ticket is the corp's; an application's is kept beside the application's token.
    owner: type === 'corp' ? CORP_ID : `${CORP_ID}:${fingerprint(CORP_ID, AGENT_SECRET).slice(0, 22)}`,
    slot: `wecom_${type}_ticket`,
    budget: { env: `WECOM_${type.toUpperCase()}_TICKET_HOURLY_BUDGET`, apiCode: ApiCodes.TICKET_BUDGET_EXHAUSTED.apiCode },
    skip: { 'refresh ahead': 'whether WeCom answers a new ticket before the served one ends is not documented: nothing is fetched ahead' },
    mode: 'classic'
  }))
]

const AUTHORIZER = 'wxa1a1a1a1a1a1a1a1'

/**
 * The Open Platform stand-in, counting one endpoint; before each case the component's ticket is pushed to the first
 * instance (the others read it from the store) and, for an authorizer, an authorization is pushed and exchanged, its
 * first token then dropped so that the kind's own fetch is what the case watches.
 */
function openPlatform (endpoint: OpenPlatformEndpoint, authorize: boolean): (t: Teardown) => Promise<Upstream> {
  return async (t) => {
    const { mock, platform, url } = await startOpenPlatformMock(t)
    return {
      calls: () => platform.calls(endpoint, COMPONENT.appId),
      slow: (ms) => { platform.inject({ fault: { kind: 'latency', ms }, endpoint }) },
      advance: (ms) => {
        platform.advance(ms)
        mock.advance(ms)
      },
      env: { WECHAT_API_BASE: url, WECHAT_COMPONENTS: JSON.stringify([COMPONENT]), COMPONENT_ROUTES_WITHOUT_KEYS: 'true' },
      prepare: async (apps: FastifyInstance[]) => {
        const app = apps[0]!
        platform.setCallback(COMPONENT.appId, `http://127.0.0.1:${await listen(app)}/wechat/components/${COMPONENT.appId}/events`)
        if (!await platform.pushTicket(COMPONENT.appId)) throw new Error('the ticket push was refused')
        if (!authorize) return
        if (!await platform.pushEvent(COMPONENT.appId, 'authorized', AUTHORIZER)) throw new Error('the authorization push was refused')
        const exchanged = async (): Promise<boolean> =>
          ((await app.metrics.authorizerRefreshTokens.get()).values.find((v) => v.labels.outcome === 'authorized')?.value ?? 0) === 1
        if (!await until(exchanged)) throw new Error('the authorization was not exchanged')
        await app.store.delete(authorizerSpace(COMPONENT.appId, AUTHORIZER))
      }
    }
  }
}

kinds.push({
  name: 'component_token',
  route: '/api/v3/get-component-access-token',
  body: { componentAppId: COMPONENT.appId },
  read: readAs('accessToken'),
  endpoint: 'token', // unused: the Open Platform stand-in counts its own calls
  upstream: openPlatform('api_component_token', false),
  owner: `_component:${COMPONENT.appId}`,
  slot: 'token',
  budget: { env: 'COMPONENT_DAILY_BUDGET', apiCode: ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode },
  mode: 'classic'
}, {
  name: 'authorizer_token',
  route: '/api/v3/get-authorizer-access-token',
  body: { componentAppId: COMPONENT.appId, authorizerAppId: AUTHORIZER },
  read: readAs('accessToken'),
  endpoint: 'token', // unused: the Open Platform stand-in counts its own calls
  upstream: openPlatform('api_authorizer_token', true),
  owner: authorizerSpace(COMPONENT.appId, AUTHORIZER),
  slot: 'token',
  budget: { env: 'COMPONENT_DAILY_BUDGET', apiCode: ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode },
  mode: 'classic'
})

for (const kind of kinds) credentialContract(t, kind)
