/** The Mini Programs the GenAuth routes name by identifier (WECHAT_IDENTIFIERS), each an app of WECHAT_APPS. */
import { AppError } from '../errors.js'

export interface MiniProgram { appId: string, secret: string }

/** Looks an identifier up: its appId and secret, or IDENTIFIER_NOT_CONFIGURED. */
export function miniProgramLookup (identifiers: ReadonlyMap<string, string>, apps: ReadonlyMap<string, string>) {
  return function miniProgramOf (identifier: string): MiniProgram {
    const appId = identifiers.get(identifier)
    const secret = appId === undefined ? undefined : apps.get(appId)
    if (appId === undefined || secret === undefined) {
      throw new AppError('IDENTIFIER_NOT_CONFIGURED', 'extIdpConnidentifier is not one of the configured WECHAT_IDENTIFIERS')
    }
    return { appId, secret }
  }
}
