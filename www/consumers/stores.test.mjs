// The fleet's two shipped stores under the failures they must survive (no emulator needed).
// FileStore: a holder paused (SIGSTOP) inside its lock past its deadline never writes after
// another process took the lock, fences only grow, a dead holder's lock is broken at once and a
// live one's not before its own deadline. RedisStore: the store contract and the fleet's key
// shapes on one redis-server and on a three-node Redis Cluster (node-redis's createCluster), a
// portal's keys in one slot, and a node restarted mid-run losing no acknowledged write.
// Needs a built pkg/ and Debian's redis-server and redis-cli.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore, RedisStore, startRedis, redisStore } from './fleet/app.mjs';
import { storeContract, portalContract, memberId } from './fleet/contract.mjs';
import { startCluster } from './fleet/cluster.mjs';

// What the child processes load: the package's stores, as the tests here do through app.mjs.
const STORES = new URL('../../pkg/node/index.mjs', import.meta.url).href;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

function tempDir(name) {
  const dir = mkdtempSync(join(tmpdir(), name));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// A process taking a lease on a FileStore directory: it stops itself (SIGSTOP) inside the lock,
// right after reading the lease record and before writing it, and reports `{ inside: true }`;
// once continued, it reports the lease's outcome, `{ fence }` or `{ error }`.
const LEASER = `
const args = JSON.parse(process.argv[1]);
const { FileStore } = await import(args.stores);
const store = new FileStore(args.dir, { staleLockMs: args.staleLockMs });
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const get = store.get.bind(store);
let stopped = false;
store.get = async (key) => {
  const value = await get(key);
  if (!stopped && key.startsWith('\\u0000lease/')) {
    stopped = true;
    out({ inside: true });
    process.kill(process.pid, 'SIGSTOP');
  }
  return value;
};
try {
  out({ fence: await store.lease(args.name, args.owner, args.ttlMs, Date.now()) });
} catch (e) {
  out({ error: String(e.message) });
}
`;

function leaser(args) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', LEASER, JSON.stringify({ stores: STORES, ...args })], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = [];
  const waiting = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
      for (const w of waiting.splice(0)) w();
    }
  });
  const exited = new Promise((r) => child.once('exit', r));
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  /** The first line that has one of `fields`. */
  const next = async (...fields) => {
    const end = Date.now() + 10000;
    for (;;) {
      const found = lines.find((l) => fields.some((f) => f in l));
      if (found) return found;
      if (Date.now() > end) throw new Error(`the child process reported no ${fields.join(' or ')}`);
      await new Promise((r) => {
        waiting.push(r);
        setTimeout(r, 100);
      });
    }
  };
  return { child, exited, next };
}

/** `p`, or a rejection after `ms`. */
function within(ms, p, what) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

const leaseRecord = async (store, name) => JSON.parse(await store.get(`\u0000lease/${name}`));

test('FileStore: a holder paused inside its lock past its deadline never writes, and fences only grow', async () => {
  const dir = tempDir('b24-filestore-');
  const store = new FileStore(dir, { staleLockMs: 1500 });
  const fences = [await store.lease('p', 'w0', 50, Date.now())];
  await sleep(100);
  // The child reads the run-out lease (fence 1) and stops before writing fence 2.
  const paused = leaser({ dir, staleLockMs: 1500, name: 'p', owner: 'paused', ttlMs: 60000 });
  await paused.next('inside');
  const t0 = Date.now();
  fences.push(await store.lease('p', 'w1', 60000, Date.now()));
  assert.ok(Date.now() - t0 >= 1000, `the paused holder's lock was broken after ${Date.now() - t0} ms, before its deadline`);
  await store.release('p', 'w1');
  fences.push(await store.lease('p', 'w2', 60000, Date.now()));
  await store.release('p', 'w2');
  paused.child.kill('SIGCONT');
  const late = await paused.next('fence', 'error');
  assert.ok('error' in late, `the paused holder's write must fail, it got ${JSON.stringify(late)}`);
  await paused.exited;
  fences.push(await store.lease('p', 'w3', 60000, Date.now()));
  for (let i = 1; i < fences.length; i++) assert.ok(fences[i] > fences[i - 1], `fences ${fences.join(', ')}`);
  const record = await leaseRecord(store, 'p');
  assert.equal(record.owner, 'w3');
  assert.equal(record.fence, fences.at(-1));
  await store.release('p', 'w3');
  assert.deepEqual(readdirSync(join(dir, 'locks')), [], 'no lock or staging directory is left');
});

test("FileStore: a holder past its deadline does not write, even when nobody took its lock", async () => {
  const dir = tempDir('b24-filestore-');
  const store = new FileStore(dir, { staleLockMs: 300 });
  const f1 = await store.lease('p', 'w0', 50, Date.now());
  await sleep(100);
  const paused = leaser({ dir, staleLockMs: 300, name: 'p', owner: 'paused', ttlMs: 60000 });
  await paused.next('inside');
  await sleep(600);
  paused.child.kill('SIGCONT');
  const late = await paused.next('fence', 'error');
  assert.ok('error' in late, `a write after the lock's deadline must fail, it got ${JSON.stringify(late)}`);
  assert.equal((await leaseRecord(store, 'p')).fence, f1);
  assert.ok((await store.lease('p', 'w1', 1000, Date.now())) > f1);
});

test("FileStore: a dead holder's lock is broken at once, a live holder's not before its own deadline", async () => {
  const dir = tempDir('b24-filestore-');
  // Dead: killed inside the lock, which runs a minute; the next takers need not wait, and of
  // six breaking it at once, one gets the lease.
  const killed = leaser({ dir, staleLockMs: 60000, name: 'p', owner: 'killed', ttlMs: 60000 });
  await killed.next('inside');
  killed.child.kill('SIGKILL');
  await killed.exited;
  let t0 = Date.now();
  const takers = Array.from({ length: 6 }, (_, i) => new FileStore(dir, { staleLockMs: 60000 }).lease('p', `w1-${i}`, 60000, Date.now()));
  const got = await within(5000, Promise.all(takers), "taking a dead holder's lock");
  assert.ok(Date.now() - t0 < 2000, `a dead holder's lock was broken after ${Date.now() - t0} ms`);
  const winners = got.filter((f) => f !== null);
  assert.equal(winners.length, 1, `one holder: ${JSON.stringify(got)}`);
  const f1 = winners[0];
  const slow = new FileStore(dir, { staleLockMs: 60000 });
  await slow.release('p', `w1-${got.indexOf(f1)}`);
  // Alive (stopped) with a 3 s deadline of its own: a store with a shorter staleLockMs still
  // waits for it.
  const impatient = new FileStore(dir, { staleLockMs: 100 });
  const alive = leaser({ dir, staleLockMs: 3000, name: 'p', owner: 'alive', ttlMs: 60000 });
  await alive.next('inside');
  t0 = Date.now();
  const f2 = await impatient.lease('p', 'w2', 60000, Date.now());
  assert.ok(Date.now() - t0 >= 2500, `a live holder's lock was broken after ${Date.now() - t0} ms, before its deadline`);
  assert.ok(f2 > f1);
  alive.child.kill('SIGCONT');
  const late = await alive.next('fence', 'error');
  assert.ok('error' in late, `the stopped holder's write must fail, it got ${JSON.stringify(late)}`);
  assert.equal((await leaseRecord(impatient, 'p')).owner, 'w2');
});

test('FileStore keeps the store contract and the fleet\'s key shapes', async () => {
  const dir = tempDir('b24-filestore-');
  await storeContract(new FileStore(dir));
  await portalContract(new FileStore(dir), 'f:');
});

test('RedisStore keeps the store contract and the fleet\'s key shapes on one redis-server', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.stop());
  const { store, client } = await redisStore(redis.port, 'single:');
  cleanup.push(() => client.quit());
  await storeContract(store);
  await portalContract(store, 'fleet:');
  assert.throws(() => new RedisStore(client, { prefix: '{x}:' }), TypeError);
});

/** A node-redis cluster client of `cluster` and a RedisStore on it. */
async function clusterStore(cluster, prefix) {
  const { createCluster } = await import('redis');
  const client = createCluster({ rootNodes: cluster.nodes.map((n) => ({ socket: { host: '127.0.0.1', port: n.port } })) });
  client.on('error', () => {}); // a node away for a restart: its commands fail or wait
  await client.connect();
  cleanup.push(() => client.close?.() ?? client.quit());
  return { client, store: new RedisStore(client, { prefix }) };
}

/** A plain client per node, for looking at where keys landed. */
async function nodeClients(cluster) {
  const { createClient } = await import('redis');
  const clients = [];
  for (const n of cluster.nodes) {
    const c = createClient({ socket: { host: '127.0.0.1', port: n.port } });
    c.on('error', () => {});
    await c.connect();
    clients.push(c);
  }
  return { clients, close: () => Promise.all(clients.map((c) => c.quit())) };
}

test('RedisStore on a three-node Redis Cluster: the contract, a portal in one slot, a node restarted', async () => {
  const cluster = await startCluster(3);
  cleanup.push(() => cluster.stop());
  const { store } = await clusterStore(cluster, 'cl:');
  await storeContract(store);
  const members = await portalContract(store, 'fleet:');

  // Every key of a portal, whatever made it, in one slot of one node.
  const m = memberId();
  const p = 'slot:';
  await store.swap(`${p}portal/${m}`, null, 'record');
  const fence = await store.lease(`${p}lease/${m}`, 'w1', 60000, Date.now());
  await store.fenced(`${p}lease/${m}`, fence, `${p}journal/${m}`, 'index');
  await store.fenced(`${p}lease/${m}`, fence, `${p}journal/${m}/process`, 'entry');
  await store.set(`${p}wake/${m}`, '1');
  await store.lease(`${p}refresh/${m}`, 'w1', 60000, Date.now());
  const { clients, close } = await nodeClients(cluster);
  try {
    const found = [];
    for (const [i, c] of clients.entries()) for (const k of await c.keys(`*${m}*`)) found.push({ node: i, key: k });
    // record, journal index and entry, the entries' listing, wake flag, two leases, two fences
    assert.equal(found.length, 9, JSON.stringify(found.map((f) => f.key)));
    assert.equal(new Set(found.map((f) => f.node)).size, 1, 'on one node');
    const slots = new Set();
    for (const f of found) slots.add(await clients[0].sendCommand(['CLUSTER', 'KEYSLOT', f.key]));
    assert.equal(slots.size, 1, 'in one slot');
    // The portals of the contract above are spread over the nodes.
    const spread = new Set();
    for (const mm of members) for (const [i, c] of clients.entries()) if ((await c.keys(`*portal/${mm}`)).length) spread.add(i);
    assert.ok(spread.size > 1, 'portals land on several nodes');
  } finally {
    await close();
  }

  // A node stopped and started again mid-run: every write acknowledged before, during or after
  // is there at the end (or a later one), and listed.
  const run = Array.from({ length: 30 }, memberId);
  const acked = new Map();
  const journal = new Map();
  const fences = new Map();
  for (const mm of run) fences.set(mm, await store.lease(`r:lease/${mm}`, 'w1', 600000, Date.now()));
  let failures = 0;
  let restarted = false;
  const writer = (async () => {
    for (let round = 1, after = 0; round <= 40 || after < 10; round++) {
      if (restarted) after++;
      await Promise.all(run.map(async (mm) => {
        try {
          await store.set(`r:portal/${mm}`, String(round));
          acked.set(mm, round);
          if (await store.fenced(`r:lease/${mm}`, fences.get(mm), `r:journal/${mm}`, String(round))) journal.set(mm, round);
        } catch {
          failures++;
        }
      }));
      await sleep(20);
    }
  })();
  await sleep(300);
  await cluster.restart(1, 300);
  restarted = true;
  await writer;
  for (const mm of run) {
    assert.ok(Number(await store.get(`r:portal/${mm}`)) >= acked.get(mm), `record of ${mm}: ${await store.get(`r:portal/${mm}`)} < ${acked.get(mm)}`);
    assert.ok(Number(await store.get(`r:journal/${mm}`)) >= (journal.get(mm) ?? 0), `journal of ${mm}`);
    assert.equal(await store.lease(`r:lease/${mm}`, 'w1', 600000, Date.now()), fences.get(mm), 'the lease and its fence survive');
  }
  assert.deepEqual(await store.keys('r:portal/'), run.map((mm) => `r:portal/${mm}`).sort());
  console.log(`# cluster restart: ${failures} writes failed while the node was away`);
});
