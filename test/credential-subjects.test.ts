/** Change-message subjects: each names one credential of one owner, whatever characters the owner holds. */
import t from 'tap'
import { accessTokenCredential, authorizerTicketCredential, taggedSubjects, ticketCredential } from '../src/tokens/credential.js'

t.test('every subject is read back as its own credential\'s owner, and as no other\'s', async (t) => {
  const kinds = {
    access_token: accessTokenCredential('stable', 1),
    jsapi_ticket: ticketCredential('jsapi', 1),
    wx_card_ticket: ticketCredential('wx_card', 1),
    wecom_token: taggedSubjects('wecom_token'),
    wecom_corp_ticket: taggedSubjects('wecom_corp_ticket'),
    authorizer_jsapi_ticket: authorizerTicketCredential('jsapi', 1),
    authorizer_wx_card_ticket: authorizerTicketCredential('wx_card', 1)
  }
  const owners: Record<keyof typeof kinds, string[]> = {
    access_token: ['wx0123456789abcdef'],
    jsapi_ticket: ['wx0123456789abcdef'],
    wx_card_ticket: ['wx0123456789abcdef'],
    // Opaque owners: a corpId and an application's fingerprint, with the separators the others use.
    wecom_token: ['ww0123456789abcdef:AbC-_x', 'ww01:jsapi_ticket', 'a|b'],
    wecom_corp_ticket: ['ww0123456789abcdef', 'x:wx_card_ticket'],
    // An authorizer's space: its tickets' subjects are not read as an Official Account's tickets'.
    authorizer_jsapi_ticket: ['_authorizer:wxc0c0c0c0c0c0c0c0:wx0123456789abcdef', 'x:jsapi_ticket'],
    authorizer_wx_card_ticket: ['_authorizer:wxc0c0c0c0c0c0c0c0:wx0123456789abcdef']
  }
  for (const [name, kind] of Object.entries(kinds) as Array<[keyof typeof kinds, (typeof kinds)[keyof typeof kinds]]>) {
    for (const owner of owners[name]) {
      const subject = kind.subject(owner)
      t.equal(kind.ownerOf(subject), owner, `${name} reads its own subject for ${owner}`)
      for (const [other, otherKind] of Object.entries(kinds)) {
        if (other !== name) t.equal(otherKind.ownerOf(subject), undefined, `${other} does not read ${name}'s subject ${subject}`)
      }
    }
  }
})
