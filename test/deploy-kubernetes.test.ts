/**
 * The deployment files follow the service: the Kubernetes manifests (deploy/kubernetes/) against the Kubernetes API
 * schemas and against the service's routes, configuration, shutdown and memory; the image's and compose's healthcheck
 * and stop grace against readiness and SHUTDOWN_GRACE_MS; the image's OCI labels against package.json.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { parse, parseAllDocuments } from 'yaml'
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1'
import { PodDisruptionBudget, type IPodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { NetworkPolicy, type INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { Secret, Service, type IContainer, type ISecret, type IService } from 'kubernetes-models/v1'
import { ConfigSchema, loadConfig } from '../src/config.js'
import { build } from './helpers/build.js'

const root = new URL('../', import.meta.url)
const dir = new URL('deploy/kubernetes/', root)
const text = (path: string, base: URL = root) => readFile(new URL(path, base), 'utf8')

const pkg = JSON.parse(await text('package.json')) as { name: string, version: string, description: string, license: string, scripts: Record<string, string> }
const dockerfile = await text('Dockerfile')

// ---- the manifests, parsed ----

interface Manifest { file: string, object: Record<string, unknown> }

const files = (await readdir(dir)).filter((name) => /\.ya?ml$/.test(name)).sort()
const manifests: Manifest[] = []
const kustomization = parse(await text('kustomization.yaml', dir)) as { kind: string, resources: string[] }
for (const file of files.filter((name) => name !== 'kustomization.yaml')) {
  const documents = parseAllDocuments(await text(file, dir))
  for (const document of Array.isArray(documents) ? documents : [documents]) {
    if (document.errors.length > 0 || document.warnings.length > 0) throw new Error(`${file}: ${[...document.errors, ...document.warnings].join('; ')}`)
    const object = document.toJS() as Record<string, unknown> | null
    if (object) manifests.push({ file, object })
  }
}

function only<T> (kind: string): T {
  const found = manifests.filter((m) => m.object.kind === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind} in deploy/kubernetes, found ${found.length}`)
  return found[0]!.object as T
}

const deployment = only<IDeployment>('Deployment')
const service = only<IService>('Service')
const pdb = only<IPodDisruptionBudget>('PodDisruptionBudget')
const secret = only<ISecret>('Secret')
const networkPolicy = only<INetworkPolicy>('NetworkPolicy')
const pod = deployment.spec!.template.spec!
const container: IContainer = pod.containers[0]!

/** A literal variable the container sets, else the service's default for it. */
function setting (name: keyof typeof ConfigSchema.properties): string {
  const set = container.env?.find((e) => e.name === name)
  if (set?.value !== undefined) return set.value
  const fallback = (ConfigSchema.properties[name] as { default?: unknown }).default
  if (fallback === undefined) throw new Error(`${name} is neither set in the Deployment nor has a default`)
  return String(fallback)
}

/** A named or numbered container port, as a number. */
function containerPort (port: number | string): number | undefined {
  return typeof port === 'number' ? port : container.ports?.find((p) => p.name === port)?.containerPort
}

/** A Kubernetes memory quantity, in bytes. */
function bytes (quantity: string | number): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(quantity))
  if (!match) throw new Error(`not a memory quantity: ${quantity}`)
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[match[2] ?? ''] ?? 1
  return Number(match[1]) * unit
}

/** The preStop pause in milliseconds: an exec of sleep, or the built-in sleep handler. */
function preStopPauseMs (): number {
  const preStop = container.lifecycle?.preStop
  if (preStop?.sleep) return preStop.sleep.seconds * 1000
  const command = preStop?.exec?.command ?? []
  if (command.length === 2 && /^(\/bin\/|\/usr\/bin\/)?sleep$/.test(command[0]!) && /^\d+$/.test(command[1]!)) return Number(command[1]) * 1000
  return 0
}

const mib = 2 ** 20

// ---- the tests ----

t.test('every manifest is a valid object of its Kubernetes API (kubernetes-models)', async (t) => {
  const models = {
    'apps/v1 Deployment': Deployment,
    'v1 Service': Service,
    'v1 Secret': Secret,
    'policy/v1 PodDisruptionBudget': PodDisruptionBudget,
    'networking.k8s.io/v1 NetworkPolicy': NetworkPolicy
  } as const
  for (const { file, object } of manifests) {
    const Model = models[`${object.apiVersion} ${object.kind}` as keyof typeof models]
    if (!Model) {
      t.fail(`${file}: no schema for ${object.apiVersion} ${object.kind}`)
      continue
    }
    t.doesNotThrow(() => new Model(object as never).validate(), `${file}: ${object.kind} ${(object.metadata as { name: string }).name}`)
  }
  // The validator does look at the objects: a field of the wrong type fails.
  const broken = structuredClone(deployment) as unknown as { spec: { replicas: unknown } }
  broken.spec.replicas = 'two'
  t.throws(() => new Deployment(broken as never).validate(), 'a Deployment with replicas: "two" is refused')
})

t.test('no manifest has a field its Kubernetes API does not know (checked with the kubernetes-models types)', async (t) => {
  // The API's OpenAPI schemas (and so the validator above) allow unknown fields, which the API server drops: a
  // misspelt field would vanish silently. TypeScript's excess-property check against the models' types catches it.
  const types: Record<string, [string, string]> = {
    Deployment: ['kubernetes-models/apps/v1', 'IDeployment'],
    Service: ['kubernetes-models/v1', 'IService'],
    Secret: ['kubernetes-models/v1', 'ISecret'],
    PodDisruptionBudget: ['kubernetes-models/policy/v1', 'IPodDisruptionBudget'],
    NetworkPolicy: ['kubernetes-models/networking.k8s.io/v1', 'INetworkPolicy']
  }
  const misspelt = structuredClone(deployment) as unknown as { spec: { template: { spec: { containers: Array<Record<string, unknown>> } } } }
  misspelt.spec.template.spec.containers[0]!.readinesProbe = {}
  const checked = [...manifests, { file: 'canary', object: misspelt as unknown as Record<string, unknown> }]
  const imports = Object.values(types).map(([from, name]) => `import type { ${name} } from '${from}'\n`).join('')
  const declarations = checked.map((m, i) => `export const manifest${i}: ${types[m.object.kind as string]![1]} = ${JSON.stringify(m.object, null, 1)}\n`)
  const source = imports + declarations.join('')
  const fileName = fileURLToPath(new URL('test/manifests.typecheck.ts', root))
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: []
  }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  host.getSourceFile = (name, language, ...rest) => name === fileName ? ts.createSourceFile(name, source, language) : getSourceFile(name, language, ...rest)
  const fileExists = host.fileExists.bind(host)
  host.fileExists = (name) => name === fileName || fileExists(name)
  const diagnostics = ts.getPreEmitDiagnostics(ts.createProgram([fileName], options, host))
  const starts = declarations.reduce<number[]>((acc, d) => [...acc, acc.at(-1)! + d.length], [imports.length])
  const byManifest = checked.map(() => [] as string[])
  const elsewhere: string[] = []
  for (const diagnostic of diagnostics) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ')
    const index = diagnostic.file?.fileName === fileName ? starts.findIndex((s, i) => diagnostic.start! >= s && diagnostic.start! < starts[i + 1]!) : -1
    if (index >= 0 && index < checked.length) byManifest[index]!.push(message)
    else elsewhere.push(message)
  }
  t.same(elsewhere, [], 'the check itself compiles')
  checked.slice(0, -1).forEach((m, i) => t.same(byManifest[i], [], `${m.file}: ${m.object.kind}`))
  t.match(byManifest.at(-1)!.join('\n'), /readinesProbe/, 'a misspelt field is caught')
})

t.test('kustomization.yaml lists every manifest but the example Secret', async (t) => {
  t.equal(kustomization.kind, 'Kustomization', 'a Kustomization')
  const expected = files.filter((name) => name !== 'kustomization.yaml' && !name.includes('.example.'))
  t.same([...kustomization.resources].sort(), expected, 'the resources are the manifests')
  t.notOk(kustomization.resources.some((name) => name.includes('example')), 'the Secret with fake values is never applied with -k')
})

t.test('the Deployment runs at least two replicas, spread over nodes, that the PDB and the Service select', async (t) => {
  t.ok(deployment.spec!.replicas! >= 2, 'replicas >= 2')
  const labels = deployment.spec!.template.metadata!.labels!
  const selects = (selector: Record<string, string> | undefined) =>
    selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v)
  t.ok(selects(deployment.spec!.selector.matchLabels), 'the Deployment selects its own pods')
  t.ok(selects(pdb.spec!.selector?.matchLabels), 'the PDB selects the Deployment\'s pods')
  t.notOk(pdb.spec!.selector?.matchExpressions, 'the PDB selects by labels only')
  t.ok(selects(service.spec!.selector), 'the Service selects the Deployment\'s pods')
  const budget = pdb.spec!
  t.ok(budget.maxUnavailable !== undefined ? Number(budget.maxUnavailable) >= 1 : Number(budget.minAvailable) < deployment.spec!.replicas!,
    'the PDB lets one pod go at a time (a drain can proceed)')
  t.ok(budget.maxUnavailable === 1 || Number(budget.minAvailable) >= 1, 'and keeps one serving')
  const spread = pod.topologySpreadConstraints?.find((c) => c.topologyKey === 'kubernetes.io/hostname')
  const antiAffinity = pod.affinity?.podAntiAffinity
  t.ok(spread !== undefined ? selects(spread.labelSelector?.matchLabels) : antiAffinity !== undefined, 'pods are spread across nodes')
})

t.test('the Service and the probes use the service\'s port and health routes', async (t) => {
  const port = Number(setting('PORT'))
  const http = container.ports!.find((p) => p.containerPort === port)
  t.ok(http?.name, `the container port ${port} (PORT) is named`)
  t.equal(service.spec!.type ?? 'ClusterIP', 'ClusterIP', 'the Service is a ClusterIP')
  const servicePort = service.spec!.ports!
  t.equal(servicePort.length, 1, 'the Service has one port')
  t.ok(servicePort[0]!.name, 'the Service port is named')
  t.equal(servicePort[0]!.port, port, 'the Service port is PORT')
  t.equal(servicePort[0]!.targetPort, http?.name, 'the Service targets the named container port')

  t.equal(container.readinessProbe?.httpGet?.path, '/health/ready', 'readiness probe on /health/ready')
  t.equal(container.livenessProbe?.httpGet?.path, '/health/live', 'liveness probe on /health/live')
  for (const [name, probe] of Object.entries({ readiness: container.readinessProbe, liveness: container.livenessProbe, startup: container.startupProbe })) {
    if (!probe) continue
    t.ok(probe.httpGet, `${name} probe is an HTTP GET`)
    t.equal(containerPort(probe.httpGet!.port), port, `${name} probe on PORT`)
    t.match(probe.httpGet!.path, /^\/health\/(live|ready)$/, `${name} probe on a health route`)
  }
  // The readiness route pings the store: its answer comes within the Redis command timeout, inside the probe's.
  t.ok((container.readinessProbe?.timeoutSeconds ?? 1) * 1000 > Number(setting('REDIS_COMMAND_TIMEOUT_MS')), 'readiness timeout above REDIS_COMMAND_TIMEOUT_MS')
})

t.test('metrics are scraped on a port of their own, which neither the Service nor, with the example policy, other pods reach', async (t) => {
  const metricsPort = Number(setting('METRICS_PORT'))
  t.ok(metricsPort > 0 && metricsPort !== Number(setting('PORT')), `METRICS_PORT ${metricsPort} is set, apart from PORT`)
  const named = container.ports!.find((p) => p.containerPort === metricsPort)
  t.ok(named?.name, 'the metrics container port is named')
  const annotations = deployment.spec!.template.metadata!.annotations ?? {}
  t.equal(annotations['prometheus.io/scrape'], 'true', 'Prometheus scrapes the pods')
  t.equal(Number(annotations['prometheus.io/port']), metricsPort, 'on METRICS_PORT')
  t.equal(annotations['prometheus.io/path'], '/metrics', 'on /metrics')
  t.notOk(service.spec!.ports!.some((p) => p.targetPort === named?.name || Number(p.targetPort) === metricsPort || p.port === metricsPort),
    'the Service does not publish the metrics port')

  const labels = deployment.spec!.template.metadata!.labels!
  t.ok(Object.entries(networkPolicy.spec!.podSelector.matchLabels ?? {}).every(([k, v]) => labels[k] === v), 'the policy selects the pods')
  t.ok(networkPolicy.spec!.policyTypes?.includes('Ingress'), 'and restricts what reaches them')
  const rules = networkPolicy.spec!.ingress ?? []
  const admits = (port: number, name: string | undefined) => rules.filter((rule) => rule.ports?.some((p) => p.port === port || p.port === name))
  const toMetrics = admits(metricsPort, named?.name)
  t.ok(toMetrics.length > 0 && toMetrics.every((rule) => (rule.from ?? []).length > 0), 'the metrics port only from the sources a rule names')
  const http = container.ports!.find((p) => p.containerPort === Number(setting('PORT')))
  t.ok(admits(Number(setting('PORT')), http?.name).some((rule) => rule.from === undefined), 'the service port (callers, probes) from anywhere, as without a policy')
  t.ok(rules.every((rule) => rule.ports !== undefined && rule.ports.length > 0), 'no rule opens every port')
})

t.test('the pod is stopped after the endpoints drained and the service\'s own grace ran', async (t) => {
  const pause = preStopPauseMs()
  t.ok(pause > 0, 'a preStop hook pauses before SIGTERM')
  const grace = Number(setting('SHUTDOWN_GRACE_MS'))
  const period = pod.terminationGracePeriodSeconds!
  t.ok(period * 1000 > grace + pause, `terminationGracePeriodSeconds (${period} s) above the pause (${pause} ms) plus SHUTDOWN_GRACE_MS (${grace} ms)`)
  t.ok(deployment.spec!.strategy?.rollingUpdate?.maxUnavailable === 0, 'a rollout never lowers the number of ready pods')
})

t.test('the pod runs as the image\'s node user with no privilege and a read-only root', async (t) => {
  const podSecurity = pod.securityContext ?? {}
  const own = container.securityContext ?? {}
  t.equal(own.runAsNonRoot ?? podSecurity.runAsNonRoot, true, 'runAsNonRoot')
  t.equal(own.runAsUser ?? podSecurity.runAsUser, 1000, 'runAsUser 1000')
  t.match(dockerfile, /^USER node$/m, 'the node user (uid 1000 in node images) is the image\'s')
  t.equal(own.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem')
  t.equal(own.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation false')
  t.same(own.capabilities?.drop, ['ALL'], 'every capability dropped')
  t.notOk(own.capabilities?.add, 'none added')
  t.equal((own.seccompProfile ?? podSecurity.seccompProfile)?.type, 'RuntimeDefault', 'seccomp RuntimeDefault')
  t.notOk(own.privileged, 'not privileged')
  t.equal(pod.automountServiceAccountToken, false, 'no API token in the pod')
})

t.test('the memory request covers the measured peak and the limit the heap limit with headroom', async (t) => {
  const heapFlag = /NODE_OPTIONS="--max-old-space-size=(\d+)/.exec(dockerfile)
  t.ok(heapFlag, 'the image sets the heap limit')
  t.match(pkg.scripts.start!, `--max-old-space-size=${heapFlag![1]}`, 'as npm start does')
  const heap = Number(heapFlag![1]) * mib
  const { requests, limits } = container.resources ?? {}
  // BENCHMARKS.md: 10,000 entries of any kind peak at 134 to 144 MB of RSS, a flood of random appIds from 500 callers at 152 MB.
  t.ok(bytes(requests!.memory!) >= 155e6, `request ${requests!.memory} covers the measured peak RSS`)
  // V8's old-generation limit leaves out the young generation (up to 48 MiB on 64-bit), code and Buffers: a
  // container limit below the heap limit plus that would have the kernel kill the pod before V8 collects.
  t.ok(bytes(limits!.memory!) >= heap + 192 * mib, `limit ${limits!.memory} at least the heap limit (${heapFlag![1]} MiB) plus 192 MiB`)
  t.ok(bytes(limits!.memory!) > bytes(requests!.memory!), 'limit above request')
})

t.test('every variable the Deployment sets is one the service reads', async (t) => {
  const known = new Set(Object.keys(ConfigSchema.properties))
  for (const { name } of container.env ?? []) t.ok(known.has(name), `${name} is a variable of src/config.ts`)
  t.notOk(container.envFrom, 'no envFrom, whose names could not be checked')
  t.equal(setting('HOST'), '0.0.0.0', 'HOST=0.0.0.0: reachable from outside the pod')
})

t.test('the Secret holds what the Deployment reads, and the example is a config the service accepts', async (t) => {
  const name = secret.metadata!.name
  const data = secret.stringData ?? {}
  const mounts = new Map<string, Record<string, string>>() // mount path -> (file path in it -> Secret key)
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.volumes?.find((v) => v.name === mount.name)
    if (!volume?.secret) continue
    t.equal(volume.secret.secretName, name, `volume ${volume.name} mounts the Secret ${name}`)
    t.equal(mount.readOnly, true, `${mount.mountPath} is read-only`)
    t.notOk(mount.subPath, `${mount.mountPath} is not a subPath (which would never see an update)`)
    const items = volume.secret.items ?? Object.keys(data).map((key) => ({ key, path: key }))
    mounts.set(mount.mountPath, Object.fromEntries(items.map((item) => [item.path, item.key])))
  }
  const dir = t.testdir({})
  const env: Record<string, string> = {}
  for (const variable of container.env ?? []) {
    if (variable.valueFrom) {
      const ref = variable.valueFrom.secretKeyRef
      t.ok(ref, `${variable.name} comes from a Secret`)
      t.equal(ref?.name, name, `${variable.name} from the Secret ${name}`)
      t.ok(ref && ref.key in data, `${variable.name}: the Secret has the key ${ref?.key}`)
      env[variable.name] = data[ref!.key]!
      continue
    }
    env[variable.name] = variable.value ?? ''
    if (!variable.name.endsWith('_FILE')) continue
    const path = variable.value!
    const mountPath = [...mounts.keys()].find((m) => path.startsWith(`${m}/`))
    t.ok(mountPath, `${variable.name} points into a mounted Secret`)
    const key = mounts.get(mountPath!)?.[posix.relative(mountPath!, path)]
    t.ok(key !== undefined && key in data, `${variable.name}: ${path} is the Secret's key ${key}`)
    const local = join(dir, variable.name)
    await writeFile(local, data[key!] ?? '')
    env[variable.name] = local
  }
  t.ok(env.WECHAT_APPS_FILE && env.AUTH_TOKENS_FILE, 'the apps and the caller keys come from files of the Secret')
  t.doesNotThrow(() => loadConfig(env), 'the Deployment\'s environment with the example Secret passes the service\'s validation')
})

/** The image's healthcheck command, its options, and compose's. */
function dockerHealthcheck (): { options: string, command: string[] } {
  const joined = dockerfile.replace(/\\\n/g, ' ')
  const match = /^HEALTHCHECK\s+(.*?)\s*CMD\s+(\[.*\])\s*$/m.exec(joined)
  if (!match) throw new Error('the Dockerfile has no HEALTHCHECK CMD [...]')
  return { options: match[1]!, command: JSON.parse(match[2]!) as string[] }
}

const compose = parse(await text('docker-compose.yml')) as {
  services: Record<string, { build?: unknown, environment?: Record<string, string>, ports?: string[], stop_grace_period?: string, healthcheck?: { test: string[] } }>
}
const composeService = Object.values(compose.services).find((s) => s.build !== undefined)!

/** Runs a healthcheck command (node -e …) as Docker would, with PORT set, and gives its exit code. */
async function runHealthcheck (command: string[], port: number): Promise<number | null> {
  const [program, ...args] = command
  if (program !== 'node') throw new Error(`the healthcheck runs ${program}, not node`)
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', PORT: String(port) }, stdio: 'ignore' })
  return await new Promise((resolve) => child.on('exit', resolve))
}

async function stub (status: number): Promise<Server> {
  const server = createServer((_req, res) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'closing' })))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

t.test('the image and compose check readiness and count 200 only as healthy, degraded included', async (t) => {
  const { options, command } = dockerHealthcheck()
  t.match(command.join(' '), /\/health\/ready/, 'the image checks /health/ready')
  t.match(command.join(' '), /status===200\?0:1/, 'healthy on 200 only')
  t.same(composeService.healthcheck?.test, ['CMD', ...command], 'compose runs the image\'s check')
  t.ok(composeService.ports?.every((port) => port.startsWith('127.0.0.1:')), 'compose publishes on loopback only (it runs without caller keys)')
  const timeout = /--timeout=(\d+)s/.exec(options)
  t.ok(timeout && Number(timeout[1]) * 1000 > Number((ConfigSchema.properties.REDIS_COMMAND_TIMEOUT_MS as { default: number }).default),
    'its timeout is above the Redis command timeout the ready route may wait')

  // The real service with its Redis unreachable: readiness answers 200 "degraded", and the check passes.
  const { app } = await build(t, { env: { REDIS_URL: 'redis://127.0.0.1:1', WECHAT_API_BASE: 'http://127.0.0.1:9' } })
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200, 'readiness with Redis down is 200')
  t.equal(ready.json().status, 'degraded', 'and degraded')
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.equal(await runHealthcheck(command, (app.server.address() as AddressInfo).port), 0, 'degraded (200) is healthy')

  // Closing is 503 (and, once closed, the connection is refused): unhealthy both ways.
  const closing = await stub(503)
  t.teardown(() => closing.close())
  t.equal(await runHealthcheck(command, (closing.address() as AddressInfo).port), 1, 'closing (503) is unhealthy')
  const gone = await stub(200)
  const port = (gone.address() as AddressInfo).port
  await new Promise((resolve) => gone.close(resolve))
  t.equal(await runHealthcheck(command, port), 1, 'a refused connection is unhealthy')
})

t.test('compose gives the service more than SHUTDOWN_GRACE_MS to stop', async (t) => {
  const grace = Number(composeService.environment?.SHUTDOWN_GRACE_MS ?? (ConfigSchema.properties.SHUTDOWN_GRACE_MS as { default: number }).default)
  const period = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(composeService.stop_grace_period ?? '')
  t.ok(period, `stop_grace_period (${composeService.stop_grace_period}) is set in minutes and seconds`)
  const ms = (Number(period?.[1] ?? 0) * 60 + Number(period?.[2] ?? 0)) * 1000
  t.ok(ms > grace, `stop_grace_period ${ms} ms above SHUTDOWN_GRACE_MS ${grace} ms`)
})

t.test('the image carries OCI labels that follow package.json', async (t) => {
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  const args = Object.fromEntries([...finalStage.matchAll(/^ARG (\w+)(?:=(.*))?$/gm)].map((m) => [m[1]!, m[2] ?? '']))
  const labels = Object.fromEntries([...finalStage.replace(/\\\n/g, ' ').matchAll(/(org\.opencontainers\.image\.\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]))
  const expand = (value: string | undefined) => value?.replace(/\$\{(\w+)\}/g, (_, name: string) => args[name] ?? `<${name} undeclared>`)
  t.equal(labels['org.opencontainers.image.title'], pkg.name, 'title: the package name')
  t.equal(labels['org.opencontainers.image.description'], pkg.description, 'description: the package\'s')
  t.equal(labels['org.opencontainers.image.licenses'], pkg.license, 'licenses: the package\'s')
  t.match(labels['org.opencontainers.image.version'], /^\$\{VERSION\}$/, 'the version is a build argument')
  t.equal(expand(labels['org.opencontainers.image.version']), pkg.version, 'defaulting to package.json\'s version')
  t.match(labels['org.opencontainers.image.revision'], /^\$\{REVISION\}$/, 'the revision is a build argument')
  t.ok('REVISION' in args, 'declared in the final stage')
  t.ok('org.opencontainers.image.source' in labels, 'a source label')
  t.notMatch(expand(labels['org.opencontainers.image.source']) ?? '', /undeclared/, 'whose argument is declared')
})
