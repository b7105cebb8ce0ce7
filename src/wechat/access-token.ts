/** What a WeChat access token is, as every layer sees it: how it was got, and how long WeChat lets one live. */

/** stable: POST /cgi-bin/stable_token, safe beside other users of the app; classic: GET /cgi-bin/token, each fetch retiring the last token. */
export type TokenMode = 'stable' | 'classic'

/** WeChat documents a token lifetime of at most 7200 s; a longer expires_in is capped to it. */
export const MAX_TOKEN_LIFE_MS = 7200 * 1000
