import { requireBeside } from './package-roots.js'
import { KerberosError, kerberosCauseOf } from './kerberos-cause.js'

/**
 * Negotiate (Kerberos) tokens from GSSAPI, through the maintained binding,
 * the `kerberos` package (mongodb-js): a native addon that links MIT's
 * libgssapi_krb5. It is an optional dependency, loaded the first time a
 * token is needed, so an install without it, or without the Kerberos
 * libraries, runs every other scheme.
 *
 * Credentials are MIT's own: GSSAPI reads KRB5_CLIENT_KTNAME (a client
 * keytab: it obtains and renews tickets by itself), KRB5CCNAME (a ticket
 * cache, from kinit) and KRB5_CONFIG from the environment when a token is
 * made, so a keytab or krb5.conf mounted from a Secret is read as it is
 * now, with no restart.
 */

/** The part of the `kerberos` package used here. */
interface KerberosBinding {
  initializeClient (service: string, options: { principal?: string, mechOID?: number }): Promise<{ step (challenge: string): Promise<string> }>
  GSS_MECH_OID_SPNEGO: number
}

export interface KerberosOptions {
  /** PROXY_KRB5_PRINCIPAL: the client principal to use, when the cache or keytab holds several. */
  readonly principal?: string | undefined
  /** Where the single binary looks for the addon: beside it (undefined: node_modules). */
  readonly addonDir?: string | undefined
}

/** Makes one SPNEGO token per call: one handshake per tunnel. */
export interface KerberosTokens {
  token (spn: string): Promise<string>
}

/** Load the binding lazily; each token call reports a missing addon as KerberosError('addon_missing'). */
export function createKerberosTokens (options: KerberosOptions = {}): KerberosTokens {
  let binding: KerberosBinding | Error | undefined
  const load = (): KerberosBinding | Error => {
    if (binding !== undefined) return binding
    try {
      binding = requireKerberos(options.addonDir)
    } catch (err) {
      binding = err instanceof Error ? err : new Error(String(err))
    }
    return binding
  }
  return {
    token: async (spn) => {
      const k = load()
      if (k instanceof Error) throw new KerberosError('addon_missing', spn, k.message)
      try {
        const client = await k.initializeClient(spn, { mechOID: k.GSS_MECH_OID_SPNEGO, ...(options.principal !== undefined ? { principal: options.principal } : {}) })
        return await client.step('')
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err)
        throw new KerberosError(kerberosCauseOf(message), spn, message)
      }
    }
  }
}

/**
 * The `kerberos` package, looked up from each place it may be beside the
 * running code, first found wins (package-roots.ts): the single
 * executable's folder (whose own `require` reaches only builtins: a require
 * rooted at a real path loads a `.node` file), the bundle's folder (the
 * image's /app), and this module's own (node_modules of a source checkout).
 */
function requireKerberos (addonDir: string | undefined): KerberosBinding {
  return requireBeside<KerberosBinding>('kerberos', addonDir)
}
