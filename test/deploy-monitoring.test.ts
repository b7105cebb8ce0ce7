/**
 * The monitoring shipped in deploy/: the Prometheus rules pass promtool (its checks and the unit tests in
 * alerts.test.yml), the Grafana dashboard's queries parse with promtool too, and every metric the rules and the
 * dashboard read is one this service exports, so that renaming a metric breaks this test rather than an alert.
 * promtool comes with Debian's prometheus package (.ci/run installs it); without it this test fails.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { APP_ID, APP_SECRET, build, post, startMock } from './helpers/build.js'

const RULES = fileURLToPath(new URL('../deploy/prometheus/alerts.yml', import.meta.url))
const RULE_TESTS = fileURLToPath(new URL('../deploy/prometheus/alerts.test.yml', import.meta.url))
const DASHBOARD = fileURLToPath(new URL('../deploy/grafana/wechat-token-cache.json', import.meta.url))
/** The job label the rules select (alerts.yml's convention). */
const JOB = 'wechat-token-cache'
/** Prometheus's own series, not the service's. */
const PROMETHEUS_METRICS = new Set(['up'])
/** Grafana's syntax for the data source variable every panel uses. */
const DS_UID = '${DS_PROMETHEUS}' // eslint-disable-line no-template-curly-in-string -- not a JavaScript template

interface Run { code: number, output: string }

/** Runs promtool. Without promtool it throws, failing the test with how to install it: never a skip. */
async function promtool (...args: string[]): Promise<Run> {
  return await new Promise((resolve, reject) => {
    execFile('promtool', args, { timeout: 60_000 }, (err, stdout, stderr) => {
      if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') {
        reject(new Error('promtool is not installed: apt-get install -y prometheus (Debian\'s package has it; .ci/run installs it)'))
        return
      }
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: stdout + stderr })
    })
  })
}

/**
 * The expr of every rule in a rules file written as alerts.yml is: `expr: <one line>` or `expr: |` (or `>-`) with a
 * more indented block. Anything else throws, and the count is checked against the rules promtool found.
 */
function ruleExprs (yaml: string): Array<{ rule: string, expr: string }> {
  const lines = yaml.split('\n')
  const found: Array<{ rule: string, expr: string }> = []
  let rule = ''
  for (let i = 0; i < lines.length; i++) {
    const named = /^\s*- (?:alert|record): (\S+)\s*$/.exec(lines[i]!)
    if (named) rule = named[1]!
    const match = /^(\s*)expr: ?(.*)$/.exec(lines[i]!)
    if (!match) continue
    const indent = match[1]!.length
    const rest = match[2]!.trim()
    if (/^[|>][-+]?$/.test(rest)) {
      const block: string[] = []
      while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || /^\s*/.exec(lines[i + 1]!)![0].length > indent)) block.push(lines[++i]!)
      found.push({ rule, expr: block.join('\n').trim() })
    } else if (rest !== '' && !/^['"]/.test(rest)) {
      found.push({ rule, expr: rest })
    } else {
      throw new Error(`rule ${rule}: an expr this test cannot read: ${rest}`)
    }
  }
  return found
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'inf', 'nan'])
const LABEL_LISTS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'])

/** A metric read by a PromQL expression: its name and its label matchers as written (without the braces). */
interface Selector { name: string, matchers: string }

/**
 * The series selectors of a PromQL expression: identifiers that are not keywords, functions, label lists (by, on,
 * group_left...), durations or strings, with the matchers that follow them.
 */
function selectors (expr: string): Selector[] {
  const token = /("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)|(\{(?:[^}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})|(\[[^\]]*\])|(\d[\w.]*)|([A-Za-z_:][\w:]*)|(\s+)|(.)/g
  const tokens = [...expr.matchAll(token)].map((m) => ({ text: m[0], kind: m[1] ? 'string' : m[2] ? 'braces' : m[3] ? 'range' : m[4] ? 'number' : m[5] ? 'ident' : m[6] ? 'space' : 'other' }))
  const significant = tokens.filter((tk) => tk.kind !== 'space')
  const found: Selector[] = []
  for (let i = 0; i < significant.length; i++) {
    const tk = significant[i]!
    if (tk.kind === 'braces' && (i === 0 || significant[i - 1]!.kind !== 'ident')) throw new Error(`a selector without a metric name in ${expr}`)
    if (tk.kind !== 'ident') continue
    const next = significant[i + 1]
    if (LABEL_LISTS.has(tk.text)) {
      if (next?.text === '(') while (i < significant.length && significant[i]!.text !== ')') i++
      continue
    }
    // A function or an aggregation (`sum(`, `sum by (...) (`), not a metric.
    if (KEYWORDS.has(tk.text.toLowerCase()) || next?.text === '(' || next?.text === 'by' || next?.text === 'without') continue
    found.push({ name: tk.text, matchers: next?.kind === 'braces' ? next.text.slice(1, -1) : '' })
  }
  return found
}

interface Panel { id?: number, type: string, title?: string, datasource?: { type?: string, uid?: string }, targets?: Array<{ expr?: string, refId?: string }>, panels?: Panel[] }
interface Variable { name: string, type: string, query?: string | { query?: string } }
interface Dashboard { title: string, uid: string, schemaVersion: number, panels: Panel[], templating: { list: Variable[] } }

const dashboardText = await readFile(DASHBOARD, 'utf8')
const rulesText = await readFile(RULES, 'utf8')

/** Every panel, the rows' own panels included. */
function allPanels (panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])])
}

/** The dashboard's PromQL: each target's expr, and the selector inside each query variable's label_values(). */
function dashboardExprs (dashboard: Dashboard): Array<{ where: string, expr: string }> {
  const exprs: Array<{ where: string, expr: string }> = []
  for (const panel of allPanels(dashboard.panels)) {
    for (const target of panel.targets ?? []) if (target.expr) exprs.push({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr })
  }
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue
    const query = typeof variable.query === 'string' ? variable.query : variable.query?.query ?? ''
    const inner = /^label_values\((.+),\s*\w+\)$/.exec(query.trim())?.[1]
    if (!inner) throw new Error(`variable ${variable.name}: a query this test cannot read: ${query}`)
    exprs.push({ where: `variable ${variable.name}`, expr: inner })
  }
  return exprs
}

/** Grafana's variables replaced by values Prometheus accepts, so promtool can parse the dashboard's queries. */
function withoutVariables (expr: string): string {
  return expr.replace(/\$__(?:rate_interval|interval|range)\b/g, '5m').replace(/\$\{?(\w+)\}?/g, 'x')
}

t.test('promtool accepts the rules, and their unit tests pass', async (t) => {
  const check = await promtool('check', 'rules', RULES)
  t.equal(check.code, 0, `promtool check rules:\n${check.output}`)
  const count = Number(/SUCCESS: (\d+) rules found/.exec(check.output)?.[1])
  t.equal(ruleExprs(rulesText).length, count, 'this test reads the expr of every rule promtool found')
  const tests = await promtool('test', 'rules', RULE_TESTS)
  t.equal(tests.code, 0, `promtool test rules:\n${tests.output}`)
  t.match(tests.output, /SUCCESS/)
})

t.test('every alert has a severity, a summary and a description, and unit tests where it fires and where it does not', async (t) => {
  const testsText = await readFile(RULE_TESTS, 'utf8')
  const cases = testsText.split(/^\s*- eval_time: /m).slice(1).map((chunk) => ({
    alert: /^\s*alertname: (\S+)\s*$/m.exec(chunk)?.[1],
    fires: /^\s*- exp_labels: /m.test(chunk)
  }))
  const alerts = rulesText.split(/^\s*- alert: /m).slice(1)
  t.ok(alerts.length >= 15, `${alerts.length} alerts`)
  for (const alert of alerts) {
    const name = alert.split('\n')[0]!.trim()
    t.match(alert, /\n\s+severity: (critical|warning)\n/, `${name}: severity`)
    t.match(alert, /\n\s+summary: /, `${name}: summary`)
    t.match(alert, /\n\s+description: /, `${name}: description`)
    t.ok(cases.some((c) => c.alert === name && c.fires), `${name}: a unit test where it fires`)
    t.ok(cases.some((c) => c.alert === name && !c.fires), `${name}: a unit test where it does not`)
  }
})

t.test('the rules select the job by its label, and read only recorded or exported series', async (t) => {
  const recorded = new Set([...rulesText.matchAll(/^\s*- record: (\S+)\s*$/gm)].map((m) => m[1]!))
  for (const { rule, expr } of ruleExprs(rulesText)) {
    for (const { name, matchers } of selectors(expr)) {
      if (name.includes(':')) t.ok(recorded.has(name), `${rule}: ${name} is recorded by a rule`)
      else t.match(matchers, new RegExp(`(^|,)\\s*job="${JOB}"`), `${rule}: ${name} selects job="${JOB}"`)
    }
  }
})

t.test('the dashboard is valid JSON with a data source, a job and an instance variable, and panels with queries', async (t) => {
  const dashboard = JSON.parse(dashboardText) as Dashboard
  t.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion}`)
  t.ok(dashboard.uid && dashboard.title)
  const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]))
  t.match(variables.get('DS_PROMETHEUS'), { type: 'datasource', query: 'prometheus' }, 'a Prometheus data source variable')
  t.equal(variables.get('job')?.type, 'query', 'a job variable')
  t.equal(variables.get('instance')?.type, 'query', 'an instance variable')
  const panels = allPanels(dashboard.panels)
  const ids = panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  const dataPanels = panels.filter((p) => p.type !== 'row')
  t.ok(dataPanels.length >= 10, `${dataPanels.length} panels`)
  for (const panel of dataPanels) {
    t.same(panel.datasource, { type: 'prometheus', uid: DS_UID }, `${panel.title}: the data source variable`)
    t.ok((panel.targets ?? []).length > 0, `${panel.title}: a target`)
    const refIds = (panel.targets ?? []).map((target) => target.refId)
    t.equal(new Set(refIds).size, refIds.length, `${panel.title}: refIds are unique`)
    for (const target of panel.targets ?? []) {
      t.ok(target.expr, `${panel.title} ${target.refId}: an expr`)
      for (const { name, matchers } of selectors(target.expr ?? '')) {
        t.match(matchers, /(^|,)\s*job="\$job"/, `${panel.title} ${target.refId}: ${name} selects job="$job"`)
        t.match(matchers, /instance=~"\$instance"/, `${panel.title} ${target.refId}: ${name} selects the instances`)
      }
    }
  }
})

t.test('promtool parses every query of the dashboard', async (t) => {
  const dashboard = JSON.parse(dashboardText) as Dashboard
  const exprs = dashboardExprs(dashboard)
  const rules = exprs.map(({ expr }, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(withoutVariables(expr))}\n`)
  const dir = await mkdtemp(join(tmpdir(), 'dashboard-queries-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'queries.yml')
  await writeFile(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join('')}`)
  const check = await promtool('check', 'rules', file)
  t.equal(check.code, 0, `promtool check rules on the dashboard's ${exprs.length} queries:\n${check.output}`)
})

t.test('every metric the rules and the dashboard read is exported by the service', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const body = { appId: APP_ID, appSecret: APP_SECRET }
  const token = (await post(app, '/api/v3/get-wechat-access-token-info', body)).body.data!.accessToken
  t.equal((await post(app, '/api/v3/get-wechat-jsapi-ticket', { ...body, type: 'jsapi' })).res.statusCode, 200, 'a ticket')
  // A forced refresh spends the (now verified) app's budget: quota used gets its series.
  await post(app, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: token })
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]))
  t.ok(types.has('wxtoken_token_seconds_left') && types.has('wxtoken_upstream_budget'), 'the exposition was read')

  function exported (name: string): boolean {
    if (types.has(name)) return true
    const base = /^(.+)_(?:bucket|sum|count)$/.exec(name)?.[1]
    return base !== undefined && (types.get(base) === 'histogram' || types.get(base) === 'summary')
  }

  /** The label names a metric's samples carry (a histogram's series under its base name), or none when it has no sample yet. */
  function labelsOf (name: string): Set<string> | undefined {
    const samples = text.split('\n').filter((line) => line.startsWith(`${name}{`))
    if (samples.length === 0) return undefined
    return new Set(samples.flatMap((line) => [...line.slice(name.length).matchAll(/[{,](\w+)="/g)].map((m) => m[1]!)))
  }

  const read = [
    ...ruleExprs(rulesText).map(({ rule, expr }) => ({ where: `rule ${rule}`, expr })),
    ...dashboardExprs(JSON.parse(dashboardText) as Dashboard)
  ]
  // A recorded series has the labels of the metric its rule reads: its matchers are checked against that one.
  const sources = new Map(ruleExprs(rulesText).filter(({ rule }) => rule.includes(':'))
    .map(({ rule, expr }) => [rule, selectors(expr).map((s) => s.name).filter((n) => !PROMETHEUS_METRICS.has(n))]))
  const names = new Set<string>()
  for (const { where, expr } of read) {
    for (const selector of selectors(expr)) {
      const { matchers } = selector
      const name = selector.name.includes(':') ? sources.get(selector.name)?.[0] : selector.name
      if (name === undefined) continue // not recorded: the test of the rules' selectors fails
      names.add(name)
      if (PROMETHEUS_METRICS.has(name)) continue
      t.ok(name.startsWith('wxtoken_'), `${where}: ${name} is one of the service's (wxtoken_) or Prometheus's own`)
      t.ok(exported(name), `${where}: ${name} is exported on /metrics`)
      const labels = labelsOf(name)
      if (!labels) continue
      for (const [, label] of matchers.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
        if (label !== 'job' && label !== 'instance') t.ok(labels.has(label!), `${where}: ${name} has the label ${label}`)
      }
    }
  }
  t.ok(names.size >= 20, `${names.size} metrics read: ${[...names].sort().join(', ')}`)
})
