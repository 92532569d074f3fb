import { describe, it } from 'node:test'

/**
 * describe(name, fn), or, when `skip` gives a reason, one skipped test in its
 * place. node:test counts a suite skipped with describe(name, { skip }) in
 * neither "skipped" nor "tests" (the summary says "skipped 0"), so a suite
 * that never ran would look like a pass; a skipped test is counted.
 */
export function describeOrSkip (name: string, skip: string | false, fn: () => void): void {
  if (skip === false) describe(name, fn)
  else it(name, { skip }, () => {})
}
