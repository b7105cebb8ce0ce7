/** Secret fingerprints: a keyed hash stands in for the appSecret wherever it must be remembered. */
import { createHmac } from 'node:crypto'

/**
 * The key used when FINGERPRINT_KEY is not set. It is public (it is in this file), so with it anyone who can write to
 * Redis can write an entry whose fingerprint matches a secret of their own choosing; an operator's own key prevents that.
 */
const DEFAULT_KEY = 'wechat-token-cache/secret-fingerprint/v1'

export function fingerprint (appId: string, appSecret: string, key: string = DEFAULT_KEY): string {
  return createHmac('sha256', key).update(appId).update('\0').update(appSecret).digest('base64url')
}

/**
 * Fingerprints without recomputing the HMAC for the secret an app was last asked with: the secret is kept in
 * process memory only (never logged or stored) and compared in constant time.
 */
export function createFingerprintCache (maxApps: number, key?: string) {
  const last = new Map<string, { secret: string, fp: string }>()
  return (appId: string, appSecret: string): string => {
    const kept = last.get(appId)
    if (kept !== undefined && sameString(kept.secret, appSecret)) return kept.fp
    const fp = fingerprint(appId, appSecret, key)
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
