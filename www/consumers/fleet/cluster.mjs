// A Redis Cluster of Debian's redis-server for the store tests: three masters (no replicas) on
// free loopback ports, each in its own directory of a temporary one, with an append-only file
// synced at every write, so that a node stopped (SIGTERM) and started again with the same
// directory comes back with every write it acknowledged. `stop()` ends every node and removes
// the directory; call it in a finally (or an `after`).
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './app.mjs';

const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** redis-cli against one node; its output. */
export async function cli(port, ...args) {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args]);
  return stdout;
}

/** Starts the node's redis-server; resolves once it accepts connections. */
function launch(node) {
  const child = spawn('redis-server', [node.conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  node.child = child;
  node.exited = new Promise((r) => child.once('exit', r));
  let seen = '';
  return new Promise((resolve, reject) => {
    const look = (d) => {
      seen += d;
      if (seen.includes('Ready to accept connections')) resolve();
    };
    child.stdout.on('data', look);
    child.stderr.on('data', look);
    child.once('exit', (c) => reject(new Error(`redis-server on ${node.port} exited (${c}): ${seen.slice(-2000)}`)));
  });
}

/** Stops a node (SIGTERM: it syncs its files and exits; SIGKILL after 10 s). */
async function halt(node) {
  if (!node.child || node.child.exitCode !== null || node.child.signalCode !== null) return;
  node.child.kill('SIGTERM');
  const late = setTimeout(() => node.child.kill('SIGKILL'), 10000);
  await node.exited;
  clearTimeout(late);
}

/** Until every node says cluster_state:ok with every slot served. */
async function settled(nodes, limitMs = 30000) {
  const end = Date.now() + limitMs;
  for (;;) {
    let ok = true;
    for (const n of nodes) {
      const info = await cli(n.port, 'CLUSTER', 'INFO').catch(() => '');
      if (!info.includes('cluster_state:ok') || !info.includes('cluster_slots_ok:16384')) ok = false;
    }
    if (ok) return;
    if (Date.now() > end) throw new Error('the Redis Cluster did not reach cluster_state:ok');
    await sleep(200);
  }
}

/** A Redis Cluster of `count` masters on loopback: `{ nodes: [{ port }], restart(i), stop() }`. */
export async function startCluster(count = 3) {
  const root = mkdtempSync(join(tmpdir(), 'b24-cluster-'));
  const nodes = [];
  const stop = async () => {
    await Promise.all(nodes.map(halt));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const taken = new Set();
    const port = async () => {
      for (;;) {
        const p = await freePort();
        if (!taken.has(p)) { taken.add(p); return p; }
      }
    };
    for (let i = 0; i < count; i++) {
      const dir = join(root, `node-${i}`);
      mkdirSync(dir);
      const node = { port: await port(), bus: await port(), dir, conf: join(dir, 'redis.conf') };
      writeFileSync(node.conf, [
        `port ${node.port}`,
        `cluster-port ${node.bus}`,
        'bind 127.0.0.1',
        'cluster-enabled yes',
        'cluster-config-file nodes.conf',
        'cluster-node-timeout 5000',
        'appendonly yes',
        'appendfsync always',
        'save ""',
        `dir ${dir}`,
        'daemonize no',
        'logfile ""',
      ].join('\n') + '\n');
      nodes.push(node);
    }
    await Promise.all(nodes.map(launch));
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']);
    await settled(nodes);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    nodes,
    /** Stops node `i` (SIGTERM) and starts it again on its own files; resolves once the cluster
     *  is whole again. */
    async restart(i, downMs = 0) {
      await halt(nodes[i]);
      if (downMs) await sleep(downMs);
      await launch(nodes[i]);
      await settled(nodes);
    },
    stop,
  };
}
