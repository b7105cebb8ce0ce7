/**
 * /docs in a real browser (Debian's chromium, driven by playwright-core): every route is listed, and "Try it out" on
 * the token route reaches the service and shows the envelope with the token the WeChat stand-in issued.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { chromium } from 'playwright-core'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'

const CHROMIUM = '/usr/bin/chromium'

t.test('the interactive docs list every route and run "Try it out" on the token route', async (t) => {
  t.ok(existsSync(CHROMIUM), `${CHROMIUM} is installed (.ci/run installs Debian's chromium)`)
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] })
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  const requested = new Set<string>()
  page.on('request', (request) => requested.add(new URL(request.url()).origin))
  await page.goto(`${base}/docs`)
  await page.waitForSelector('.opblock', { timeout: 30_000 })

  const listed = await page.$$eval('.opblock-summary-path, .opblock-summary-path__deprecated', (nodes) => nodes.map((node) => node.getAttribute('data-path') ?? node.textContent?.trim()))
  t.same([...listed].sort(), [
    '/api/v3/decrypt-wechat-miniprogram-data', '/api/v3/exchange-authorization-code', '/api/v3/get-authorizer-access-token',
    '/api/v3/get-authorizer-jsapi-ticket', '/api/v3/get-authorizer-jssdk-signature', '/api/v3/get-component-access-token', '/api/v3/get-component-pre-auth-code', '/api/v3/get-wechat-access-token', '/api/v3/get-wechat-access-token-info', '/api/v3/get-wechat-jsapi-ticket',
    '/api/v3/get-wechat-jssdk-signature', '/api/v3/get-wechat-miniprogram-phone', '/api/v3/get-wecom-access-token', '/api/v3/get-wecom-jsapi-ticket',
    '/api/v3/get-wecom-jssdk-signature', '/api/v3/refresh-wechat-access-token',
    '/health/live', '/health/ready', '/metrics'
  ], 'every route is listed')
  t.ok(await page.$('.opblock-deprecated'), 'the obsolete route is shown as deprecated')

  const operation = page.locator('#operations-tokens-getWechatAccessTokenInfo')
  await operation.locator('.opblock-summary').click()
  await operation.locator('.try-out__btn').click()
  await operation.locator('textarea.body-param__text').fill(JSON.stringify({ appId: APP_ID, appSecret: APP_SECRET }))
  await operation.locator('.execute').click()
  const shown = operation.locator('.live-responses-table .response-col_description pre').first()
  await shown.waitFor({ timeout: 30_000 })
  const envelope = JSON.parse(await shown.innerText()) as { statusCode: number, data?: { accessToken: string } }
  t.equal(envelope.statusCode, 200, 'a 200 envelope')
  t.equal(envelope.data?.accessToken, mock.issuedTokens()[0], 'with the token WeChat issued')
  t.equal(mock.issued(APP_ID), 1)
  t.same([...requested], [base], 'the page loaded nothing from another origin')
})
