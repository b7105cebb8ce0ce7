/** Secret fingerprints: a keyed hash stands in for the appSecret wherever it must be remembered. */
import { createHmac } from 'node:crypto'

const KEY = 'wechat-token-cache/secret-fingerprint/v1'

export function fingerprint (appId: string, appSecret: string): string {
  return createHmac('sha256', KEY).update(appId).update('\0').update(appSecret).digest('base64url')
}

/**
 * Fingerprints without recomputing the HMAC for the secret an app was last asked with: the secret is kept in
 * process memory only (never logged or stored) and compared in constant time.
 */
export function createFingerprintCache (maxApps: number) {
  const last = new Map<string, { secret: string, fp: string }>()
  return (appId: string, appSecret: string): string => {
    const kept = last.get(appId)
    if (kept !== undefined && sameString(kept.secret, appSecret)) return kept.fp
    const fp = fingerprint(appId, appSecret)
    if (kept === undefined && last.size >= maxApps) last.delete(last.keys().next().value as string)
    last.set(appId, { secret: appSecret, fp })
    return fp
  }
}

/** Constant-time equality of two strings of the same length (the length itself is not secret). */
export function sameString (a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}
