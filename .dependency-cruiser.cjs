// The layer rules of src/, checked by `npm run lint` (see README, "How it is
// built"). Type-only imports count: a type edge is still a dependency.
/** Modules with no I/O: tables of input → output in test/unit, no sockets. */
const PURE = '^src/(http/(hop-by-hop|percent-decode|response-headers|access-token|url)|observe/(redact|log-sampler)|tls/tls-verdict|egress/(egress|no-proxy|proxy-auth|auth-negotiation|proxy-rotation|forward-destination|credential-gate|kerberos-cause|pac-answer)|failures/catalogue|forwarding/(rewrite|retry|attempts)|forward-proxy/absolute-form)\\.ts$'
/**
 * What does I/O, or holds process-wide state: never imported by a pure
 * module for its values (a type of node:http describes data, and is fine).
 * node:net is not listed: pure modules use its isIP(), which opens nothing.
 */
const IO_CORE = '^(node:)?(tls|http|https|http2|fs|fs/promises|dns|dgram|child_process|worker_threads|cluster|os|process|v8|perf_hooks|timers|timers/promises|stream|diagnostics_channel)$'
const IO_PACKAGES = '(^|/)node_modules/(undici|pino|prom-client|http-proxy-agent|https-proxy-agent|proxy-chain|proxy-from-env|envalid)/'

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'No import cycles, type-only ones included.', from: {}, to: { circular: true } },
    { name: 'pure-no-io', severity: 'error', comment: 'A pure module imports no I/O module.', from: { path: PURE }, to: { dependencyTypes: ['core'], dependencyTypesNot: ['type-only'], path: IO_CORE } },
    { name: 'pure-no-io-packages', severity: 'error', comment: 'A pure module imports no I/O package.', from: { path: PURE }, to: { dependencyTypesNot: ['type-only'], path: IO_PACKAGES } },
    {
      name: 'pure-only-pure',
      severity: 'error',
      comment: 'A pure module calls only pure modules of src/ (it may name the types of others: a type carries no behaviour).',
      from: { path: PURE },
      to: { path: '^src/', pathNot: PURE, dependencyTypesNot: ['type-only'] }
    },
    {
      name: 'lower-layers-not-upward',
      severity: 'error',
      comment: 'http, observe, tls, egress, failures, config and stale-config never import forwarding, forward-proxy, diagnostics, operate, the demo or the root.',
      from: { path: '^src/(http|observe|tls|egress|failures|config|stale-config)/' },
      to: { path: '^src/((forwarding|forward-proxy|diagnostics|operate|demo)/|(sidecar|cli)\\.ts$)' }
    },
    {
      name: 'forwarding-not-operate',
      severity: 'error',
      comment: 'Forwarding never imports operate or diagnostics.',
      from: { path: '^src/forwarding/' },
      to: { path: '^src/((diagnostics|operate|demo)/|(sidecar|cli)\\.ts$)' }
    },
    {
      name: 'forward-proxy-above-forwarding',
      severity: 'error',
      comment: 'The forward proxy sits on the routes\' forwarding (its absolute-form requests go through the forwarder) and never on operate or diagnostics.',
      from: { path: '^src/forward-proxy/' },
      to: { path: '^src/((diagnostics|operate|demo)/|(sidecar|cli)\\.ts$)' }
    },
    {
      name: 'forwarding-not-forward-proxy',
      severity: 'error',
      from: { path: '^src/forwarding/' },
      to: { path: '^src/forward-proxy/' }
    },
    {
      name: 'diagnostics-not-handler',
      severity: 'error',
      comment: 'Diagnostics probe through egress/, the way forwarding does, never through the handler or relay.',
      from: { path: '^src/diagnostics/' },
      to: { path: '^src/(forwarding/forward\\.ts$|(forward-proxy|operate|demo)/|(sidecar|cli)\\.ts$)' }
    },
    {
      name: 'only-the-root-sees-operate',
      severity: 'error',
      comment: 'operate/ is wired by the composition root alone.',
      from: { path: '^src/', pathNot: '^src/((sidecar|cli)\\.ts$|operate/)' },
      to: { path: '^src/operate/' }
    },
    {
      name: 'only-cli-and-demo-start-a-sidecar',
      severity: 'error',
      comment: 'sidecar.ts is the composition root: only the CLI and the demo start one.',
      from: { path: '^src/', pathNot: '^src/(cli\\.ts|demo/)' },
      to: { path: '^src/(sidecar|cli)\\.ts$' }
    },
    { name: 'src-not-test', severity: 'error', from: { path: '^src/' }, to: { path: '^test/' } }
  ],
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|build)/' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.d.ts'] }
  }
}
