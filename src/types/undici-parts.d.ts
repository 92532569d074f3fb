// Types for the undici files src/undici-parts.ts loads one by one; they are
// undici's own classes, declared by undici's index.d.ts.
declare module 'undici/lib/dispatcher/agent.js' {
  import { Agent } from 'undici'
  export default Agent
}
declare module 'undici/lib/dispatcher/pool.js' {
  import { Pool } from 'undici'
  export default Pool
}
declare module 'undici/lib/dispatcher/proxy-agent.js' {
  import { ProxyAgent } from 'undici'
  export default ProxyAgent
}
declare module 'undici/lib/core/connect.js' {
  import { buildConnector } from 'undici'
  export default buildConnector
}
declare module 'undici/lib/dispatcher/dispatcher.js' {
  const Dispatcher: { prototype: object }
  export default Dispatcher
}
declare module 'undici/lib/api/index.js' {
  const api: object
  export default api
}
declare module 'undici/lib/core/errors.js' {
  import { errors } from 'undici'
  export default errors
}
// httpntlm's NTLM message functions (its ntlm.js, plain JavaScript).
declare module 'httpntlm/ntlm.js' {
  export interface Type2Message { readonly negotiateFlags: number, readonly serverChallenge: Buffer, readonly targetInfo?: Buffer }
  export interface NtlmOptions { username: string, password: string, domain: string, workstation: string }
  export function createType1Message (options: Partial<NtlmOptions>): string
  export function parseType2Message (raw: string, callback: (err: Error) => void): Type2Message | null
  export function createType3Message (type2: Type2Message, options: NtlmOptions): string
}
