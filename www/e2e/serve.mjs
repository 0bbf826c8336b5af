// A static server for the end-to-end tests and the demo: the built package under /pkg/, the
// pages of www/ under /, and the official SDK's browser bundle under /vendor/ (tests only).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const www = fileURLToPath(new URL('..', import.meta.url));
const root = join(www, '..');
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml' };

function resolve(path) {
  const clean = normalize(decodeURIComponent(path)).replace(/^(\.\.[/\\])+/, '');
  if (clean.startsWith('/pkg/')) return join(root, clean);
  if (clean === '/vendor/b24jssdk.js') return join(www, 'node_modules/@bitrix24/b24jssdk/dist/umd/index.min.js');
  return join(www, clean === '/' ? 'index.html' : clean);
}

/** Serves on `host:port` (0 = any free port); resolves with the server and its base URL.
 *  Without `dir`, it serves www/ with the package under /pkg/; with `dir`, that directory. */
export function serve(host = '127.0.0.1', port = 0, dir = null) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    try {
      const file = dir ? join(dir, normalize(decodeURIComponent(path)).replace(/^(\.\.[/\\])+/, '') + (path.endsWith('/') ? 'index.html' : '')) : resolve(path);
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((ok) => server.listen(port, host, () => ok({ server, url: `http://${host}:${server.address().port}` })));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [host, port] = [process.argv[2] || '127.0.0.1', Number(process.argv[3] || 0)];
  const { url } = await serve(host, port);
  console.log(`static server on ${url}`);
}
