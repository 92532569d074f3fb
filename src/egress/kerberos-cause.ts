/**
 * What a GSSAPI failure means, read from its message (pure, table-tested):
 * egress/kerberos.ts makes the tokens, the failure table words each cause
 * with its fix.
 */

/** Why no token could be made: the failure table words each cause with its fix. */
export type KerberosCause =
  | 'addon_missing'
  | 'no_credentials'
  | 'expired'
  | 'kdc_unreachable'
  | 'clock_skew'
  | 'unknown_spn'
  | 'wrong_realm'
  | 'principal_not_held'
  | 'other'

/** A token GSSAPI could not make. `gssMessage` is GSSAPI's own text (it holds no secret). */
export class KerberosError extends Error {
  override name = 'KerberosError'
  constructor (readonly kind: KerberosCause, readonly spn: string, readonly gssMessage: string) {
    super(`no Kerberos token for ${spn}: ${gssMessage}`)
  }
}

/**
 * Which cause a GSSAPI message names. Pure. The texts are MIT krb5's
 * (com_err tables), as the binding passes them on.
 */
export function kerberosCauseOf (message: string): KerberosCause {
  const m = message.toLowerCase()
  if (/cannot find module|cannot open shared object|libgssapi|kerberos\.node|could not locate the bindings/.test(m)) return 'addon_missing'
  if (/clock skew/.test(m)) return 'clock_skew'
  if (/ticket expired|credentials have expired|credentials cache.*expired/.test(m)) return 'expired'
  // The KDC has no cross-realm key towards the proxy's realm: krbtgt/OTHER@OURS.
  if (/server krbtgt\/\S+ not found in kerberos database/.test(m)) return 'wrong_realm'
  if (/not found in kerberos database|server not found|unknown server/.test(m)) return 'unknown_spn'
  if (/can't find client principal|cannot find client principal|client .* not found in kerberos database/.test(m)) return 'principal_not_held'
  if (/cannot find kdc for (requested )?realm|cannot resolve network address for kdc in (requested )?realm|realm not local|wrong realm|cannot find realm/.test(m)) return 'wrong_realm'
  if (/cannot contact any kdc|unable to reach any kdc|connection refused|timed out/.test(m)) return 'kdc_unreachable'
  if (/no kerberos credentials|no credentials (were supplied|cache)|credentials cache file .* not found|no ccache|key table .* not found|keytab .* not found|no key table entry/.test(m)) return 'no_credentials'
  return 'other'
}

