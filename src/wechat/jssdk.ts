/**
 * The JS-SDK signature WeChat's and WeCom's pages check (wx.config, wx.agentConfig), and the nonces it is made with.
 */
import { hash, randomFillSync } from 'node:crypto'

const NONCE_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
/** Random bytes drawn 4 KB at a time (a call to the system's generator per nonce would cost more than the nonce). */
const pool = Buffer.alloc(4096)
let used = pool.length

function randomByte (): number {
  if (used === pool.length) {
    randomFillSync(pool)
    used = 0
  }
  return pool[used++]!
}

/** 16 random characters of [A-Za-z0-9]: a byte modulo 62, the bytes from 248 up skipped so that none is likelier. */
export function nonce (): string {
  let out = ''
  while (out.length < 16) {
    const byte = randomByte()
    if (byte < 248) out += NONCE_ALPHABET[byte % 62]
  }
  return out
}

/**
 * The wx.config signature (WeChat's JS-SDK documentation, appendix 1): SHA-1 of the four fields in this order, the
 * url without its #fragment and exactly as the page has it (nothing escaped or normalized).
 */
export function jssdkSignature (ticket: string, nonceStr: string, timestamp: number, url: string): string {
  const cut = url.indexOf('#')
  const page = cut === -1 ? url : url.slice(0, cut)
  return hash('sha1', `jsapi_ticket=${ticket}&noncestr=${nonceStr}&timestamp=${timestamp}&url=${page}`, 'hex')
}
