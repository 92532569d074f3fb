/**
 * systemd's EnvironmentFile= parser (src/basic/env-file.c,
 * parse_env_file_internal), as a state machine over characters, so a test
 * can read deploy/systemd/env.example as the service will see it.
 *
 * `legacy` selects the rules of older systemd versions, where a backslash
 * inside double quotes (and inside single quotes) escaped any character and
 * was dropped; current ones keep it unless it precedes one of " \ ` $ and
 * read single quotes literally. A value meant for every RHEL should parse
 * the same under both.
 */
export interface EnvFileOptions { readonly legacy?: boolean }

type State = 'PRE_KEY' | 'KEY' | 'PRE_VALUE' | 'VALUE' | 'VALUE_ESCAPE' | 'SINGLE' | 'SINGLE_ESCAPE' | 'DOUBLE' | 'DOUBLE_ESCAPE' | 'COMMENT' | 'COMMENT_ESCAPE'

const WHITESPACE = ' \t\n\r'
const NEWLINE = '\n\r'
const SHELL_NEED_ESCAPE = '"\\`$'

export function parseEnvFile (text: string, options: EnvFileOptions = {}): Map<string, string> {
  const out = new Map<string, string>()
  let state: State = 'PRE_KEY'
  let key = ''
  let value = ''
  // Length of value without its trailing unquoted whitespace.
  let kept = 0
  const emit = (): void => {
    const name = key.replace(/[ \t]+$/, '')
    if (name !== '') out.set(name, value.slice(0, kept))
    key = ''
    value = ''
    kept = 0
    state = 'PRE_KEY'
  }
  const push = (c: string, quoted: boolean): void => {
    value += c
    if (quoted || !WHITESPACE.includes(c)) kept = value.length
  }
  for (const c of text) {
    switch (state) {
      case 'PRE_KEY':
        if (c === '#' || c === ';') state = 'COMMENT'
        else if (!WHITESPACE.includes(c)) { state = 'KEY'; key = c }
        break
      case 'KEY':
        if (NEWLINE.includes(c)) { state = 'PRE_KEY'; key = '' } else if (c === '=') state = 'PRE_VALUE'
        else key += c
        break
      case 'PRE_VALUE':
        if (NEWLINE.includes(c)) emit()
        else if (c === "'") state = 'SINGLE'
        else if (c === '"') state = 'DOUBLE'
        else if (c === '\\') state = 'VALUE_ESCAPE'
        else if (!WHITESPACE.includes(c)) { state = 'VALUE'; push(c, false) }
        break
      case 'VALUE':
        if (NEWLINE.includes(c)) emit()
        else if (c === '\\') state = 'VALUE_ESCAPE'
        else push(c, false)
        break
      case 'VALUE_ESCAPE':
        // An unquoted backslash escapes the next character and is dropped:
        // CORP\alice reads as CORPalice. Backslash-newline continues the line.
        state = 'VALUE'
        if (!NEWLINE.includes(c)) push(c, true)
        break
      case 'SINGLE':
        if (c === "'") state = 'PRE_VALUE'
        else if (c === '\\' && options.legacy === true) state = 'SINGLE_ESCAPE'
        else push(c, true)
        break
      case 'SINGLE_ESCAPE':
        state = 'SINGLE'
        if (!NEWLINE.includes(c)) push(c, true)
        break
      case 'DOUBLE':
        if (c === '"') state = 'PRE_VALUE'
        else if (c === '\\') state = 'DOUBLE_ESCAPE'
        else push(c, true)
        break
      case 'DOUBLE_ESCAPE':
        state = 'DOUBLE'
        if (options.legacy === true) {
          if (!NEWLINE.includes(c)) push(c, true)
        } else if (SHELL_NEED_ESCAPE.includes(c)) {
          push(c, true)
        } else if (c !== '\n') {
          // Kept, like the shell does.
          push('\\', true)
          push(c, true)
        }
        break
      case 'COMMENT':
        if (c === '\\') state = 'COMMENT_ESCAPE'
        else if (NEWLINE.includes(c)) state = 'PRE_KEY'
        break
      case 'COMMENT_ESCAPE':
        state = 'COMMENT'
        break
    }
  }
  if (state !== 'PRE_KEY' && state !== 'KEY' && state !== 'COMMENT' && state !== 'COMMENT_ESCAPE') emit()
  return out
}
