/**
 * The Open Platform's message crypto (WXBizMsgCrypt) against two independent implementations from npm, both ways,
 * and every way a pushed message can be wrong.
 */
import t from 'tap'
import fc from 'fast-check'
import { createCipheriv, createHash } from 'node:crypto'
import { inspect } from 'node:util'
import WXBizMsgCrypt from 'wechat-crypto'
import * as wecom from '@wecom/crypto'
import {
  AesKey, MsgCryptoError, componentCrypto, decrypt, encrypt, signature, signatureMatches, type MsgCryptoReason
} from '../src/open-platform/msg-crypto.js'
import { MAX_PUSH_BYTES, PushError, checkPush, parseEnvelope, parseEvent, type PushReason } from '../src/open-platform/push.js'

// Fixed keys: a case whose outcome depends on what a wrong key decrypts to must give the same outcome on every run.
const KEY = 'k7Qz3VbN9pLm2XcR8sTy4WdF6hJa1GeU5oIi0KuYtEr'
const OLD_KEY = 'Pq8Wn3Lz6Xv1Bc4Ty7Ms2Hd5Fg9Jk0Ra3Ue6Io8Yp1Q'
const OTHER_KEY = 'Zx1Cv2Bn3Mq4Wl5Ek6Rj7Th8Yg9Uf0Id1Os2Pa3Sd4F'
const TOKEN = 'componentPushToken42'
const APP_ID = 'wx1234567890abcdef'
const TICKET = 'ticket@@@Qm9vZ2xlIHRoaXMgaXMgbm90IGEgcmVhbCB0aWNrZXQgYXQgYWxs'
const FIXED_RANDOM = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex')

function ticketPush (ticket = TICKET): string {
  return `<xml><AppId><![CDATA[${APP_ID}]]></AppId><CreateTime>1713424427</CreateTime>` +
    `<InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[${ticket}]]></ComponentVerifyTicket></xml>`
}

/** AES-256-CBC of bytes the caller lays out (padding included), as WeChat would under this EncodingAESKey. */
function sealRaw (plain: Buffer, encodingAESKey: string): string {
  const key = Buffer.from(encodingAESKey + '=', 'base64')
  const cipher = createCipheriv('aes-256-cbc', key, key.subarray(0, 16)).setAutoPadding(false)
  return Buffer.concat([cipher.update(plain), cipher.final()]).toString('base64')
}

/** The plaintext layout, with the length field and padding the caller may get wrong on purpose. */
function layout (message: Buffer, appId: string, options: { length?: number, pad?: Buffer } = {}): Buffer {
  const length = Buffer.alloc(4)
  length.writeUInt32BE(options.length ?? message.length)
  const unpadded = Buffer.concat([FIXED_RANDOM, length, message, Buffer.from(appId)])
  const n = 32 - (unpadded.length % 32)
  return Buffer.concat([unpadded, options.pad ?? Buffer.alloc(n, n)])
}

/** What a refused call threw: it must be a MsgCryptoError. */
function refusal (fn: () => unknown): MsgCryptoError {
  try {
    fn()
  } catch (error) {
    if (error instanceof MsgCryptoError) return error
    throw error
  }
  throw new Error('not refused')
}

/** Every refusal's error, to scan for secrets at the end. */
const refusals: Error[] = []
function reasonOf (fn: () => unknown): MsgCryptoReason {
  const error = refusal(fn)
  refusals.push(error)
  return error.reason
}

const current = new AesKey(KEY)
const keys = { current }
const messages = fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 100 }), fc.constant(ticketPush()))

t.test('what this encrypts, wechat-crypto and @wecom/crypto decrypt to the same message and appId', async (t) => {
  const theirs = new WXBizMsgCrypt(TOKEN, KEY, APP_ID)
  fc.assert(fc.property(messages, (message) => {
    const sealed = encrypt(message, current, APP_ID)
    t.same(theirs.decrypt(sealed), { message, id: APP_ID })
    const other = wecom.decrypt(KEY, sealed)
    return other.message === message && other.id === APP_ID
  }))
  // Every length across two blocks' worth of padding: the 32-byte padding must match theirs for each.
  for (let n = 0; n < 70; n++) {
    const message = 'x'.repeat(n)
    t.same(theirs.decrypt(encrypt(message, current, APP_ID)), { message, id: APP_ID }, `${n} bytes`)
  }
})

t.test('byte for byte what @wecom/crypto encrypts, given the same 16 random bytes', async (t) => {
  fc.assert(fc.property(messages, fc.uint8Array({ minLength: 16, maxLength: 16 }), (message, random) =>
    encrypt(message, current, APP_ID, Buffer.from(random)) === wecom.encrypt(KEY, message, APP_ID, Buffer.from(random))))
  t.throws(() => encrypt('m', current, APP_ID, Buffer.alloc(15)), /random must be 16 bytes/)
})

t.test('what wechat-crypto and @wecom/crypto encrypt, this decrypts', async (t) => {
  const theirs = new WXBizMsgCrypt(TOKEN, KEY, APP_ID)
  fc.assert(fc.property(messages, (message) =>
    decrypt(theirs.encrypt(message), keys, APP_ID) === message &&
    decrypt(wecom.encrypt(KEY, message, APP_ID), keys, APP_ID) === message))
  t.equal(componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: KEY }).decrypt(theirs.encrypt(ticketPush())), ticketPush())
})

t.test('the signature is theirs, and is compared whole', async (t) => {
  const theirs = new WXBizMsgCrypt(TOKEN, KEY, APP_ID)
  const field = fc.string({ minLength: 1, maxLength: 40 })
  fc.assert(fc.property(field, fc.stringMatching(/^\d{10}$/), field, field, (token, timestamp, nonce, sealed) =>
    signature(token, timestamp, nonce, sealed) === wecom.getSignature(token, timestamp, nonce, sealed)))
  const sealed = encrypt(ticketPush(), current, APP_ID, FIXED_RANDOM)
  const expected = theirs.getSignature('1713424427', '1320562132', sealed)
  t.equal(signature(TOKEN, '1713424427', '1320562132', sealed), expected)

  const component = componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: KEY })
  t.equal(component.signature('1713424427', '1320562132', sealed), expected)
  t.ok(component.verify('1713424427', '1320562132', sealed, expected))
  t.ok(component.verify('1713424427', '1320562132', sealed, expected.toUpperCase()), 'hex in either case')
  t.notOk(component.verify('1713424428', '1320562132', sealed, expected), 'another timestamp')
  t.notOk(component.verify('1713424427', '1320562133', sealed, expected), 'another nonce')
  t.notOk(component.verify('1713424427', '1320562132', sealed.slice(0, -4) + 'AAA=', expected), 'another Encrypt')
  t.notOk(componentCrypto({ appId: APP_ID, token: TOKEN + 'x', encodingAESKey: KEY }).verify('1713424427', '1320562132', sealed, expected), 'another token')
  const flipped = (expected[0] === 'a' ? 'b' : 'a') + expected.slice(1)
  for (const presented of [flipped, expected.slice(0, 39), expected + '0', '', 'z'.repeat(40), ` ${expected.slice(1)}`]) {
    t.notOk(signatureMatches(expected, presented), JSON.stringify(presented))
  }
})

t.test('the previous EncodingAESKey is tried when the current one fails, and only then', async (t) => {
  const oldKey = new AesKey(OLD_KEY)
  const sealedOld = encrypt(ticketPush(), oldKey, APP_ID, FIXED_RANDOM)
  const sealedNew = encrypt(ticketPush(), current, APP_ID, FIXED_RANDOM)
  t.equal(decrypt(sealedOld, { current, previous: oldKey }, APP_ID), ticketPush(), 'sent under the previous key')
  t.equal(decrypt(sealedNew, { current, previous: oldKey }, APP_ID), ticketPush(), 'sent under the current key')
  // These fixed keys are an unlucky pair: under the current key this decrypts to a last byte of 1, padding that
  // passes (a wrong key does one time in 256); the length field refuses it.
  t.equal(reasonOf(() => decrypt(sealedOld, keys, APP_ID)), 'bad-length', 'without the previous key')
  t.ok(reasonOf(() => decrypt(encrypt(ticketPush(), oldKey, APP_ID), keys, APP_ID)), 'without it, with any random bytes')
  const sealedOther = encrypt(ticketPush(), new AesKey(OTHER_KEY), APP_ID, FIXED_RANDOM)
  t.equal(reasonOf(() => decrypt(sealedOther, { current, previous: oldKey }, APP_ID)), 'bad-padding', 'under neither')

  const component = componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: KEY, previousEncodingAESKey: OLD_KEY })
  t.equal(component.decrypt(sealedOld), ticketPush())
  t.equal(component.decrypt(component.encrypt('hello')), 'hello')
  t.equal(new WXBizMsgCrypt(TOKEN, KEY, APP_ID).decrypt(component.encrypt('hello')).message, 'hello', 'it encrypts under the current key')
  // Under the previous key, another component's message is still refused, for its appId (that key got furthest).
  const stranger = encrypt(ticketPush(), oldKey, 'wx00000000000000aa', FIXED_RANDOM)
  t.equal(reasonOf(() => component.decrypt(stranger)), 'appid-mismatch')
})

t.test('a message for another appId is refused, however close the appId', async (t) => {
  for (const appId of ['wx00000000000000aa', APP_ID + 'x', APP_ID.slice(0, -1), APP_ID.toUpperCase(), '']) {
    t.equal(reasonOf(() => decrypt(encrypt(ticketPush(), current, appId), keys, APP_ID)), 'appid-mismatch', JSON.stringify(appId))
  }
  // The length field decides where the appId starts: one byte off either way is another appId.
  const message = Buffer.from(ticketPush())
  t.equal(reasonOf(() => decrypt(sealRaw(layout(message, APP_ID, { length: message.length - 1 }), KEY), keys, APP_ID)), 'appid-mismatch')
  t.equal(reasonOf(() => decrypt(sealRaw(layout(message, APP_ID, { length: message.length + 1 }), KEY), keys, APP_ID)), 'appid-mismatch')
  t.equal(decrypt(sealRaw(layout(message, APP_ID), KEY), keys, APP_ID), ticketPush(), 'laid out right, it decrypts')
})

t.test('padding is checked strictly: 1 to 32, every byte the same', async (t) => {
  // 16 + 4 + 10 + 18 = 48 bytes: 16 bytes of padding, each 16.
  const message = Buffer.from('0123456789')
  const padded = layout(message, APP_ID)
  t.equal(padded.length, 64)
  const sealed = sealRaw(padded, KEY)
  t.equal(decrypt(sealed, keys, APP_ID), '0123456789')

  // CBC: a byte flipped in the last-but-one AES block (16 bytes) flips the same byte of the last block's plaintext.
  const flipLast = (xor: number): string => {
    const bytes = Buffer.from(sealed, 'base64')
    bytes[bytes.length - 17]! ^= xor
    return bytes.toString('base64')
  }
  t.equal(reasonOf(() => decrypt(flipLast(16 ^ 15), keys, APP_ID)), 'bad-padding', 'last byte 15, the others 16 (wechat-crypto takes it)')
  t.equal(new WXBizMsgCrypt(TOKEN, KEY, APP_ID).decrypt(flipLast(16 ^ 15)).message, '0123456789', 'the lenient port does take it')
  t.equal(reasonOf(() => decrypt(flipLast(16), keys, APP_ID)), 'bad-padding', 'last byte 0')
  t.equal(reasonOf(() => decrypt(flipLast(16 ^ 33), keys, APP_ID)), 'bad-padding', 'last byte 33')
  t.equal(reasonOf(() => decrypt(flipLast(16 ^ 0xff), keys, APP_ID)), 'bad-padding', 'last byte 239')
  // A byte flipped in the last block itself garbles that whole block.
  const garbled = Buffer.from(sealed, 'base64')
  garbled[garbled.length - 5]! ^= 0x01
  t.equal(reasonOf(() => decrypt(garbled.toString('base64'), keys, APP_ID)), 'bad-padding', 'a byte of the last block flipped')

  for (const [what, pad] of [
    ['one padding byte different', Buffer.concat([Buffer.alloc(15, 16), Buffer.of(16)]).fill(17, 3, 4)],
    ['padding of 0', Buffer.alloc(16, 0)],
    ['padding past the block (48, 16 bytes of it)', Buffer.alloc(16, 48)]
  ] as const) {
    t.equal(reasonOf(() => decrypt(sealRaw(layout(message, APP_ID, { pad }), KEY), keys, APP_ID)), 'bad-padding', what)
  }
  // A full block of padding (32 of 32) is right.
  const full = layout(Buffer.from('x'.repeat(26)), APP_ID)
  t.equal(full.length, 96)
  t.equal(full[full.length - 1], 32)
  t.equal(decrypt(sealRaw(full, KEY), keys, APP_ID), 'x'.repeat(26))
})

t.test('truncated or mislaid: refused for its length', async (t) => {
  const sealed = encrypt(ticketPush(), current, APP_ID, FIXED_RANDOM)
  const bytes = Buffer.from(sealed, 'base64')
  t.equal(reasonOf(() => decrypt(bytes.subarray(0, bytes.length - 3).toString('base64'), keys, APP_ID)), 'bad-length', '3 bytes short')
  t.equal(reasonOf(() => decrypt(bytes.subarray(0, bytes.length - 16).toString('base64'), keys, APP_ID)), 'bad-length', 'an AES block short')
  t.equal(reasonOf(() => decrypt(bytes.subarray(0, bytes.length - 32).toString('base64'), keys, APP_ID)), 'bad-padding', '32 bytes short')
  // Laid out wrong by the sender.
  const message = Buffer.from(ticketPush())
  t.equal(reasonOf(() => decrypt(sealRaw(layout(message, APP_ID, { length: 0xffffffff }), KEY), keys, APP_ID)), 'bad-length', 'a length past the end')
  t.equal(reasonOf(() => decrypt(sealRaw(layout(message, APP_ID, { length: message.length + APP_ID.length + 1 }), KEY), keys, APP_ID)), 'bad-length', 'a length one past the end')
  t.equal(reasonOf(() => decrypt(sealRaw(Buffer.concat([FIXED_RANDOM.subarray(0, 13), Buffer.alloc(19, 19)]), KEY), keys, APP_ID)), 'bad-length', 'shorter than the random bytes and the length field')
  t.equal(reasonOf(() => decrypt(sealRaw(layout(Buffer.from([0xc3, 0x28]), APP_ID), KEY), keys, APP_ID)), 'bad-utf8', 'a message that is not UTF-8')
})

t.test('what is not base64 is refused before any decryption', async (t) => {
  const sealed = encrypt(ticketPush(), current, APP_ID)
  for (const text of ['', '====', 'not base64!', sealed.slice(0, 20) + '*' + sealed.slice(21), sealed.slice(0, 20) + ' ' + sealed.slice(20),
    sealed.replace(/\+/g, '-').replace(/\//g, '_') + (/[+/]/.test(sealed) ? '' : '-'), '%'.repeat(64)]) {
    t.equal(reasonOf(() => decrypt(text, keys, APP_ID)), 'bad-base64', JSON.stringify(text.slice(0, 30)))
  }
})

t.test('an EncodingAESKey that is not 43 base64 characters is refused when the component is set up', async (t) => {
  for (const bad of [KEY.slice(1), KEY + 'A', KEY.slice(1) + '=', KEY.slice(1) + '-', '', ' '.repeat(43)]) {
    t.throws(() => new AesKey(bad), { message: /^EncodingAESKey must be 43 characters of base64/ }, JSON.stringify(bad))
    t.throws(() => componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: KEY, previousEncodingAESKey: bad }),
      { message: /^previousEncodingAESKey must be 43 characters/ })
    try {
      componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: bad })
    } catch (error) {
      refusals.push(error as Error)
    }
  }
  t.throws(() => componentCrypto({ appId: APP_ID, token: '', encodingAESKey: KEY }), { message: /token must be a non-empty string/ })
  t.throws(() => componentCrypto({ appId: '', token: TOKEN, encodingAESKey: KEY }), { message: /appId must be a non-empty string/ })
  // The last character's low 2 bits are not part of the key (WeChat's console does not make them 0): still a key.
  t.equal(new WXBizMsgCrypt(TOKEN, KEY.slice(0, 42) + 'z', APP_ID).decrypt(encrypt('m', new AesKey(KEY.slice(0, 42) + 'z'), APP_ID)).message, 'm')
})

// ---- Pushes: the callback body, its query, and the decrypted event ----

const NOW = 1_713_424_500_000
const TIMESTAMP = String(NOW / 1000 - 30)
const NONCE = '1320562132'
const AUTH_CODE = 'queryauthcode@@@SGVyZSBhbiBhdXRob3JpemF0aW9uIGNvZGUgc3RhbmRz'
const PRE_AUTH_CODE = 'preauthcode@@@UHJlIGF1dGggY29kZSBmb3IgdGhlIHRlc3Rz'
const AUTHORIZER = 'wxfedcba0987654321'
const component = componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: KEY, previousEncodingAESKey: OLD_KEY })
const wechat = new WXBizMsgCrypt(TOKEN, KEY, APP_ID)

/** A push as WeChat sends it, encrypted and signed by wechat-crypto: the body and the query. */
function push (message: string, options: { timestamp?: string, sealed?: string, outer?: (sealed: string) => string } = {}) {
  const timestamp = options.timestamp ?? TIMESTAMP
  const sealed = options.sealed ?? wechat.encrypt(message)
  const body = options.outer?.(sealed) ?? `<xml>\n  <ToUserName><![CDATA[${APP_ID}]]></ToUserName>\n  <Encrypt><![CDATA[${sealed}]]></Encrypt>\n</xml>`
  return { query: { timestamp, nonce: NONCE, msg_signature: wechat.getSignature(timestamp, NONCE, sealed), encrypt_type: 'aes' }, body }
}

function eventXml (fields: Record<string, string>): string {
  return '<xml>' + Object.entries(fields).map(([name, value]) => `<${name}><![CDATA[${value}]]></${name}>`).join('') + '</xml>'
}

function pushRefusal (fn: () => unknown): PushReason {
  try {
    fn()
  } catch (error) {
    if (!(error instanceof PushError)) throw error
    refusals.push(error)
    return error.reason
  }
  throw new Error('not refused')
}

const check = (input: { query: Record<string, unknown>, body: string | Buffer }, maxSkewSeconds?: number) =>
  checkPush({ ...input, component, now: NOW, ...(maxSkewSeconds === undefined ? {} : { maxSkewSeconds }) })

t.test('a ticket push: checked, decrypted, read', async (t) => {
  const input = push(ticketPush())
  const checked = check(input)
  t.same(checked, {
    event: { type: 'component_verify_ticket', appId: APP_ID, createTime: 1713424427, ticket: TICKET },
    replayId: createHash('sha256').update(/CDATA\[([^\]]+)\]/.exec(input.body.split('Encrypt>')[1]!)![1]!).digest('hex').slice(0, 32),
    timestamp: Number(TIMESTAMP),
    previousKey: false
  })
  t.equal(check({ ...input, body: Buffer.from(input.body) }).event.type, 'component_verify_ticket', 'the body as bytes')
  t.equal(check({ ...input, query: { ...input.query, msg_signature: input.query.msg_signature.toUpperCase() } }).replayId,
    checked.replayId, 'the replay id is the message\'s, however the signature was sent')
  t.not(check(push(ticketPush())).replayId, checked.replayId, 'another push (other random bytes), another replay id')
  // WeChat's outer body for components carries AppId rather than ToUserName; neither is covered by the signature.
  const withAppId = push(ticketPush(), { outer: (sealed) => `<xml><AppId><![CDATA[${APP_ID}]]></AppId><Encrypt><![CDATA[${sealed}]]></Encrypt></xml>` })
  t.equal(check(withAppId).event.type, 'component_verify_ticket')
  // Sent under the previous EncodingAESKey, during a key change.
  const sealedOld = encrypt(ticketPush(), new AesKey(OLD_KEY), APP_ID)
  t.equal(check(push('', { sealed: sealedOld })).event.type, 'component_verify_ticket', 'under the previous key')
  t.equal(check(push('', { sealed: sealedOld })).previousKey, true, 'and said so')
  // Sealed by @wecom/crypto and signed by it.
  const sealedWecom = wecom.encrypt(KEY, ticketPush('ticket@@@12345'), APP_ID)
  const viaWecom = { query: { timestamp: TIMESTAMP, nonce: NONCE, msg_signature: wecom.getSignature(TOKEN, TIMESTAMP, NONCE, sealedWecom) }, body: `<xml><Encrypt>${sealedWecom}</Encrypt></xml>` }
  t.same(check(viaWecom).event, { type: 'component_verify_ticket', appId: APP_ID, createTime: 1713424427, ticket: 'ticket@@@12345' })
  t.same(parseEvent(ticketPush('1234567890')), { type: 'component_verify_ticket', appId: APP_ID, createTime: 1713424427, ticket: '1234567890' }, 'digits stay a string')
})

t.test('authorization events', async (t) => {
  const base = { AppId: APP_ID, CreateTime: '1713424428' }
  const authorized = { ...base, InfoType: 'authorized', AuthorizerAppid: AUTHORIZER, AuthorizationCode: AUTH_CODE, AuthorizationCodeExpiredTime: '1713428028', PreAuthCode: PRE_AUTH_CODE }
  t.same(check(push(eventXml(authorized))).event, {
    type: 'authorized', appId: APP_ID, createTime: 1713424428, authorizerAppId: AUTHORIZER, authorizationCode: AUTH_CODE, authorizationCodeExpiredTime: 1713428028, preAuthCode: PRE_AUTH_CODE
  })
  const { PreAuthCode, ...withoutPreAuthCode } = authorized
  t.ok(PreAuthCode)
  t.same(check(push(eventXml({ ...withoutPreAuthCode, InfoType: 'updateauthorized' }))).event, {
    type: 'updateauthorized', appId: APP_ID, createTime: 1713424428, authorizerAppId: AUTHORIZER, authorizationCode: AUTH_CODE, authorizationCodeExpiredTime: 1713428028
  }, 'PreAuthCode may be absent')
  t.same(check(push(eventXml({ ...base, InfoType: 'unauthorized', AuthorizerAppid: AUTHORIZER }))).event, {
    type: 'unauthorized', appId: APP_ID, createTime: 1713424428, authorizerAppId: AUTHORIZER
  })
  t.same(check(push(eventXml({ ...base, InfoType: 'notify_third_fasteregister', status: '0' }))).event, {
    type: 'other', appId: APP_ID, createTime: 1713424428, infoType: 'notify_third_fasteregister'
  }, 'an InfoType not acted on is read, to be answered')

  for (const [what, fields] of [
    ['authorized without AuthorizationCode', { ...base, InfoType: 'authorized', AuthorizerAppid: AUTHORIZER, AuthorizationCodeExpiredTime: '1713428028' }],
    ['authorized with an AuthorizerAppid that is no appId', { ...authorized, AuthorizerAppid: 'wx123' }],
    ['authorized with a PreAuthCode that is empty', { ...authorized, PreAuthCode: '' }],
    ['authorized with an expiry that is not seconds', { ...authorized, AuthorizationCodeExpiredTime: '17134e3' }],
    ['unauthorized without AuthorizerAppid', { ...base, InfoType: 'unauthorized' }],
    ['a ticket push without its ticket', { ...base, InfoType: 'component_verify_ticket' }],
    ['a ticket with an entity in it (left undecoded, so refused)', { ...base, InfoType: 'component_verify_ticket', ComponentVerifyTicket: 'ticket@@@a&amp;b' }],
    ['a ticket with a space', { ...base, InfoType: 'component_verify_ticket', ComponentVerifyTicket: 'ticket@@@a b' }],
    ['no InfoType', { ...base }],
    ['an InfoType of another form', { ...base, InfoType: 'Component Verify Ticket' }],
    ['no CreateTime', { AppId: APP_ID, InfoType: 'unauthorized', AuthorizerAppid: AUTHORIZER }]
  ] as const) {
    t.equal(pushRefusal(() => check(push(eventXml(fields)))), 'bad-shape', what)
  }
  t.equal(pushRefusal(() => check(push(ticketPush().replace('</InfoType>', '</InfoType><InfoType>authorized</InfoType>')))), 'bad-shape', 'two InfoType')
  // Outside CDATA a reference is left as written (entities are not processed), and a ticket has no &.
  const referenced = ticketPush().replace(`<![CDATA[${TICKET}]]>`, 'ticket@@@&lt;&gt;')
  t.equal(pushRefusal(() => check(push(referenced))), 'bad-shape', 'character references are not decoded')
  t.equal(pushRefusal(() => check(push(eventXml({ ...base, AppId: 'wx00000000000000aa', InfoType: 'unauthorized', AuthorizerAppid: AUTHORIZER })))),
    'appid-mismatch', 'a message naming another component, though encrypted for this one')
})

t.test('a push whose signature or encryption is wrong is refused, before anything is decrypted', async (t) => {
  const input = push(ticketPush())
  const other = new WXBizMsgCrypt(TOKEN + 'x', KEY, APP_ID)
  const sealed = wechat.encrypt(ticketPush())
  t.equal(pushRefusal(() => check({ ...input, query: { ...input.query, msg_signature: other.getSignature(TIMESTAMP, NONCE, sealed) } })), 'bad-signature', 'signed with another token')
  t.equal(pushRefusal(() => check({ ...input, query: { ...input.query, nonce: NONCE + '1' } })), 'bad-signature', 'another nonce')
  t.equal(pushRefusal(() => check({ ...input, query: { ...input.query, timestamp: String(Number(TIMESTAMP) + 1) } })), 'bad-signature', 'another timestamp')
  const otherFirst = (c: string): string => c === 'A' ? 'B' : 'A'
  t.equal(pushRefusal(() => check({ ...input, body: input.body.replace(/(Encrypt><!\[CDATA\[)(.)/, (_, open: string, c: string) => open + otherFirst(c)) })), 'bad-signature', 'another Encrypt')
  // Signed with the right token, so what decryption says is what the push gets.
  const stranger = encrypt(ticketPush(), new AesKey(OTHER_KEY), APP_ID, FIXED_RANDOM)
  t.equal(pushRefusal(() => check(push('', { sealed: stranger }))), 'bad-padding', 'under a key this component does not have')
  t.equal(pushRefusal(() => check(push('', { sealed: 'not base64!' }))), 'bad-shape', 'no Encrypt of base64 characters: not even signature-checked')
  t.equal(pushRefusal(() => check(push('', { sealed: 'AB=CDEFG' }))), 'bad-base64', 'base64 characters that are not base64')
  const truncated = Buffer.from(wechat.encrypt(ticketPush()), 'base64').subarray(0, 100).toString('base64')
  t.equal(pushRefusal(() => check(push('', { sealed: truncated }))), 'bad-length', 'truncated')
  const forAnother = encrypt(ticketPush(), new AesKey(KEY), 'wx00000000000000aa')
  t.equal(pushRefusal(() => check(push('', { sealed: forAnother }))), 'appid-mismatch', 'encrypted for another appId')
})

t.test('a stale or future timestamp is refused; one within the skew is not', async (t) => {
  const at = (offset: number) => push(ticketPush(), { timestamp: String(NOW / 1000 + offset) })
  t.equal(pushRefusal(() => check(at(-301))), 'stale-timestamp')
  t.equal(pushRefusal(() => check(at(-86_400))), 'stale-timestamp')
  t.equal(pushRefusal(() => check(at(301))), 'future-timestamp')
  t.equal(check(at(-300)).event.type, 'component_verify_ticket', '300 s old')
  t.equal(check(at(300)).event.type, 'component_verify_ticket', '300 s ahead')
  t.equal(pushRefusal(() => check(at(-61), 60)), 'stale-timestamp', 'maxSkewSeconds')
  t.equal(check(at(-60), 60).event.type, 'component_verify_ticket')
  // A stale push with a bad signature is refused for its timestamp: the cheap check first.
  t.equal(pushRefusal(() => check({ ...at(-301), body: '<xml><Encrypt>AAAA</Encrypt></xml>' })), 'stale-timestamp')
})

t.test('a query without its fields, or with them malformed or repeated, is refused', async (t) => {
  const { query, body } = push(ticketPush())
  const { timestamp, nonce, msg_signature: msgSignature } = query
  for (const [what, q] of [
    ['no timestamp', { nonce, msg_signature: msgSignature }],
    ['no nonce', { timestamp, msg_signature: msgSignature }],
    ['no msg_signature (only signature)', { timestamp, nonce, signature: msgSignature }],
    ['a timestamp in milliseconds with a dot', { timestamp: `${timestamp}.5`, nonce, msg_signature: msgSignature }],
    ['a negative timestamp', { timestamp: `-${timestamp}`, nonce, msg_signature: msgSignature }],
    ['a repeated timestamp', { timestamp: [timestamp, timestamp], nonce, msg_signature: msgSignature }],
    ['a nonce with a space', { timestamp, nonce: 'a b', msg_signature: msgSignature }],
    ['a signature of 39 hex digits', { timestamp, nonce, msg_signature: msgSignature.slice(1) }],
    ['a signature that is not hex', { timestamp, nonce, msg_signature: 'g'.repeat(40) }]
  ] as const) {
    t.equal(pushRefusal(() => check({ query: q, body })), 'bad-query', what)
  }
})

t.test('hostile or malformed XML is refused with its reason, before any entity is read or expanded', async (t) => {
  const { query, body } = push(ticketPush())
  const sealed = /CDATA\[([^\]]+)\]/.exec(body.split('Encrypt>')[1]!)![1]!
  const laughs = '<!DOCTYPE xml [<!ENTITY lol "lol">' +
    Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i === 0 ? '' : i};`.repeat(10)}">`).join('') + ']>'
  const cases: Array<[string, string | Buffer, PushReason]> = [
    // An Encrypt that is not base64 is no push: refused before anything is parsed (or its signature even checked).
    ['billion laughs', `${laughs}<xml><Encrypt>&lol9;</Encrypt></xml>`, 'bad-shape'],
    ['billion laughs after the root', `<xml><Encrypt>${sealed}</Encrypt></xml>${laughs}`, 'declaration'],
    ['an external entity', '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Encrypt>&xxe;</Encrypt></xml>', 'bad-shape'],
    ['an external entity beside a signed Encrypt', `<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Encrypt>${sealed}</Encrypt><X>&xxe;</X></xml>`, 'declaration'],
    ['an external DTD', `<!DOCTYPE xml SYSTEM "http://127.0.0.1:1/evil.dtd"><xml><Encrypt>${sealed}</Encrypt></xml>`, 'declaration'],
    ['a parameter entity', `<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://127.0.0.1:1/p">%p;]><xml><Encrypt>${sealed}</Encrypt></xml>`, 'declaration'],
    ['a lower-case doctype', `<!doctype xml><xml><Encrypt>${sealed}</Encrypt></xml>`, 'declaration'],
    ['an ENTITY without a DOCTYPE', `<xml><!ENTITY a "b"><Encrypt>${sealed}</Encrypt></xml>`, 'declaration'],
    ['oversized', `<xml><Encrypt>${sealed}</Encrypt>${' '.repeat(MAX_PUSH_BYTES)}</xml>`, 'too-large'],
    ['oversized as bytes', Buffer.from(`<xml><Encrypt>${sealed}</Encrypt>${' '.repeat(MAX_PUSH_BYTES)}</xml>`), 'too-large'],
    ['oversized in multi-byte characters (counted in bytes)', `<xml><Encrypt>${sealed}</Encrypt><X>${'中'.repeat(MAX_PUSH_BYTES / 3)}</X></xml>`, 'too-large'],
    ['nested 1,000 deep', `<xml><Encrypt>${sealed}</Encrypt>${'<a>'.repeat(1000)}${'</a>'.repeat(1000)}</xml>`, 'too-deep'],
    ['nested 5,000 deep (over the size cap)', `<xml><Encrypt>${sealed}</Encrypt>${'<a>'.repeat(5000)}${'</a>'.repeat(5000)}</xml>`, 'too-large'],
    ['nested 3 deep', `<xml><Encrypt>${sealed}</Encrypt><a><b>c</b></a></xml>`, 'too-deep'],
    ['an Encrypt with an element in it', `<xml><Encrypt><a>${sealed}</a></Encrypt></xml>`, 'bad-shape'],
    ['no Encrypt', `<xml><ToUserName>${APP_ID}</ToUserName></xml>`, 'bad-shape'],
    ['an empty Encrypt', '<xml><Encrypt></Encrypt></xml>', 'bad-shape'],
    ['two Encrypt', `<xml><Encrypt>${sealed}</Encrypt><Encrypt>${sealed}</Encrypt></xml>`, 'bad-shape'],
    ['two xml roots (two Encrypt fields: refused before parsing)', `<xml><Encrypt>${sealed}</Encrypt></xml><xml><Encrypt>${sealed}</Encrypt></xml>`, 'bad-shape'],
    ['two xml roots, one Encrypt (the validator refuses them)', `<xml><Encrypt>${sealed}</Encrypt></xml><xml><X>y</X></xml>`, 'malformed-xml'],
    ['another root after xml (the validator lets it through)', `<xml><Encrypt>${sealed}</Encrypt></xml><other/>`, 'bad-shape'],
    ['another root', `<root><Encrypt>${sealed}</Encrypt></root>`, 'bad-shape'],
    ['text beside the elements', `<xml>text<Encrypt>${sealed}</Encrypt></xml>`, 'bad-shape'],
    ['a root with text only', `<xml>${sealed}</xml>`, 'bad-shape'],
    ['unclosed', `<xml><Encrypt>${sealed}</Encrypt>`, 'malformed-xml'],
    ['mismatched', `<xml><Encrypt>${sealed}</Encrypt></xm>`, 'malformed-xml'],
    ['not XML', 'Encrypt=' + sealed, 'bad-shape'],
    ['JSON', JSON.stringify({ Encrypt: sealed }), 'bad-shape'],
    ['empty', '', 'bad-shape'],
    ['not UTF-8 in the Encrypt', Buffer.concat([Buffer.from('<xml><Encrypt>'), Buffer.of(0xc3, 0x28), Buffer.from('</Encrypt></xml>')]), 'bad-shape'],
    ['not UTF-8 beside a signed Encrypt', Buffer.concat([Buffer.from(`<xml><Encrypt>${sealed}</Encrypt><X>`), Buffer.of(0xc3, 0x28), Buffer.from('</X></xml>')]), 'malformed-xml'],
    ['a __proto__ element', `<xml><__proto__><Encrypt>${sealed}</Encrypt></__proto__></xml>`, 'malformed-xml']
  ]
  for (const [what, hostile, reason] of cases) {
    t.equal(pushRefusal(() => check({ query, body: hostile })), reason, what)
  }
  // The cap is the limit, not less: a body of exactly MAX_PUSH_BYTES is read.
  const wrapped = `<xml><Encrypt>${sealed}</Encrypt></xml>`
  const atCap = wrapped.replace('</xml>', ' '.repeat(MAX_PUSH_BYTES - wrapped.length) + '</xml>')
  t.equal(Buffer.byteLength(atCap), MAX_PUSH_BYTES)
  t.equal(check({ query, body: atCap }).event.type, 'component_verify_ticket', 'exactly MAX_PUSH_BYTES')
  t.equal(check({ query, body: `<?xml version="1.0" encoding="utf-8"?>\n<!-- WeChat -->${body}` }).event.type, 'component_verify_ticket', 'a declaration of version and a comment are no DOCTYPE')
  t.equal(({} as Record<string, unknown>).Encrypt, undefined, 'nothing polluted')
})

t.test('hostile XML inside a rightly signed and encrypted message is refused the same way', async (t) => {
  const laughs = '<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
  for (const [what, message, reason] of [
    ['entities', `${laughs}${ticketPush('&b;')}`, 'declaration'],
    ['deep', ticketPush().replace('</xml>', `${'<a>'.repeat(1000)}${'</a>'.repeat(1000)}</xml>`), 'too-deep'],
    ['oversized', ticketPush().replace('</xml>', `${' '.repeat(MAX_PUSH_BYTES)}</xml>`), 'too-large'],
    ['not XML', 'component_verify_ticket=' + TICKET, 'malformed-xml']
  ] as const) {
    t.equal(pushRefusal(() => check(push(message))), reason, what)
    t.equal(pushRefusal(() => parseEvent(message)), reason, `${what}, read alone`)
  }
  t.equal(pushRefusal(() => parseEnvelope(`<!DOCTYPE x><xml><Encrypt>${TICKET}</Encrypt></xml>`)), 'declaration', 'the envelope read alone')
  t.same(parseEnvelope(`<xml><Encrypt>${TICKET}</Encrypt></xml>`), { encrypt: TICKET })
})

t.test('no error, and no view of the component, shows a key, the token, a ticket or code, the message or the ciphertext', async (t) => {
  t.ok(refusals.length >= 100, `${refusals.length} refusals collected`)
  t.ok(refusals.some((e) => e instanceof PushError) && refusals.some((e) => e instanceof MsgCryptoError), 'refusals of both kinds')
  const sealed = encrypt(ticketPush(), current, APP_ID, FIXED_RANDOM)
  const component = componentCrypto({ appId: APP_ID, token: TOKEN, encodingAESKey: KEY, previousEncodingAESKey: OLD_KEY })
  const keyBytes = (k: string): string[] => {
    const bytes = Buffer.from(k + '=', 'base64')
    return [bytes.toString('hex'), bytes.toString('base64').slice(0, 40), bytes.subarray(0, 16).toString('hex')]
  }
  const secrets = [KEY, OLD_KEY, ...keyBytes(KEY), ...keyBytes(OLD_KEY), TOKEN, TICKET, AUTH_CODE, PRE_AUTH_CODE,
    'component_verify_ticket', '<![CDATA[', sealed.slice(0, 40)]
  const views = [
    ...refusals.flatMap((e) => [e.message, e.stack ?? '', inspect(e, { depth: 5 }), JSON.stringify(e)]),
    inspect(component, { depth: 5, showHidden: true }), JSON.stringify(component),
    inspect(current, { depth: 5, showHidden: true }), JSON.stringify({ current })
  ]
  for (const secret of secrets) {
    t.notOk(views.some((view) => view.includes(secret)), `no view shows ${secret.slice(0, 6)}…`)
  }
  // The checks above look for the right strings: the secrets are there to be found where they are.
  t.ok(inspect({ KEY, TOKEN }).includes(KEY))
})
