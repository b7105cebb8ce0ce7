/** Schemas of the GenAuth token routes: the request body, the headers SDKs send, and the envelope. */
import { Type, type TSchema } from '@sinclair/typebox'
import { ApiCodes } from '../api-codes.js'
import type { ServedToken } from '../tokens/rules.js'

export const APP_ID_PATTERN = '^wx[0-9a-fA-F]{16}$'
export const APP_SECRET_PATTERN = '^[0-9a-fA-F]{32}$'

/** What a caller is told when a field has the wrong shape. */
export const FieldHints: Record<string, string> = {
  appId: 'appId must be a WeChat AppID: "wx" followed by 16 hexadecimal characters',
  appSecret: 'appSecret must be a WeChat AppSecret: 32 hexadecimal characters',
  accessToken: 'accessToken must be the token WeChat refused: 1 to 2048 characters',
  type: 'type must be "jsapi" or "wx_card"',
  url: 'url must be an absolute http:// or https:// URL of at most 2048 characters, without control characters',
  code: 'code must be the code of a getPhoneNumber button: 1 to 512 printable ASCII characters',
  extIdpConnidentifier: 'extIdpConnidentifier must be an identifier of WECHAT_IDENTIFIERS: 1 to 128 characters of A-Z a-z 0-9 . _ -'
}

export const TokenRequestSchema = Type.Object({
  appId: Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'WeChat AppID (wx + 16 hex)' }),
  appSecret: Type.String({ pattern: APP_SECRET_PATTERN, maxLength: 32, description: 'WeChat AppSecret (32 hex)' })
})

export const RefreshRequestSchema = Type.Object({
  appId: TokenRequestSchema.properties.appId,
  appSecret: TokenRequestSchema.properties.appSecret,
  accessToken: Type.String({ minLength: 1, maxLength: 2048, description: 'The token WeChat refused (errcode 40001 or 42001)' })
})

/** The headers the SDKs send, as the API description shows them on every /api route (described, not validated: see docs.ts). */
export const SdkHeadersSchema = Type.Object({
  'x-authing-app-id': Type.Optional(Type.String()),
  'x-genauth-app-id': Type.Optional(Type.String()),
  'x-authing-userpool-id': Type.Optional(Type.String()),
  'x-request-id': Type.Optional(Type.String()),
  authorization: Type.Optional(Type.String())
})

export const TokenDataSchema = Type.Object({
  accessToken: Type.String(),
  expiresAt: Type.String({ description: 'Unix time in seconds, as a string' }),
  expiresIn: Type.Integer({ description: 'Seconds the token has left' })
})

/** Every apiCode this service answers with (the table is in the API description and docs/api.md). */
const ApiCodeSchema = Type.Integer({
  enum: [...new Set(Object.values(ApiCodes).map((code) => code.apiCode))].sort((a, b) => a - b),
  description: 'On errors only: what went wrong (see the apiCode table)'
})

/** The GenAuth envelope around a route's data (absent from an error envelope, but for the current token of the refresh route's 4001 and 4007). */
export function envelopeOf<T extends TSchema> (data: T) {
  return Type.Object({
    statusCode: Type.Integer({ description: '200 on success; on errors the apiCode\'s statusCode (the HTTP status stays 200 but for 4004 and 404)' }),
    message: Type.String(),
    apiCode: Type.Optional(ApiCodeSchema),
    requestId: Type.String({ description: 'Also in the x-request-id header; an x-request-id sent is used when sane' }),
    data: Type.Optional(data)
  }, { description: 'The envelope: success (statusCode 200, with data) or an error (statusCode, apiCode and message; no data)' })
}

/** The 429 of the rate limits (apiCode 4004, a real HTTP 429 with retry-after, as GenAuth throttles). */
export const ThrottledSchema = Type.Object({
  statusCode: Type.Integer(),
  message: Type.String(),
  apiCode: Type.Optional(ApiCodeSchema),
  requestId: Type.String()
}, { description: 'Rate limited: apiCode 4004 (RATE_LIMIT_PER_CALLER, RATE_LIMIT_PER_APP), HTTP 429 with retry-after' })

/** The caller-key scheme, optional: needed only when AUTH_TOKENS is set. */
export const CallerKeySecurity: Array<Record<string, string[]>> = [{ callerKey: [] }, {}]

export const EnvelopeSchema = envelopeOf(TokenDataSchema)

/** A token in the envelope's data, as the GenAuth routes give it: expiresAt in Unix seconds, as a string. */
export function tokenData (token: ServedToken) {
  return { accessToken: token.accessToken, expiresAt: String(Math.floor(token.expiresAt / 1000)), expiresIn: token.expiresIn }
}

/**
 * Makes a served credential's JSON text once per credential and second left (what changes it), and gives the same
 * text back until then: a cached answer is sent as text, without serializing it again. At most `max` credentials are
 * remembered, the oldest forgotten first.
 */
export function jsonOnce (make: (token: ServedToken) => unknown, max = 1_000): (token: ServedToken) => string {
  const made = new Map<string, { expiresAt: number, expiresIn: number, json: string }>()
  return (token) => {
    const last = made.get(token.accessToken)
    if (last !== undefined && last.expiresIn === token.expiresIn && last.expiresAt === token.expiresAt) return last.json
    const json = JSON.stringify(make(token))
    if (last === undefined && made.size >= max) made.delete(made.keys().next().value as string)
    made.set(token.accessToken, { expiresAt: token.expiresAt, expiresIn: token.expiresIn, json })
    return json
  }
}

/** tokenData's JSON text, made once per token and second. */
export const tokenDataJson = jsonOnce(tokenData)
