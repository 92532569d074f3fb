import { main } from './main.js'

main(process.argv.slice(2), process.env).then((code) => {
  process.exit(code)
}, (err: unknown) => {
  process.stderr.write(`apicast-sidecar-proxy: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
