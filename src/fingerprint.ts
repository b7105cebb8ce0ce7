/** Secret fingerprints: a keyed hash stands in for the appSecret wherever it must be remembered. */
import { createHmac, timingSafeEqual } from 'node:crypto'

const KEY = 'wechat-token-cache/secret-fingerprint/v1'

export function fingerprint (appId: string, appSecret: string): string {
  return createHmac('sha256', KEY).update(appId).update('\0').update(appSecret).digest('base64url')
}

/** Constant-time comparison of two fingerprints. */
export function sameFingerprint (a: string, b: string): boolean {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}

/** Constant-time equality of two strings of the same length (the length itself is not secret). */
export function sameString (a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}
