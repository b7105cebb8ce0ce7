/**
 * Prints a body for the decrypt route as a Mini Program would send it with `npm run demo`: a demo wx.login code
 * (`demo-…`, which the built-in stand-in answers once, with a session key derived from the code) and sample user info
 * encrypted under that key, the way WeChat encrypts it.
 *
 *   npm run -s demo:open-data -- <code demo-…> <appId> <extIdpConnidentifier>
 */
import { demoSessionKey, encryptOpenData } from '../src/stand-in/wechat.js'

const [code = `demo-${Date.now()}`, appId = 'wx0123456789abcdef', identifier = 'demo'] = process.argv.slice(2)
if (!/^demo-[A-Za-z0-9_-]{6,64}$/.test(code)) {
  console.error('The code must be demo- and 6 to 64 letters, digits, _ or -')
  process.exit(2)
}
const userInfo = {
  openId: `demo-openid-${code.slice(5)}`,
  nickName: 'Demo user',
  gender: 0,
  language: 'en',
  avatarUrl: 'https://example.com/avatar.png',
  watermark: { timestamp: Math.floor(Date.now() / 1000), appid: appId }
}
console.log(JSON.stringify({ code, ...encryptOpenData(demoSessionKey(code), userInfo), extIdpConnidentifier: identifier }))
