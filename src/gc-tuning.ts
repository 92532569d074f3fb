import { setFlagsFromString } from 'node:v8'

/**
 * The young generation's ceiling, in MB: V8's
 * `--scavenger-max-new-space-capacity-mb`, which Node leaves at V8's default.
 *
 * V8 13 (Node 24) lets the young generation grow to 32 MB, doubled to 64 MB
 * without pointer compression (as Node is built), against 16 MB for V8 11
 * (Node 20). The sidecar's garbage is mostly young: the wrappers of the
 * Buffers that stream through it. Each wrapper keeps its chunk, outside the
 * heap, alive until a scavenge, so a larger young generation holds more
 * chunks: while 200 MB streamed, peak RSS grew by about 60 MB on Node 24 and
 * 27–31 MB with this ceiling. Scavenges of a 4 MB young generation are
 * short; `npm run bench` shows their cost per request.
 */
export const YOUNG_GENERATION_MB = 2

/** The flags an operator sets to size the young generation themselves. */
const OPERATOR_FLAGS = /--(max-semi-space-size|min-semi-space-size|semi-space-growth-factor|scavenger[-_]max[-_]new[-_]space[-_]capacity[-_]mb)\b/

/**
 * Applied before anything else is loaded (cli.ts imports this module first):
 * on V8 13 and later, the young generation's ceiling, unless the operator
 * sized it in NODE_OPTIONS or on node's command line. V8 reads this flag each
 * time the young generation grows, so setting it at run time takes effect;
 * older V8 lacks it, and setFlagsFromString would print an error there.
 */
export function tuneGc (v8Version: string, nodeOptions: string, execArgv: readonly string[], set: (flag: string) => void = setFlagsFromString): string | undefined {
  if (Number(v8Version.split('.')[0]) < 13) return undefined
  if (OPERATOR_FLAGS.test(nodeOptions) || execArgv.some((a) => OPERATOR_FLAGS.test(a))) return undefined
  const flag = `--scavenger-max-new-space-capacity-mb=${YOUNG_GENERATION_MB}`
  set(flag)
  return flag
}

tuneGc(process.versions.v8, process.env.NODE_OPTIONS ?? '', process.execArgv)
