/**
 * Schemas of the routes that use an app's token (JS-SDK tickets, the wx.config signature, the Mini Program phone
 * number) and of the Mini Program decrypt route.
 */
import { Type } from '@sinclair/typebox'
import { ENCRYPTED_PATTERN, IV_PATTERN } from '../mini-program/open-data.js'
import type { ServedToken } from '../tokens/rules.js'
import { TokenRequestSchema, jsonOnce } from './token.js'

export const IDENTIFIER_PATTERN = '^[A-Za-z0-9._-]{1,128}$'

export const TicketRequestSchema = Type.Object({
  appId: TokenRequestSchema.properties.appId,
  appSecret: TokenRequestSchema.properties.appSecret,
  type: Type.Optional(Type.Unsafe<'jsapi' | 'wx_card'>({
    type: 'string',
    enum: ['jsapi', 'wx_card'],
    default: 'jsapi',
    description: 'jsapi (the JS-SDK ticket, the default) or wx_card (the card ticket)'
  }))
})

export const TicketDataSchema = Type.Object({
  ticket: Type.String(),
  expiresAt: Type.String({ description: 'Unix time in seconds, as a string' }),
  expiresIn: Type.Integer({ description: 'Seconds the ticket has left' })
})

/** The `data` of a ticket route (the Official Account's, WeCom's, an authorizer's). */
export function ticketData (ticket: ServedToken) {
  return { ticket: ticket.accessToken, expiresAt: String(Math.floor(ticket.expiresAt / 1000)), expiresIn: ticket.expiresIn }
}

/** ticketData's JSON text, made once per ticket and second. */
export const ticketDataJson = jsonOnce(ticketData)

export const SignatureRequestSchema = Type.Object({
  appId: TokenRequestSchema.properties.appId,
  appSecret: TokenRequestSchema.properties.appSecret,
  url: Type.String({
    maxLength: 2048,
    // Absolute http(s), no control characters; the handler parses it too. The #fragment is ignored when signing.
    pattern: '^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000-\\u001f\\u007f]+$',
    description: 'The page\'s url as the page has it (location.href); its #fragment is ignored'
  })
})

export const SignatureDataSchema = Type.Object({
  appId: Type.String(),
  timestamp: Type.Integer({ description: 'Unix time in seconds the signature was made at' }),
  nonceStr: Type.String({ description: '16 random characters' }),
  signature: Type.String({ description: 'SHA-1 (hex) of jsapi_ticket, noncestr, timestamp and url, as wx.config wants it' })
})

const CODE_PATTERN = '^[\\u0021-\\u007e]{1,512}$'

export const PhoneRequestSchema = Type.Object({
  code: Type.String({ pattern: CODE_PATTERN, description: 'The code of a getPhoneNumber button (single use, 5 minutes)' }),
  extIdpConnidentifier: Type.String({ pattern: IDENTIFIER_PATTERN, description: 'A Mini Program identifier of WECHAT_IDENTIFIERS' })
})

const PhoneFields = {
  phoneNumber: Type.String({ description: 'With the country code for numbers outside mainland China' }),
  purePhoneNumber: Type.String({ description: 'Without the country code' }),
  countryCode: Type.String(),
  watermark: Type.Object({ timestamp: Type.Integer(), appid: Type.String() })
}

export const PhoneDataSchema = Type.Object({
  ...PhoneFields,
  phone_info: Type.Object(PhoneFields, { description: 'The same fields, where the Mini Program SDK (@authing/miniapp-wx getPhone) reads them' })
})

export const DecryptRequestSchema = Type.Object({
  code: Type.String({ pattern: CODE_PATTERN, description: 'The code of wx.login (single use, 5 minutes), got before the encrypted data' }),
  iv: Type.String({ pattern: IV_PATTERN, description: 'The iv WeChat gave with the encrypted data: 16 bytes in base64' }),
  encryptedData: Type.String({ pattern: ENCRYPTED_PATTERN, description: 'The encrypted data WeChat gave the Mini Program, in base64' }),
  extIdpConnidentifier: Type.String({ pattern: IDENTIFIER_PATTERN, description: 'A Mini Program identifier of WECHAT_IDENTIFIERS' })
})

export const DecryptDataSchema = Type.Object({
  watermark: Type.Object({
    appid: Type.String({ description: 'The Mini Program\'s appId (checked)' }),
    timestamp: Type.Optional(Type.Unknown({ description: 'Unix time in seconds WeChat encrypted the data at' }))
  }, { additionalProperties: true })
}, {
  additionalProperties: true,
  description: 'The decrypted JSON object as WeChat encrypted it: user info (openId, nickName, avatarUrl, unionId, …) or the legacy ' +
    'phone number (phoneNumber, purePhoneNumber, countryCode), with its watermark'
})
