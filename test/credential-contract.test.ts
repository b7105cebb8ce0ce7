/** The credential contract (test/helpers/credential-contract.ts) for every kind of credential the service keeps. */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { fingerprint } from '../src/fingerprint.js'
import { AGENT_ID, AGENT_SECRET, APP_ID, APP_SECRET, CORP_ID, startWecomMock } from './helpers/build.js'
import { credentialContract, readAs, type CredentialKind } from './helpers/credential-contract.js'

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

for (const kind of kinds) credentialContract(t, kind)
