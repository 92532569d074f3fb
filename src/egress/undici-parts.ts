/**
 * The four undici pieces the sidecar forwards with, loaded one by one.
 *
 * `import 'undici'` loads all of undici (fetch, WebSocket, cache, mock…):
 * measured on Node 20, 19 MB of RSS at start, against 10 MB for these
 * files. undici 7 has no `exports` map, so its lib/ paths resolve; the
 * range is pinned to 7.x in package.json and the types are undici's own
 * (src/types/undici-parts.d.ts). Static imports, so esbuild bundles them
 * into the single binary.
 */
import api from 'undici/lib/api/index.js'
import buildConnector from 'undici/lib/core/connect.js'
import errors from 'undici/lib/core/errors.js'
import Agent from 'undici/lib/dispatcher/agent.js'
import Dispatcher from 'undici/lib/dispatcher/dispatcher.js'
import Pool from 'undici/lib/dispatcher/pool.js'
import ProxyAgent from 'undici/lib/dispatcher/proxy-agent.js'

// What undici's index.js does for its dispatchers: give them the API
// methods (connect, request…). ProxyAgent opens tunnels with connect().
if (!('connect' in Dispatcher.prototype)) Object.assign(Dispatcher.prototype, api)

export { Agent, buildConnector, errors, Pool, ProxyAgent }
