/**
 * What Docker Compose gives a container as its environment, from the compose files, their env files and the image's
 * ENV, for the part of the format this project uses; anything outside that part is refused, never guessed. Compose v2
 * reads files through compose-go, and these rules follow its documentation and that code:
 * - `env_file` (Compose file reference, services): a path, or a list of paths or of `{ path, required }`; a relative
 *   path is taken from the compose file's folder; the files are read in order, a later one overriding an earlier one;
 *   `required` is true unless set, and a missing file that is not required is skipped (Compose 2.24.0 and later).
 * - `environment` overrides the env files, which override the image's ENV ("Environment variables precedence":
 *   `run -e`, then `environment`, then `env_file`, then the image).
 * - env files ("Syntax for environment files"; compose-go `dotenv/parser.go`): blank lines and lines starting with `#`
 *   are skipped; `KEY=VALUE`, with an optional `export `; an unquoted value runs to the end of its line, an inline
 *   comment needs a space before its `#`, trailing spaces are dropped; unquoted and double-quoted values are
 *   interpolated (`$VAR`), single-quoted ones are taken as they are.
 * - several files (`-f a -f b`, "Merge Compose files"): services merge by name, mappings key by key with the later
 *   file winning, sequences are appended.
 * - compose files are interpolated too (`${VAR}` from the shell and `.env`): these use no `$` at all.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parse } from 'yaml'

type Yaml = unknown

export interface ComposeService {
  build?: unknown
  image?: string
  env_file?: string | Array<string | { path: string, required?: boolean }>
  environment?: Record<string, string | number | boolean | null> | string[]
  ports?: string[]
  [key: string]: unknown
}

export interface ComposeProject {
  /** The folder of the first file, from which relative paths are resolved. */
  dir: string
  services: Record<string, ComposeService>
}

function isMapping (value: Yaml): value is Record<string, Yaml> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function merge (base: Yaml, override: Yaml): Yaml {
  if (isMapping(base) && isMapping(override)) {
    const merged: Record<string, Yaml> = { ...base }
    for (const [key, value] of Object.entries(override)) merged[key] = key in base ? merge(base[key], value) : value
    return merged
  }
  if (Array.isArray(base) && Array.isArray(override)) return [...base, ...override]
  return override
}

/** Reads compose files as `docker compose -f first -f second ...` does. */
export function loadCompose (...files: string[]): ComposeProject {
  let merged: Yaml = {}
  for (const file of files) {
    const text = readFileSync(file, 'utf8')
    if (text.includes('$')) throw new Error(`${file}: a $ would be interpolated; this model has no interpolation`)
    merged = merge(merged, parse(text) as Yaml)
  }
  if (!isMapping(merged) || !isMapping(merged.services)) throw new Error('no services')
  return { dir: dirname(resolve(files[0]!)), services: merged.services as Record<string, ComposeService> }
}

/** An env file's variables. */
export function parseEnvFile (text: string, file = 'env file'): Record<string, string> {
  const variables: Record<string, string> = {}
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const match = /^(?:export\s+)?([A-Za-z0-9_.\-[\]]+)\s*=\s*(.*)$/.exec(line)
    if (!match) throw new Error(`${file}:${index + 1}: not KEY=VALUE (inherited or yaml-style lines are not modelled)`)
    const [, key, rest] = match as unknown as [string, string, string]
    let value: string
    if (rest.startsWith('\'')) {
      const end = rest.indexOf('\'', 1)
      if (end < 0 || rest.slice(1, end).includes('\\')) throw new Error(`${file}:${index + 1}: a single-quoted value on one line without \\ is modelled, not this`)
      value = rest.slice(1, end)
    } else if (rest.startsWith('"')) {
      throw new Error(`${file}:${index + 1}: double-quoted values (escapes, interpolation) are not modelled`)
    } else {
      value = rest.split(' #')[0]!.trimEnd()
      if (value.includes('$')) throw new Error(`${file}:${index + 1}: ${key}: an unquoted $ is interpolated; quote the value in '...'`)
    }
    variables[key] = value
  }
  return variables
}

/**
 * The ENV of a Dockerfile's final stage (the `ENV KEY=VALUE ...` form: values unquoted, or in double quotes without
 * escapes or `$`).
 */
export function imageEnv (dockerfile: string): Record<string, string> {
  const stage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  const env: Record<string, string> = {}
  for (const [, pairs] of stage.replace(/\\\n/g, ' ').matchAll(/^ENV\s+(.*)$/gm)) {
    const rest = pairs!.trim().replace(/([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"\\$]*)"|([^\s"'$]+))(?:\s+|$)/g, (_, key: string, quoted?: string, bare?: string) => {
      env[key] = quoted ?? bare!
      return ''
    })
    if (rest !== '') throw new Error(`ENV ${rest}: only KEY=VALUE pairs, unquoted or in plain double quotes, are modelled`)
  }
  return env
}

/** The environment the container of `name` starts with. */
export function containerEnv (project: ComposeProject, name: string, image: Record<string, string> = {}): Record<string, string> {
  const service = project.services[name]
  if (!service) throw new Error(`no service ${name}`)
  const env: Record<string, string> = { ...image }
  const entries = service.env_file === undefined ? [] : Array.isArray(service.env_file) ? service.env_file : [service.env_file]
  for (const entry of entries) {
    const { path, required = true } = typeof entry === 'string' ? { path: entry } : entry
    const file = resolve(project.dir, path)
    if (!existsSync(file)) {
      if (required) throw new Error(`env file ${file} not found`)
      continue
    }
    Object.assign(env, parseEnvFile(readFileSync(file, 'utf8'), file))
  }
  const environment = service.environment ?? {}
  const pairs = Array.isArray(environment)
    ? environment.map((item) => { const split = item.indexOf('='); return [item.slice(0, split), item.slice(split + 1)] as const })
    : Object.entries(environment)
  for (const [key, value] of pairs) {
    if (value === null || value === undefined) throw new Error(`environment ${key} without a value takes the shell's: not modelled`)
    env[key] = String(value)
  }
  return env
}
