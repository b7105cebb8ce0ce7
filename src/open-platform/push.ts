/**
 * What WeChat pushes to a third-party platform's callback (POST ?timestamp&nonce&msg_signature&encrypt_type=aes):
 * an XML body whose Encrypt field holds, under the component's EncodingAESKey, an XML message: the
 * component_verify_ticket every 10 minutes, or an authorization event (authorized, updateauthorized, unauthorized).
 *
 * The body comes from anyone who knows the URL, so it is read defensively before its signature is known to be good:
 * - at most MAX_PUSH_BYTES, checked before anything is parsed;
 * - no declarations at all: a `<!` that does not open CDATA or a comment (DOCTYPE, ENTITY, ELEMENT...) is refused
 *   outright, so no entity is defined, expanded or fetched whatever the parser would do; the parser is also told not
 *   to process entities (fast-xml-parser does by default, within limits), so `&amp;` stays as it is written;
 * - well-formed (fast-xml-parser's validator), at most MAX_DEPTH elements deep (the parser stops there);
 * - WeChat's shape: one <xml> root whose children are text, each once.
 * Every refusal is a PushError whose reason and message are fixed texts: nothing from the body, the query or the
 * decrypted message is repeated in it.
 */
import { hash } from 'node:crypto'
import { XMLParser, XMLValidator } from 'fast-xml-parser'
import { MSG_CRYPTO_MESSAGES, MsgCryptoError, type ComponentCrypto, type MsgCryptoReason } from './msg-crypto.js'

/** The most a push body (and the message in it) may weigh: WeChat's pushes are under 2 KiB. */
export const MAX_PUSH_BYTES = 16 * 1024
/** How far a push's timestamp may be from now, either way, by default. */
export const MAX_SKEW_SECONDS = 300
/** Elements deep: <xml> and its fields. */
const MAX_DEPTH = 2

export type PushReason = MsgCryptoReason
  | 'too-large' | 'declaration' | 'malformed-xml' | 'too-deep' | 'bad-shape'
  | 'bad-query' | 'stale-timestamp' | 'future-timestamp'

const MESSAGES: Record<PushReason, string> = {
  ...MSG_CRYPTO_MESSAGES,
  'too-large': `the body is larger than ${MAX_PUSH_BYTES} bytes`,
  declaration: 'the XML has a declaration (DOCTYPE, ENTITY or another <!...>); WeChat sends none',
  'malformed-xml': 'the body is not well-formed XML in UTF-8',
  'too-deep': `the XML nests deeper than ${MAX_DEPTH} elements`,
  'bad-shape': 'the XML is not WeChat\'s: one <xml> root whose children are text, each once',
  'bad-query': 'timestamp, nonce or msg_signature is missing from the query or not of their form',
  'stale-timestamp': 'the timestamp is too far in the past',
  'future-timestamp': 'the timestamp is too far in the future'
}

export class PushError extends Error {
  readonly reason: PushReason

  /** `detail` is a fixed text of this module (a field's name at most), never a value from the push. */
  constructor (reason: PushReason, detail?: string) {
    super(`The push is refused: ${detail ?? MESSAGES[reason]}`)
    this.name = 'PushError'
    this.reason = reason
  }
}

// processEntities off: no DOCTYPE entity is kept and none expanded (readXml's declaration check already refuses
// them). parseTagValue off: an appId or a ticket made of digits stays a string. Attributes, the <?xml?> declaration
// and processing instructions are dropped: WeChat sends none that matter.
const parser = new XMLParser({
  processEntities: false,
  htmlEntities: false,
  ignoreAttributes: true,
  parseTagValue: false,
  parseAttributeValue: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  trimValues: true,
  // fast-xml-parser counts from 0 under the document: 1 lets <xml> and its children through.
  maxNestedTags: MAX_DEPTH - 1
})

/** A `<!` that opens neither CDATA nor a comment: a DOCTYPE, an ENTITY, or any other declaration. */
const DECLARATION = /<!(?!\[CDATA\[|--)/
const FIELD_NAME = /^[A-Za-z][A-Za-z0-9_]*$/
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The children of the <xml> root, each a text, after the checks in this file's header. */
function readXml (body: string | Buffer): Record<string, string> {
  const size = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.length
  if (size > MAX_PUSH_BYTES) throw new PushError('too-large')
  let text: string
  try {
    text = typeof body === 'string' ? body : utf8.decode(body)
  } catch {
    throw new PushError('malformed-xml')
  }
  if (DECLARATION.test(text)) throw new PushError('declaration')
  if (XMLValidator.validate(text) !== true) throw new PushError('malformed-xml')
  let parsed: unknown
  try {
    parsed = parser.parse(text)
  } catch (error) {
    // The parser's one way of saying it stopped at maxNestedTags; anything else it throws is bad XML.
    throw new PushError(error instanceof Error && /nested tags/i.test(error.message) ? 'too-deep' : 'malformed-xml')
  }
  if (typeof parsed !== 'object' || parsed === null || Object.keys(parsed).length !== 1) throw new PushError('bad-shape')
  const root = (parsed as Record<string, unknown>).xml
  if (typeof root !== 'object' || root === null || Array.isArray(root)) throw new PushError('bad-shape')
  const fields: Record<string, string> = {}
  for (const [name, value] of Object.entries(root)) {
    // An element that appears twice is an array, one with children an object, text beside elements '#text'.
    if (!FIELD_NAME.test(name) || typeof value !== 'string') throw new PushError('bad-shape')
    fields[name] = value
  }
  return fields
}

/** A field that must be there and match `pattern`; the error names the field, never its value. */
function field (fields: Record<string, string>, name: string, pattern: RegExp): string {
  const value = Object.hasOwn(fields, name) ? fields[name] : undefined
  if (value === undefined || !pattern.test(value)) {
    throw new PushError('bad-shape', `${name} is missing or not of its form`)
  }
  return value
}

const APP_ID = /^wx[0-9a-fA-F]{16}$/
const SECONDS = /^\d{1,12}$/
/** Tickets and codes ("ticket@@@…", "queryauthcode@@@…"): printable ASCII; no & (entities are left undecoded). */
const OPAQUE = /^[\x21-\x25\x27-\x7e]{1,512}$/
const INFO_TYPE = /^[a-z0-9_]{1,64}$/
/** Anything: whether it is base64 is decrypt's to say, after the signature. */
const PRESENT = /^[\s\S]+$/

/** The outer body: its Encrypt field. ToUserName / AppId beside it are not covered by the signature, and not read. */
export function parseEnvelope (body: string | Buffer): { encrypt: string } {
  const fields = readXml(body)
  return { encrypt: field(fields, 'Encrypt', PRESENT) }
}

interface EventBase {
  /** The component appId the message is for (checked by checkPush against the component's). */
  appId: string
  /** Seconds since the epoch, as WeChat stamped the message. */
  createTime: number
}

export type PushEvent =
  | EventBase & { type: 'component_verify_ticket', ticket: string }
  | EventBase & {
    type: 'authorized' | 'updateauthorized'
    authorizerAppId: string
    authorizationCode: string
    /** Seconds since the epoch after which the authorization code is no longer accepted. */
    authorizationCodeExpiredTime: number
    preAuthCode?: string
  }
  | EventBase & { type: 'unauthorized', authorizerAppId: string }
  /** An InfoType this service does not act on (WeChat has more, e.g. for fast registration): to answer and drop. */
  | EventBase & { type: 'other', infoType: string }

/** The decrypted message: which event, with its fields checked. */
export function parseEvent (message: string): PushEvent {
  const fields = readXml(message)
  const base: EventBase = {
    appId: field(fields, 'AppId', APP_ID),
    createTime: Number(field(fields, 'CreateTime', SECONDS))
  }
  const type = field(fields, 'InfoType', INFO_TYPE)
  switch (type) {
    case 'component_verify_ticket':
      return { ...base, type, ticket: field(fields, 'ComponentVerifyTicket', OPAQUE) }
    case 'authorized':
    case 'updateauthorized': {
      const event: PushEvent = {
        ...base,
        type,
        authorizerAppId: field(fields, 'AuthorizerAppid', APP_ID),
        authorizationCode: field(fields, 'AuthorizationCode', OPAQUE),
        authorizationCodeExpiredTime: Number(field(fields, 'AuthorizationCodeExpiredTime', SECONDS))
      }
      // Which pre-auth code the authorization came through: informative, so it may be absent (but not malformed).
      if (Object.hasOwn(fields, 'PreAuthCode')) event.preAuthCode = field(fields, 'PreAuthCode', OPAQUE)
      return event
    }
    case 'unauthorized':
      return { ...base, type, authorizerAppId: field(fields, 'AuthorizerAppid', APP_ID) }
    default:
      return { ...base, type: 'other', infoType: type }
  }
}

/** The query WeChat sends with a push, as a framework hands it over (a value may be missing, or repeated). */
export interface PushQuery {
  timestamp?: unknown
  nonce?: unknown
  msg_signature?: unknown
}

export interface CheckPushInput {
  query: PushQuery
  body: string | Buffer
  component: ComponentCrypto
  /** Now, in milliseconds since the epoch. */
  now: number
  /** How far the timestamp may be from now, either way (default MAX_SKEW_SECONDS). */
  maxSkewSeconds?: number
}

export interface CheckedPush {
  event: PushEvent
  /**
   * The push's identity for replay refusal: a hash of its Encrypt field, the message itself, whatever timestamp and
   * nonce it is signed with again (WeChat may sign a push it sends again anew). Keep it longer than the timestamp is
   * accepted (maxSkewSeconds past `timestamp`).
   */
  replayId: string
  /** The push's timestamp, in seconds since the epoch. */
  timestamp: number
  /** Whether previousEncodingAESKey decrypted it (WeChat still encrypts with the old key). */
  previousKey: boolean
}

const NONCE = /^[\x21-\x7e]{1,128}$/
/**
 * The Encrypt field as WeChat writes it (base64, in CDATA or not), found by a scan that is linear in the body (no
 * nested quantifier): what the signature is checked on before the body is parsed.
 */
const ENCRYPT_FIELD = /<Encrypt>\s*(?:<!\[CDATA\[([A-Za-z0-9+/=]{1,65536})\]\]>|([A-Za-z0-9+/=]{1,65536}))\s*<\/Encrypt>/g
const MSG_SIGNATURE = /^[0-9a-fA-F]{40}$/

/**
 * A push checked from end to end: the query's form, the timestamp within maxSkewSeconds of now, the body's XML, the
 * msg_signature (before anything is decrypted), the decryption (current key, then previous), the message's XML, and
 * that the message is for this component. Throws a PushError; replays are the caller's to refuse, by replayId.
 */
export function checkPush ({ query, body, component, now, maxSkewSeconds = MAX_SKEW_SECONDS }: CheckPushInput): CheckedPush {
  const { timestamp, nonce, msg_signature: msgSignature } = query
  if (typeof timestamp !== 'string' || !SECONDS.test(timestamp) || typeof nonce !== 'string' || !NONCE.test(nonce) ||
    typeof msgSignature !== 'string' || !MSG_SIGNATURE.test(msgSignature)) {
    throw new PushError('bad-query')
  }
  const seconds = Number(timestamp)
  const skew = seconds - now / 1000
  if (skew < -maxSkewSeconds) throw new PushError('stale-timestamp')
  if (skew > maxSkewSeconds) throw new PushError('future-timestamp')

  // The signature first, on the Encrypt field found without parsing: a body nobody signed costs a scan, not a parse.
  const size = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.length
  if (size > MAX_PUSH_BYTES) throw new PushError('too-large')
  const fields = [...(typeof body === 'string' ? body : body.toString('latin1')).matchAll(ENCRYPT_FIELD)].slice(0, 2)
  const signed = fields.length === 1 ? fields[0]![1] ?? fields[0]![2] : undefined
  if (signed === undefined) throw new PushError('bad-shape', 'the body has no Encrypt field of base64 (or more than one)')
  if (!component.verify(timestamp, nonce, signed, msgSignature)) throw new PushError('bad-signature')
  const { encrypt } = parseEnvelope(body)
  if (encrypt !== signed) throw new PushError('bad-shape', 'the Encrypt field read is not the one signed')
  let message: string
  let previousKey = false
  try {
    message = component.decrypt(encrypt, () => { previousKey = true })
  } catch (error) {
    if (error instanceof MsgCryptoError) throw new PushError(error.reason)
    throw error
  }
  const event = parseEvent(message)
  if (event.appId !== component.appId) {
    throw new PushError('appid-mismatch', 'the message is for another component appId than this callback\'s')
  }
  return { event, replayId: hash('sha256', encrypt, 'hex').slice(0, 32), timestamp: seconds, previousKey }
}
