/** Schemas of the GenAuth token routes: the request body, the headers SDKs send, and the envelope. */
import { Type, type TSchema } from '@sinclair/typebox'

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

/** The GenAuth envelope around a route's data (absent from an error envelope, but for apiCode 4001's current token). */
export function envelopeOf<T extends TSchema> (data: T) {
  return Type.Object({
    statusCode: Type.Integer(),
    message: Type.String(),
    apiCode: Type.Optional(Type.Integer()),
    requestId: Type.String(),
    data: Type.Optional(data)
  })
}

export const EnvelopeSchema = envelopeOf(TokenDataSchema)
