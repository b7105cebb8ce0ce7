/** The parts of the WeChat SDKs from npm that the tests drive (they ship no types of their own). */
declare module 'wechat-api' {
  type Callback<T> = (err: Error | null, result: T) => void
  class WechatAPI {
    constructor (appid: string, appsecret: string)
    endpoint: string
    setOpts (opts: { beforeRequest?: (options: { headers: Record<string, string> }) => void, timeout?: number }): void
    getLatestToken (callback: Callback<{ accessToken: string, expireTime: number }>): void
    getIp (callback: Callback<{ ip_list: string[] }>): void
    getTicket (type: string, callback: Callback<{ ticket: string, expireTime: number }>): void
    getMenu (callback: Callback<{ menu: { button: unknown[] } }>): void
    sendText (openid: string, text: string, callback: Callback<{ errcode: number, errmsg: string }>): void
  }
  export default WechatAPI
}

declare module 'wechat-enterprise-api' {
  type Callback<T> = (err: Error | null, result: T) => void
  class WechatEnterpriseAPI {
    constructor (corpid: string, secret: string, agentid: string | number)
    prefix: string
    setOpts (opts: { beforeRequest?: (options: { headers: Record<string, string> }) => void, timeout?: number }): void
    getLatestToken (callback: Callback<{ accessToken: string }>): void
    getUser (userid: string, callback: Callback<{ errcode: number, userid: string, name: string }>): void
  }
  export default WechatEnterpriseAPI
}
