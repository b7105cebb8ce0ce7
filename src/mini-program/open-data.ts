/**
 * Mini Program open data ("encrypted data": user info, the legacy phone number, shared tickets): AES-128-CBC under the
 * user's session key, with the iv WeChat sent along, strict PKCS#7 padding, and a JSON object whose watermark.appid
 * names the Mini Program. What decrypts under another key fails the padding check, or (1 time in 256) gives bytes
 * that are not UTF-8 JSON: both mean the data was encrypted for another session. Nothing here is logged, and no error
 * message repeats an input or the plaintext.
 */
import { createDecipheriv } from 'node:crypto'
import { AppError } from '../errors.js'

/** 16 bytes in standard base64 (padding optional): the iv WeChat hands the Mini Program. */
export const IV_PATTERN = '^[A-Za-z0-9+/]{21}[AQgw](==)?$'
/** Standard base64 characters; that it decodes to whole 16-byte blocks is checked by encryptedBytes. */
export const ENCRYPTED_PATTERN = '^[A-Za-z0-9+/]+={0,2}$'

const BLOCK = 16
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The iv's 16 bytes (the route's schema checked IV_PATTERN). */
export function ivBytes (iv: string): Buffer {
  const bytes = Buffer.from(iv, 'base64')
  if (bytes.length !== BLOCK) throw new AppError('INVALID_ARGUMENT', 'iv must be 16 bytes in base64, as WeChat gives it')
  return bytes
}

/**
 * The encryptedData's bytes: base64 that decodes to one or more whole AES blocks and encodes back to the same text
 * (padding aside), so that no character was skipped.
 */
export function encryptedBytes (encryptedData: string): Buffer {
  const bytes = Buffer.from(encryptedData, 'base64')
  const canonical = bytes.toString('base64').replace(/=+$/, '')
  if (bytes.length === 0 || bytes.length % BLOCK !== 0 || canonical !== encryptedData.replace(/=+$/, '')) {
    throw new AppError('INVALID_ARGUMENT', 'encryptedData must be base64 of whole 16-byte AES blocks, as WeChat gives it')
  }
  return bytes
}

/**
 * How deep the decrypted JSON may nest: WeChat's open data nests two or three levels. Deeper data would overflow the
 * stack of the answer's serializer (JSON.stringify recurses) some thousands of levels down.
 */
export const MAX_DEPTH = 32

/** Whether no object or array in `value` is nested deeper than `max` (walked without recursion). */
function nestedWithin (value: unknown, max: number): boolean {
  const pending: Array<[unknown, number]> = [[value, 1]]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [item, depth] = next
    if (typeof item !== 'object' || item === null) continue
    if (depth > max) return false
    for (const child of Object.values(item)) pending.push([child, depth + 1])
  }
  return true
}

function staleSession (): AppError {
  return new AppError('SESSION_KEY_MISMATCH', 'encryptedData does not decrypt with the session key of this code: it was encrypted for ' +
    'another session. Call wx.login first, then get the encrypted data, and send that code with it')
}

/**
 * The decrypted object, as WeChat encrypted it, watermark included: SESSION_KEY_MISMATCH when it does not decrypt to
 * JSON under this key, DATA_APP_MISMATCH when it is not an object whose watermark.appid is `appId`.
 */
export function decryptOpenData (sessionKey: Buffer, iv: Buffer, encrypted: Buffer, appId: string): Record<string, unknown> {
  let plain: Buffer
  try {
    const decipher = createDecipheriv('aes-128-cbc', sessionKey, iv)
    plain = Buffer.concat([decipher.update(encrypted), decipher.final()])
  } catch {
    throw staleSession() // OpenSSL checks every padding byte: a wrong key fails here 255 times in 256
  }
  let data: unknown
  try {
    data = JSON.parse(utf8.decode(plain))
  } catch {
    throw staleSession()
  } finally {
    plain.fill(0)
  }
  const watermark = typeof data === 'object' && data !== null && !Array.isArray(data)
    ? (data as { watermark?: unknown }).watermark
    : undefined
  const owner = typeof watermark === 'object' && watermark !== null ? (watermark as { appid?: unknown }).appid : undefined
  if (owner !== appId) {
    throw new AppError('DATA_APP_MISMATCH', 'The decrypted data is not for this Mini Program: its watermark.appid is ' +
      (typeof owner === 'string' ? 'another app\'s' : 'missing'))
  }
  if (!nestedWithin(data, MAX_DEPTH)) {
    throw new AppError('DATA_APP_MISMATCH', `The decrypted data is not open data as WeChat encrypts it: it nests deeper than ${MAX_DEPTH} levels`)
  }
  return data as Record<string, unknown>
}
