/** wechat-crypto (node-webot's WXBizMsgCrypt port) ships no types: the part the tests drive. */
declare module 'wechat-crypto' {
  class WXBizMsgCrypt {
    constructor (token: string, encodingAESKey: string, id: string)
    getSignature (timestamp: string, nonce: string, encrypt: string): string
    decrypt (text: string): { message: string, id: string }
    encrypt (text: string): string
  }
  export default WXBizMsgCrypt
}
