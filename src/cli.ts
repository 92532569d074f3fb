// First, so that the heap is sized before any module allocates.
import './gc-tuning.js'
import { main } from './main.js'

main(process.argv.slice(2), process.env).then((code) => {
  process.exit(code)
}, (err: unknown) => {
  process.stderr.write(`apicast-sidecar-proxy: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
