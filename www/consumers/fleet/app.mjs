// A fleet app as a user writes one: an HTTP server taking the portals' install, uninstall and
// onOfflineEvent POSTs, and a worker draining every portal it holds. Used in process by
// fleet.test.mjs, and as a worker process (node app.mjs WORKER_ARGS_JSON) for the multi-process
// tests: it then prints one JSON line per handled batch and `{ "ready": port }` at start.
import { createServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Fleet, FileStore, RedisStore } from '../../../pkg/node/index.mjs';

/** Reads a request body as text. */
async function body(req) {
  const parts = [];
  for await (const c of req) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

/** The app's endpoints on a free loopback port: /install, /uninstall, /signal. */
export async function serve(fleet) {
  const server = createServer(async (req, res) => {
    const text = await body(req);
    const route = { '/install': 'install', '/uninstall': 'uninstall', '/signal': 'signal' }[req.url];
    if (!route) { res.writeHead(404).end(); return; }
    try {
      const out = await fleet[route](text);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
    } catch (e) {
      res.writeHead(e.code === 'INVALID_INSTALL' || e.code === 'INVALID_SIGNAL' ? 403 : 500).end(String(e.code));
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${server.address().port}`;
  // The portal keeps its connections to the app alive: closing ends those too, or they would
  // keep the process running.
  const close = () => { server.close(); server.closeAllConnections(); };
  return { server, url, close };
}

export async function redisStore(port, prefix) {
  const { createClient } = await import('redis');
  const client = createClient({ socket: { host: '127.0.0.1', port } });
  await client.connect();
  return { store: new RedisStore(client, { prefix }), client };
}

/** A loopback port nobody listens on now. */
export async function freePort() {
  const s = createTcpServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Debian's redis-server on a free loopback port, nothing saved; `stop()` ends it. */
export async function startRedis() {
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let seen = '';
  await new Promise((resolve, reject) => {
    redis.stdout.on('data', (d) => { seen += d; if (seen.includes('Ready to accept connections')) resolve(); });
    redis.once('exit', (c) => reject(new Error(`redis-server exited (${c}): ${seen}`)));
  });
  return { port, stop: () => redis.kill('SIGTERM') };
}

/** This file as a worker process (the arguments of its worker mode below); each JSON line it
 *  prints is pushed to `lines`. */
export function spawnWorker(args, lines) {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { lines.push(JSON.parse(buf.slice(0, i))); buf = buf.slice(i + 1); }
  });
  return { child, exited: new Promise((r) => child.once('exit', r)) };
}

export { Fleet, FileStore, RedisStore };

// A worker process: drains until SIGTERM (graceful) or SIGKILL.
if (process.argv[2]) {
  const args = JSON.parse(process.argv[2]);
  const { store, client } = await redisStore(args.redisPort, args.prefix);
  const fleet = new Fleet({ ...args.options, store, workerId: args.worker });
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  process.on('SIGTERM', () => fleet.stop());
  out({ ready: true, worker: fleet.workerId });
  await fleet.run(async (events, ctx) => {
    const start = Date.now();
    await new Promise((r) => setTimeout(r, args.handleMs));
    out({ worker: fleet.workerId, member: ctx.portal.memberId, ids: events.map((e) => e.messageId), start, end: Date.now() });
  }, {
    onStopped: (portal, error) => out({ stopped: portal.memberId, worker: fleet.workerId, error: error?.code }),
  });
  out({ done: fleet.workerId, refreshes: fleet.refreshes });
  await client.quit();
}
