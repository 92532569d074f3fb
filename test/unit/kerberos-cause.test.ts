import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { kerberosCauseOf, type KerberosCause } from '../../src/egress/kerberos-cause.js'

describe('kerberosCauseOf: what MIT\'s GSSAPI message means', () => {
  /** [GSSAPI's text, as the kerberos package passes it on, the cause]. */
  const TABLE: Array<[string, KerberosCause]> = [
    ['Miscellaneous failure (see text): No Kerberos credentials available (default cache: MEMORY:x)', 'no_credentials'],
    ['No credentials were supplied, or the credentials were unavailable or inaccessible: No Kerberos credentials available', 'no_credentials'],
    ['Miscellaneous failure (see text): Credentials cache file \'/tmp/krb5cc_1000\' not found', 'no_credentials'],
    ['Miscellaneous failure (see text): Key table file \'/etc/client.keytab\' not found', 'no_credentials'],
    ['The referenced credential has expired: Ticket expired', 'expired'],
    ['Miscellaneous failure (see text): Cannot contact any KDC for realm \'SIDECAR.TEST\'', 'kdc_unreachable'],
    ['Miscellaneous failure (see text): Clock skew too great', 'clock_skew'],
    ['Miscellaneous failure (see text): Server HTTP/alias.sidecar.test@SIDECAR.TEST not found in Kerberos database', 'unknown_spn'],
    ['Miscellaneous failure (see text): Cannot find KDC for realm "CORP.EXAMPLE"', 'wrong_realm'],
    ['Unspecified GSS failure.  Minor code may provide more information: Server krbtgt/OTHER.EXAMPLE@SIDECAR.TEST not found in Kerberos database', 'wrong_realm'],
    ['No credentials were supplied, or the credentials were unavailable or inaccessible: Can\'t find client principal sidecar@OTHER.EXAMPLE in cache collection', 'principal_not_held'],
    ['Cannot find module \'kerberos\'', 'addon_missing'],
    ['libgssapi_krb5.so.2: cannot open shared object file: No such file or directory', 'addon_missing'],
    ['Unspecified GSS failure.  Minor code may provide more information', 'other']
  ]
  for (const [message, cause] of TABLE) {
    it(`${cause}: ${message}`, () => assert.equal(kerberosCauseOf(message), cause))
  }
})
