import t from 'tap'
import { loadConfig } from '../src/config.js'

t.test('defaults need nothing from the environment', async (t) => {
  const config = loadConfig({})
  t.equal(config.PORT, 8080)
  t.equal(config.WECHAT_TOKEN_MODE, 'stable')
  t.equal(config.WECHAT_API_BASE, 'https://api.weixin.qq.com')
  t.equal(config.REDIS_URL, undefined, 'no Redis: the memory store')
  t.equal(config.TOKEN_SERVE_MARGIN_SECONDS, 120)
})

t.test('values are coerced from strings; empty values mean unset', async (t) => {
  const config = loadConfig({ PORT: '9000', WECHAT_TOKEN_MODE: 'classic', REDIS_URL: '', WECHAT_MAX_RETRIES: '0' })
  t.equal(config.PORT, 9000)
  t.equal(config.WECHAT_TOKEN_MODE, 'classic')
  t.equal(config.REDIS_URL, undefined)
  t.equal(config.WECHAT_MAX_RETRIES, 0)
})

t.test('a bad value is refused with an error that names the variable', async (t) => {
  const bad: Record<string, string> = {
    PORT: 'eighty',
    WECHAT_TOKEN_MODE: 'fast',
    REDIS_URL: 'localhost:6379',
    WECHAT_API_BASE: 'ftp://x',
    LOG_LEVEL: 'loud',
    WECHAT_MAX_RETRIES: '9',
    REQUEST_DEADLINE_MS: '5'
  }
  for (const [name, value] of Object.entries(bad)) {
    t.throws(() => loadConfig({ [name]: value }), new RegExp(name), `${name}=${value}`)
  }
})
