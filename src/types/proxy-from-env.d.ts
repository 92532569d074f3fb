declare module 'proxy-from-env' {
  /** The proxy URL for `url` under the current process.env, or '' for none. */
  export function getProxyForUrl (url: string | URL): string
}
