/**
 * Lockout protection: a proxy that refused credentials is not sent them
 * again for PROXY_AUTH_BACKOFF_MS. Against Active Directory each refused
 * password counts towards the account's lockout threshold, so a sidecar
 * that sent a wrong password with every tunnel (or every absolute-form
 * request) would lock the account within seconds under load.
 *
 * The gate is kept per proxy and credentials: a proxy of FALLBACK_PROXIES
 * that checks another directory may accept what the first refused, so the
 * failover to it stays; each proxy then costs one refusal per back-off.
 * While credentials
 * have not been accepted yet (at start, after a reset, after a back-off)
 * only one attempt carries them at a time; the others wait for its verdict.
 * A wrong password then costs one refusal per back-off, whatever the
 * request rate. Once accepted, attempts go through without waiting.
 *
 * The same gate, a second instance, keeps a TLS client certificate an
 * https:// proxy refused (or the lack of one) from a handshake per
 * request: the refusal is as certain the next time, and a proxy that logs
 * or alerts on each would be flooded.
 *
 * The clock is injected, so the back-off is tested without waiting. No
 * credential leaves this module: the key is compared, never logged.
 */

export type Verdict = 'accepted' | 'refused' | 'unknown'

/** The gate's key for a proxy (host:port) and a user and password: held in memory only, never logged. */
export function credentialKey (proxy: string, username: string, password: string): string {
  return `${proxy}\u0000${username}\u0000${password}`
}

/** One attempt let through: tell the gate how it ended, once. */
export interface Admission {
  settle (verdict: Verdict): void
}

/** What the gate says of credentials refused a moment ago. */
export class CredentialsBackedOff extends Error {
  override name = 'CredentialsBackedOff'
  readonly code = 'SIDECAR_PROXY_AUTH_BACKOFF'
  constructor (readonly refusedMsAgo: number, readonly remainingMs: number) {
    super(`the proxy refused these credentials ${Math.round(refusedMsAgo / 1000)} s ago; they are not sent again for another ${Math.ceil(remainingMs / 1000)} s (PROXY_AUTH_BACKOFF_MS)`)
  }
}

/**
 * What the client-certificate gate says of a certificate an https:// proxy
 * refused a moment ago (PROXY_TLS_CERT, or none): no new connection is
 * tried with it, as each would only be refused again by the handshake.
 */
export class CertificateBackedOff extends Error {
  override name = 'CertificateBackedOff'
  readonly code = 'SIDECAR_PROXY_CERTIFICATE_BACKOFF'
  constructor (readonly refusedMsAgo: number, readonly remainingMs: number) {
    super(`the proxy refused the handshake with this client certificate (or none) ${Math.round(refusedMsAgo / 1000)} s ago; no new connection is tried with it for another ${Math.ceil(remainingMs / 1000)} s (PROXY_AUTH_BACKOFF_MS)`)
  }
}

/** The client-certificate gate's key for a proxy (host:port) and a certificate (its fingerprint, or '' for none). */
export function certificateKey (proxy: string, fingerprint: string): string {
  return `${proxy}\u0000tls-client\u0000${fingerprint}`
}

/** A back-off just began: for the one log line and the metric. */
export interface BackOffEvent {
  /** The proxy that refused, host:port. */
  readonly proxy: string
  readonly backoffMs: number
}

interface Entry {
  accepted: boolean
  refusedAt: number | undefined
  /** An attempt of unaccepted credentials is in flight: the others wait. */
  trial: boolean
  waiters: Array<() => void>
}

export class CredentialGate {
  readonly #entries = new Map<string, Entry>()

  constructor (
    private readonly backoffMs: number,
    private readonly onBackOff: (event: BackOffEvent) => void = () => {},
    private readonly now: () => number = Date.now,
    /** The error of an attempt while backed off: CertificateBackedOff for the client-certificate gate. */
    private readonly backedOff: (refusedMsAgo: number, remainingMs: number) => Error = (ago, remaining) => new CredentialsBackedOff(ago, remaining)
  ) {}

  /**
   * Let an attempt with the credentials `key` through, or wait for the one
   * in flight to be judged, or throw CredentialsBackedOff (or the gate's own
   * error) while they are
   * backed off. `proxy` (host:port) names the proxy in the back-off event.
   * `signal` ends a wait (the client went away, or the connect timed out).
   */
  async admit (key: string, proxy: string, signal?: AbortSignal): Promise<Admission> {
    for (;;) {
      const entry = this.#entry(key)
      if (entry.refusedAt !== undefined) {
        const ago = this.now() - entry.refusedAt
        if (ago < this.backoffMs) throw this.backedOff(ago, this.backoffMs - ago)
        entry.refusedAt = undefined
      }
      if (entry.accepted) return this.#admission(entry, proxy, false)
      if (!entry.trial) {
        entry.trial = true
        return this.#admission(entry, proxy, true)
      }
      await waitFor(entry, signal)
    }
  }

  /** Forget every verdict (a secret file, keytab or ticket cache changed): the next attempt is a fresh trial. */
  reset (): void {
    for (const entry of this.#entries.values()) {
      entry.refusedAt = undefined
      entry.accepted = false
      wake(entry)
    }
    this.#entries.clear()
  }

  #entry (key: string): Entry {
    let entry = this.#entries.get(key)
    if (entry === undefined) {
      entry = { accepted: false, refusedAt: undefined, trial: false, waiters: [] }
      this.#entries.set(key, entry)
    }
    return entry
  }

  /**
   * `trial`: the one attempt of credentials not accepted yet. A refusal of
   * accepted ones (the password changed in the directory) backs off too;
   * of several such refusals at once, the first starts the back-off.
   */
  #admission (entry: Entry, proxy: string, trial: boolean): Admission {
    let settled = false
    return {
      settle: (verdict) => {
        if (settled) return
        settled = true
        if (trial) entry.trial = false
        if (verdict === 'accepted' && entry.refusedAt === undefined) entry.accepted = true
        if (verdict === 'refused' && entry.refusedAt === undefined) {
          entry.accepted = false
          entry.refusedAt = this.now()
          this.onBackOff({ proxy, backoffMs: this.backoffMs })
        }
        if (trial) wake(entry)
      }
    }
  }
}

async function waitFor (entry: Entry, signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      entry.waiters = entry.waiters.filter((w) => w !== done)
      reject(signal?.reason instanceof Error ? signal.reason : new Error('the wait for the credentials\' verdict was aborted'))
    }
    const done = (): void => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }
    if (signal?.aborted === true) {
      onAbort()
      return
    }
    entry.waiters.push(done)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

function wake (entry: Entry): void {
  const waiters = entry.waiters
  entry.waiters = []
  for (const w of waiters) w()
}
