/**
 * WeChat's message crypto for the pushes a third-party platform (a component) receives (WXBizMsgCrypt):
 * - msg_signature = SHA-1 hex of the token, timestamp, nonce and Encrypt, sorted and joined;
 * - Encrypt = base64 of AES-256-CBC under key = base64-decode(EncodingAESKey + "="), iv = the key's first 16 bytes,
 *   over 16 random bytes, the message's length (4 bytes, big-endian), the message and the component appId, padded by
 *   PKCS#7 to a multiple of 32 bytes (not AES's 16: WeChat's own samples pad to 32).
 * The signature must be checked before anything is decrypted: it is what authenticates the ciphertext, and the
 * decryption's distinct failures would otherwise tell a sender about the padding (a padding oracle).
 * No error here repeats the key, the token, the ciphertext or the plaintext; only the reason.
 */
import { createCipheriv, createDecipheriv, hash, randomBytes, timingSafeEqual } from 'node:crypto'
import { inspect } from 'node:util'

/** Why a message was refused; the only detail an error carries. */
export type MsgCryptoReason = 'bad-signature' | 'bad-base64' | 'bad-length' | 'bad-padding' | 'bad-utf8' | 'appid-mismatch'

/** What each refusal says: fixed texts. */
export const MSG_CRYPTO_MESSAGES: Readonly<Record<MsgCryptoReason, string>> = {
  'bad-signature': 'msg_signature does not match the token, timestamp, nonce and Encrypt',
  'bad-base64': 'Encrypt is not base64',
  'bad-length': 'Encrypt is not whole 32-byte blocks, or its length field does not fit what it decrypts to',
  'bad-padding': 'Encrypt does not decrypt with the EncodingAESKey (or the previous one): its PKCS#7 padding is wrong',
  'bad-utf8': 'Encrypt decrypts to a message that is not UTF-8',
  'appid-mismatch': 'Encrypt decrypts to a message for another appId'
}

export class MsgCryptoError extends Error {
  readonly reason: MsgCryptoReason

  constructor (reason: MsgCryptoReason) {
    super(MSG_CRYPTO_MESSAGES[reason])
    this.name = 'MsgCryptoError'
    this.reason = reason
  }
}

const BLOCK = 32
const RANDOM = 16
const LENGTH = 4
const ENCODING_AES_KEY = /^[A-Za-z0-9+/]{43}$/
const SIGNATURE = /^[0-9a-fA-F]{40}$/
const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * An EncodingAESKey decoded: the AES key and its iv. The bytes sit in a private field, so that neither util.inspect
 * (a log line, a test's diff) nor JSON.stringify shows them.
 */
export class AesKey {
  readonly #key: Buffer

  /** `name` is the setting the key came from, for the error: the key itself is never repeated. */
  constructor (encodingAESKey: string, name = 'EncodingAESKey') {
    // WeChat's console draws 43 characters of [A-Za-z0-9]: the last one's low 2 bits are not part of the key and
    // need not be 0, so the text is not checked to be canonical base64, only to be 43 base64 characters.
    const key = ENCODING_AES_KEY.test(encodingAESKey) ? Buffer.from(encodingAESKey + '=', 'base64') : undefined
    if (key?.length !== 32) {
      throw new Error(`${name} must be 43 characters of base64 (A-Z, a-z, 0-9, + and /), as WeChat's console gives it`)
    }
    this.#key = key
  }

  /** @internal for encrypt and decrypt below. */
  cipher (): Cipher {
    return { key: this.#key, iv: this.#key.subarray(0, 16) }
  }

  toJSON (): string {
    return '[AesKey]'
  }

  [inspect.custom] (): string {
    return '[AesKey]'
  }
}

interface Cipher { key: Buffer, iv: Buffer }

/** The keys a component's pushes are decrypted with: the current one, then the previous one during a key change. */
export interface AesKeys {
  current: AesKey
  previous?: AesKey | undefined
}

/** msg_signature: SHA-1 hex of the four strings sorted (by UTF-16 code unit, which is bytewise for ASCII) and joined. */
export function signature (token: string, timestamp: string, nonce: string, encrypt: string): string {
  return hash('sha1', [token, timestamp, nonce, encrypt].sort().join(''), 'hex')
}

/** Whether a presented msg_signature equals the expected one, compared in constant time (hex in either case). */
export function signatureMatches (expected: string, presented: string): boolean {
  if (!SIGNATURE.test(presented) || !SIGNATURE.test(expected)) return false
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(presented, 'hex'))
}

/** Encrypt as WeChat sends it: for the stand-in and the tests. `random` is the 16 leading bytes (random if not given). */
export function encrypt (message: string, key: AesKey, appId: string, random: Buffer = randomBytes(RANDOM)): string {
  if (random.length !== RANDOM) throw new Error(`random must be ${RANDOM} bytes`)
  const body = Buffer.from(message, 'utf8')
  const length = Buffer.alloc(LENGTH)
  length.writeUInt32BE(body.length)
  const unpadded = Buffer.concat([random, length, body, Buffer.from(appId, 'utf8')])
  const pad = BLOCK - (unpadded.length % BLOCK)
  const { key: bytes, iv } = key.cipher()
  const cipher = createCipheriv('aes-256-cbc', bytes, iv).setAutoPadding(false)
  return Buffer.concat([cipher.update(Buffer.concat([unpadded, Buffer.alloc(pad, pad)])), cipher.final()]).toString('base64')
}

/** The ciphertext's bytes: base64 that encodes back to the same text (padding aside), whole 32-byte blocks. */
function ciphertext (encrypted: string): Buffer {
  const bytes = Buffer.from(encrypted, 'base64')
  // Node's decoder skips what is not base64; encoding back shows whether anything was skipped.
  if (bytes.length === 0 || bytes.toString('base64').replace(/=+$/, '') !== encrypted.replace(/=+$/, '')) {
    throw new MsgCryptoError('bad-base64')
  }
  if (bytes.length % BLOCK !== 0) throw new MsgCryptoError('bad-length')
  return bytes
}

/** The message under one key, or the reason it is not one. */
function decryptWith (bytes: Buffer, key: AesKey, appId: string): string {
  const { key: aes, iv } = key.cipher()
  const decipher = createDecipheriv('aes-256-cbc', aes, iv).setAutoPadding(false)
  const plain = Buffer.concat([decipher.update(bytes), decipher.final()])
  try {
    // PKCS#7 to 32 checked strictly: 1 to 32, every padding byte the same. WeChat's samples (and the npm ports) strip
    // what the last byte says, or nothing, and never fail here; checked strictly, a wrong key fails here but about
    // one time in 255, and the length and appId checks below catch that one.
    const pad = plain[plain.length - 1]!
    if (pad < 1 || pad > BLOCK || !plain.subarray(plain.length - pad).every((byte) => byte === pad)) {
      throw new MsgCryptoError('bad-padding')
    }
    const end = plain.length - pad
    if (end < RANDOM + LENGTH) throw new MsgCryptoError('bad-length')
    const length = plain.readUInt32BE(RANDOM)
    const start = RANDOM + LENGTH
    if (length > end - start) throw new MsgCryptoError('bad-length')
    const expected = Buffer.from(appId, 'utf8')
    const owner = plain.subarray(start + length, end)
    if (!owner.equals(expected)) throw new MsgCryptoError('appid-mismatch')
    try {
      return utf8.decode(plain.subarray(start, start + length))
    } catch {
      throw new MsgCryptoError('bad-utf8')
    }
  } finally {
    plain.fill(0)
  }
}

/**
 * How far a decryption got before it failed: under two keys, the failure that got further names the reason (a wrong
 * key fails at the padding; the right key with another appId fails at the appId).
 */
const PROGRESS: Record<MsgCryptoReason, number> = {
  'bad-signature': 0, 'bad-base64': 0, 'bad-padding': 1, 'bad-length': 2, 'appid-mismatch': 3, 'bad-utf8': 4
}

/**
 * The message of an Encrypt field, for `appId`: under the current key, else under the previous one when given (WeChat
 * advises keeping it while a key change reaches its servers). Check the msg_signature first.
 */
export function decrypt (encrypted: string, keys: AesKeys, appId: string, onPrevious?: () => void): string {
  const bytes = ciphertext(encrypted)
  try {
    return decryptWith(bytes, keys.current, appId)
  } catch (error) {
    if (keys.previous === undefined || !(error instanceof MsgCryptoError)) throw error
    try {
      const message = decryptWith(bytes, keys.previous, appId)
      onPrevious?.()
      return message
    } catch (again) {
      if (!(again instanceof MsgCryptoError)) throw again
      throw PROGRESS[again.reason] > PROGRESS[error.reason] ? again : error
    }
  }
}

/** A component's settings, as WECHAT_COMPONENTS lists them (the appSecret aside: it plays no part here). */
export interface ComponentCryptoConfig {
  appId: string
  token: string
  encodingAESKey: string
  previousEncodingAESKey?: string | undefined
}

/** One component's message crypto: its token and keys held in a closure, never on the object (nothing to log). */
export interface ComponentCrypto {
  readonly appId: string
  signature (timestamp: string, nonce: string, encrypt: string): string
  /** Whether msg_signature is the one for these fields (constant time). */
  verify (timestamp: string, nonce: string, encrypt: string, msgSignature: string): boolean
  /** The message, or a MsgCryptoError. Call verify first. `onPrevious` is called when the previous key decrypted it. */
  decrypt (encrypt: string, onPrevious?: () => void): string
  /** Encrypt under the current key, as WeChat does: for the stand-in and the tests. */
  encrypt (message: string, random?: Buffer): string
}

/** A component's crypto; throws a plain Error naming the setting (never its value) when a key or the token is unusable. */
export function componentCrypto (config: ComponentCryptoConfig): ComponentCrypto {
  const { appId, token } = config
  if (typeof appId !== 'string' || appId === '') throw new Error('The component appId must be a non-empty string')
  if (typeof token !== 'string' || token === '') throw new Error('The component token must be a non-empty string')
  const keys: AesKeys = {
    current: new AesKey(config.encodingAESKey, 'encodingAESKey'),
    previous: config.previousEncodingAESKey === undefined
      ? undefined
      : new AesKey(config.previousEncodingAESKey, 'previousEncodingAESKey')
  }
  return {
    appId,
    signature: (timestamp, nonce, encrypted) => signature(token, timestamp, nonce, encrypted),
    verify: (timestamp, nonce, encrypted, msgSignature) =>
      signatureMatches(signature(token, timestamp, nonce, encrypted), msgSignature),
    decrypt: (encrypted, onPrevious) => decrypt(encrypted, keys, appId, onPrevious),
    encrypt: (message, random) => encrypt(message, keys.current, appId, random)
  }
}
