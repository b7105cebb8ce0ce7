/** The service's version, from package.json (which sits beside src/ and dist/ alike, in the image too). */
import { readFileSync } from 'node:fs'

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
