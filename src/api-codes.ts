/** The one table of this service's apiCodes: what each means and the envelope statusCode it travels with. */

export interface ApiCodeInfo {
  readonly apiCode: number
  readonly statusCode: number
  readonly summary: string
}

function code (apiCode: number, statusCode: number, summary: string): ApiCodeInfo {
  return { apiCode, statusCode, summary }
}

export const ApiCodes = {
  INVALID_JSON: code(1001, 400, 'The body is not valid JSON (or is empty while declared as JSON).'),
  INVALID_ARGUMENT: code(1002, 400, 'A field is missing, is not a string, or does not have its format (a WeChat appId / appSecret, a ticket type, a WeCom corpId / corpSecret / agentId, an absolute http(s) url, a code, an iv of 16 bytes or encryptedData of whole AES blocks in base64).'),
  BODY_TOO_LARGE: code(1003, 413, 'The body is larger than BODY_LIMIT_BYTES (a passed-through WeChat call\'s: WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES).'),
  UNSUPPORTED_MEDIA_TYPE: code(1004, 400, 'The body is not application/json.'),
  ROUTE_NOT_FOUND: code(1005, 404, 'No route for this method and path.'),
  MALFORMED_REQUEST: code(1006, 400, 'The request is not valid HTTP/1.1 (request line, a header, Content-Length or chunked framing); the connection is closed.'),
  HEADERS_TOO_LARGE: code(1007, 431, 'The request headers are larger than Node allows (16 KB); the connection is closed.'),
  REQUEST_TIMEOUT: code(1008, 408, 'The request (headers and body) did not arrive within REQUEST_TIMEOUT_MS; the connection is closed.'),
  EXPECTATION_FAILED: code(1009, 417, 'The request has an Expect header other than 100-continue; the connection is closed.'),
  PASSTHROUGH_REFUSED: code(1010, 400, 'A WeChat API path that is not passed through (WECHAT_PASSTHROUGH): a token or ticket endpoint, answered from the cache with its own method only (with WECHAT_COMPONENTS, the component token endpoint too), or a path with an empty, "." or ".." segment or a character WeChat\'s paths do not hold.'),
  SECRET_MISMATCH: code(2001, 403, 'The appSecret does not match the one this appId\'s token was fetched with (or the configured one); WeCom: the corpSecret is none of the corp\'s applications\' in WECOM_APPS, or the agentId sent is not that application\'s.'),
  APP_NOT_CONFIGURED: code(2002, 403, 'WECHAT_APPS is set and does not list this appId (WeCom: WECOM_APPS does not list this corpId; a component route: WECHAT_COMPONENTS does not list this componentAppId).'),
  UNAUTHORIZED: code(2003, 401, 'AUTH_TOKENS is set and the request carries no valid caller key in authorization (or METRICS_KEY is set and a scrape of /metrics does not carry it: a real HTTP 401).'),
  IDENTIFIER_NOT_CONFIGURED: code(2004, 403, 'WECHAT_IDENTIFIERS does not list this extIdpConnidentifier.'),
  WECHAT_INVALID_APPID: code(3001, 400, 'WeChat rejected the appId (errcode 40013).'),
  WECHAT_INVALID_SECRET: code(3002, 400, 'WeChat rejected the appSecret (errcode 40125, or 40001 from older servers).'),
  WECHAT_SECRET_FROZEN: code(3003, 403, 'The AppSecret is frozen (errcode 40243).'),
  WECHAT_IP_NOT_ALLOWED: code(3004, 403, 'WeChat refused this server\'s IP (errcode 40164, 89503, 89506, 89507; the third-party platform\'s whitelist: 61004).'),
  WECHAT_DAILY_QUOTA: code(3005, 429, 'WeChat\'s daily token quota for this app is used up (errcode 45009).'),
  WECHAT_RATE_LIMITED: code(3006, 429, 'WeChat\'s per-minute limit was reached (errcode 45011; WeCom\'s 45009 or 45033, its frequency limits).'),
  WECHAT_BUSY: code(3007, 503, 'WeChat answered "system busy" (errcode -1) on every try.'),
  WECHAT_UNAVAILABLE: code(3008, 503, 'WeChat could not be reached, or did not answer within the request deadline.'),
  WECHAT_BAD_RESPONSE: code(3009, 502, 'WeChat answered with an HTTP error or a body that is not a token.'),
  WECHAT_ERROR: code(3010, 502, 'WeChat answered with another errcode; the message names it.'),
  WECHAT_TOKEN_REFUSED: code(3011, 502, 'A call made with the access token (getticket, the phone number, WeCom\'s ticket calls) was refused for the token (errcode 40001 / 42001, WeCom\'s 40014 / 42001) again after the token was replaced once (remembered for NEGATIVE_CACHE_SECONDS).'),
  WECHAT_INVALID_CODE: code(3012, 400, 'WeChat refused the Mini Program code (a phone code, or a wx.login code): wrong, already used or older than 5 minutes (errcode 40029). Ask the user again.'),
  WECHAT_CODE_USED: code(3013, 400, 'This wx.login code was sent to WeChat before (by an earlier request here, or WeChat answered 40163): a code works once. Call wx.login again, then get the encrypted data, and send both.'),
  SESSION_KEY_MISMATCH: code(3014, 400, 'The encryptedData does not decrypt with the session key of this code (bad padding, or not JSON): it was encrypted for another session, usually because wx.login ran after the data was obtained. Call wx.login first, then get the encrypted data, and send that code with it.'),
  DATA_APP_MISMATCH: code(3015, 400, 'The decrypted data is not for this Mini Program: its watermark.appid is another appId, or it has none; or it nests deeper than open data does (32 levels).'),
  WECHAT_USER_BLOCKED: code(3016, 403, 'WeChat refused the login of a user it considers high-risk (errcode 40226).'),
  WECHAT_USER_RATE_LIMITED: code(3017, 429, 'This user logged in too often: WeChat allows 100 jscode2session calls a minute per user (errcode 45011 on jscode2session).'),
  AUTHORIZATION_CODE_INVALID: code(3018, 400, 'WeChat refused the authorization code of an Open Platform authorization (errcode 61009 invalid or already used, 61010 older than its 10 minutes). A code exchanged here before is answered again without WeChat.'),
  FORCE_REFRESH_LIMITED: code(4001, 429, 'A refresh of a reported token was refused locally: in stable mode a forced refresh (WeChat allows 20 a day, 30 s apart), in classic mode a replacement less than FORCE_REFRESH_MIN_INTERVAL_SECONDS after the last one; data holds the current token.'),
  DAILY_BUDGET_EXHAUSTED: code(4002, 429, 'This app used its daily budget of upstream token calls (DAILY_UPSTREAM_BUDGET; a WeCom application its WECOM_DAILY_BUDGET; a component or an authorizer COMPONENT_DAILY_BUDGET, which also bounds the authorization codes callers send a component) and no valid token is cached.'),
  REFRESH_IN_PROGRESS: code(4003, 503, 'Another instance is fetching this app\'s token and did not finish within the request deadline.'),
  RATE_LIMITED: code(4004, 429, 'Too many requests from this caller or for this appId (a real HTTP 429, as GenAuth throttles), or scrapes of /metrics past METRICS_SCRAPES_PER_SECOND.'),
  UNVERIFIED_CHECKS_LIMITED: code(4005, 429, 'Too many upstream checks of appSecrets not yet known to be right (per caller, or the app\'s daily allowance); a secret WeChat already accepted is not limited.'),
  TICKET_BUDGET_EXHAUSTED: code(4006, 429, 'This app used its daily budget of upstream calls for this ticket type (TICKET_DAILY_BUDGET) and no valid ticket is cached; WeCom: the corp its WECOM_CORP_TICKET_HOURLY_BUDGET, or the application its WECOM_AGENT_TICKET_HOURLY_BUDGET, this clock hour.'),
  UPSTREAM_BACKOFF: code(4007, 503, 'WeChat failed on the last fetches of this app\'s token or ticket, or on its last jscode2session calls (unreachable, an HTTP error, errcode -1 or 45011, a body that is not an answer), so it is not asked again until the backoff ends (the retry-after header says when), and no valid one is cached.'),
  SESSION_BUDGET_EXHAUSTED: code(4008, 429, 'This Mini Program used its daily budget of jscode2session calls (SESSION_DAILY_BUDGET); until 00:00 Beijing time; the code was not sent to WeChat.'),
  COMPONENT_TICKET_MISSING: code(4009, 503, 'No usable component_verify_ticket is held for this component: none was pushed yet (or the store lost it with every instance\'s copy), or WeChat refused the last one (61005 expired, 61006 invalid). WeChat was asked to push one (api_start_push_ticket, once a minute at most across instances); it arrives within minutes.'),
  AUTHORIZER_NOT_AUTHORIZED: code(4010, 403, 'This account has not authorized the component, or its authorization ended (an unauthorized event, or WeChat answered 61003 / 61023 and its authorizer list does not hold it). Nothing is fetched for it until it authorizes again; WeChat\'s list is asked at most once in AUTHORIZER_LIST_SPACING_SECONDS per component.'),
  STORE_UNAVAILABLE: code(5001, 503, 'The token store (Redis) is unavailable.'),
  INTERNAL: code(5000, 500, 'Unexpected internal error; the log has the cause under the requestId.')
} as const satisfies Record<string, ApiCodeInfo>

export type ApiCodeName = keyof typeof ApiCodes
