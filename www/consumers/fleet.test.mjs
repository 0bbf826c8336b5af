// The fleet (Node build) against many portals of the emulator, through the portals' own install
// events: one worker on the embedded file store draining 50 portals; three worker processes on a
// real redis-server (started here on a free port, stopped at the end) with one SIGKILLed; every
// token expiring at once; a spent refresh token, a deleted portal and an uninstall each stopping
// only their portal; forged installs against the emulator's central OAuth server and an attacker's
// server. The stores' own contract is in stores.test.mjs. Needs EMULATOR_URL and a built pkg/.
import { test, before, after } from 'node:test';
import { createServer } from 'node:http';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fleet, FileStore, serve, redisStore, startRedis, spawnWorker } from './fleet/app.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
const APP = 'app.fleet';
const SECRET = 'fleet-secret';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cleanup = [];
let redis, redisPort, oauthHost;

before(async () => {
  redis = await startRedis();
  redisPort = redis.port;
  // The emulator's central OAuth server, as oauth.bitrix.info is the cloud's: the only host
  // the fleet may send the client secret to, and the one that proves installs.
  oauthHost = new URL((await (await fetch(`${EMULATOR}/`)).json()).oauth_server).host;
});

after(async () => {
  for (const f of cleanup.reverse()) await f();
  redis?.stop();
});

async function ctl(origin, path, body) {
  const r = await fetch(`${origin}/_emulator/${path}`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
  const v = await r.json();
  assert.equal(r.status, 200, `${path}: ${JSON.stringify(v)}`);
  return v;
}

async function portals(n, config = {}) {
  return (await ctl(EMULATOR, 'portals', { count: n, config })).portals;
}

async function changes(origin, first, n) {
  const items = Array.from({ length: n }, (_, i) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(first + i) } } }));
  return (await ctl(origin, 'trigger', { items })).queued;
}

function options(url, extra = {}) {
  return {
    oauth: { clientId: APP, clientSecret: SECRET },
    events: ['ONCRMDEALUPDATE'],
    signalUrl: `${url}/signal`,
    allowHttp: true,
    oauthServers: [oauthHost],
    concurrency: 4,
    timeoutMs: 5000,
    ...extra,
  };
}

async function install(origin, url) {
  const r = await ctl(origin, 'install', { client_id: APP, client_secret: SECRET, handler: `${url}/install` });
  assert.equal(r.delivered, true, JSON.stringify(r));
  return r;
}

/** The token pair stored for a portal (the FileStore's record file, as the fleet wrote it). */
async function storedPair(dir, member) {
  const text = await new FileStore(dir).get(`b24-offline/portal/${member}`);
  const line = (k) => decodeURIComponent(text.split('\n').find((l) => l.startsWith(`${k} `)).slice(k.length + 1));
  return { access: line('access'), refresh: line('refresh') };
}

async function until(what, limitMs, done) {
  const end = Date.now() + limitMs;
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

test('one worker installs 50 portals through their install events and drains every one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'b24-fleet-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const list = await portals(50, { rate_limit: null });
  let fleet;
  const app = await serve({ install: (b) => fleet.install(b), uninstall: (b) => fleet.uninstall(b), signal: (b) => fleet.signal(b) });
  cleanup.push(() => app.close());
  fleet = new Fleet(options(app.url, { store: new FileStore(dir), maxIdleDelay: 2000 }));
  for (const p of list) await install(p.origin, app.url);
  for (const p of list) assert.equal(await changes(p.origin, 1, 20), 20);
  const handled = new Map();
  const run = fleet.run(async (events, ctx) => {
    const seen = handled.get(ctx.portal.memberId) ?? new Set();
    for (const e of events) seen.add(e.messageId);
    handled.set(ctx.portal.memberId, seen);
  });
  const total = () => [...handled.values()].reduce((n, s) => n + s.size, 0);
  await until('1000 events', 60000, () => total() === 1000);
  fleet.stop();
  await run;
  assert.equal(handled.size, 50);
  for (const p of list) {
    assert.deepEqual((await ctl(p.origin, 'queue')).length, 0, p.origin);
    const s = await ctl(p.origin, 'stats');
    assert.ok(s.requests.batch >= 1, JSON.stringify(s.requests));
  }
  // A restart on the same directory: the portals are known, nothing is installed again.
  const again2 = new Fleet(options(app.url, { store: new FileStore(dir), maxIdleDelay: 2000 }));
  await again2.setPlan(list[0].member_id, 'enterprise');
  await assert.rejects(again2.setPlan(list[0].member_id, 'gold'), (e) => e.code === 'INVALID_ARGUMENT');
  const after = new Set();
  const rerun = again2.run(async (events, ctx) => { for (const e of events) after.add(`${ctx.portal.memberId}/${e.messageId}`); });
  for (const p of list.slice(0, 5)) await changes(p.origin, 100, 4);
  await until('the changes after a restart', 60000, () => after.size === 20);
  again2.stop();
  await rerun;
  // The tokens live in the store directory only, and nowhere in what the fleet reports.
  const files = readdirSync(join(dir, 'data'));
  assert.ok(files.some((f) => f.includes('portal')), files.join(' '));
  assert.ok(!JSON.stringify(fleet.stats()).includes('access'));
  // A repeated install event is known; a forged uninstall is refused and changes nothing.
  const again = await install(list[0].origin, app.url);
  assert.equal(again.delivered, true);
  const forged = await fetch(`${app.url}/uninstall`, { method: 'POST', body: `event=ONAPPUNINSTALL&auth[member_id]=${list[1].member_id}&auth[application_token]=guess` });
  assert.equal(forged.status, 403);
});

test('three worker processes on Redis, one SIGKILLed, lose nothing and never drain a portal together', async () => {
  const list = await portals(12, { rate_limit: null });
  const prefix = `fleet-${Date.now()}:`;
  const { store, client } = await redisStore(redisPort, prefix);
  cleanup.push(() => client.quit());
  let installer;
  const app = await serve({ install: (b) => installer.install(b), uninstall: (b) => installer.uninstall(b), signal: (b) => installer.signal(b) });
  cleanup.push(() => app.close());
  installer = new Fleet(options(app.url, { store }));
  const opts = options(app.url, { leaseMs: 3000, scanMs: 1000, handlerTimeoutMs: 2000, timeoutMs: 3000, strandedAfterMs: 15000, maxIdleDelay: 1000 });
  for (const p of list) await install(p.origin, app.url);
  const lines = [];
  const workers = ['w1', 'w2', 'w3'].map((worker) => spawnWorker({ redisPort, prefix, worker, options: opts, handleMs: 50 }, lines));
  cleanup.push(() => workers.forEach((w) => w.child.kill('SIGKILL')));
  const handled = () => new Set(lines.filter((l) => l.ids).flatMap((l) => l.ids.map((id) => `${l.member}/${id}`))).size;
  // Changes only once every worker is up (a worker alone takes every portal until it sees the
  // others), then more until the victim is busy: on a loaded machine the first workers may drain
  // the first round before the victim takes its share.
  await until('three workers ready', 30000, () => lines.filter((l) => l.ready).length === 3);
  let expected = 0;
  let round = 0;
  let next = 0;
  await until('the victim busy', 60000, async () => {
    // A worker's id is its label and its process's nonce.
    if (lines.some((l) => l.worker.startsWith('w3#') && l.ids)) return true;
    if (Date.now() < next) return false;
    for (const p of list) expected += await changes(p.origin, 1 + round * 100, round === 0 ? 40 : 2);
    round++;
    next = Date.now() + 1000;
    return false;
  });
  const killedAt = Date.now();
  workers[2].child.kill('SIGKILL');
  await workers[2].exited;
  for (const p of list) expected += await changes(p.origin, 100000, 5);
  // Every event handled, and nothing left reserved: what the victim handled but never
  // acknowledged comes back once its hold is over, through the error queue.
  const empty = async () => {
    for (const p of list) if ((await ctl(p.origin, 'queue')).length) return false;
    return true;
  };
  try {
    await until('every event, every queue empty', 90000, async () => handled() === expected && (await empty()));
  } catch (e) {
    const per = {};
    for (const l of lines.filter((l) => l.ids)) per[l.worker] = (per[l.worker] ?? 0) + l.ids.length;
    const left = [];
    for (const p of list) left.push((await ctl(p.origin, 'queue')).map((r) => [r.PROCESS_ID, r.ERROR]));
    throw new Error(`${e.message}: handled ${handled()} of ${expected}; per worker ${JSON.stringify(per)}; other lines ${JSON.stringify(lines.filter((l) => !l.ids))}; left ${JSON.stringify(left)}`);
  }
  for (const w of workers.slice(0, 2)) w.child.kill('SIGTERM');
  await Promise.all(workers.slice(0, 2).map((w) => w.exited));
  // Nothing stranded: every queue is empty, nothing reserved.
  for (const p of list) assert.equal((await ctl(p.origin, 'queue')).length, 0, p.origin);
  // Never two workers on one portal at once (the victim's last batch ends when it was killed).
  const batches = lines.filter((l) => l.ids);
  let shared = 0;
  for (const a of batches) {
    for (const b of batches) {
      if (a.member === b.member && a.worker !== b.worker && a.start < (b.end ?? killedAt) && b.start < (a.end ?? killedAt)) shared++;
    }
  }
  assert.equal(shared, 0, 'a portal drained by two workers at once');
  const label = (id) => id.split('#')[0];
  const taken = new Set(batches.filter((l) => label(l.worker) !== 'w3' && l.start > killedAt).map((l) => l.member));
  const victims = new Set(batches.filter((l) => label(l.worker) === 'w3').map((l) => l.member));
  for (const m of victims) assert.ok(taken.has(m), `the victim's portal ${m} was taken over`);
  const done = lines.filter((l) => l.done).map((l) => label(l.done));
  assert.ok(done.includes('w1') && done.includes('w2'), 'the survivors stopped gracefully');
});

test('every token expiring at once is refreshed exactly once per portal across three workers', async () => {
  const list = await portals(10, { rate_limit: null });
  const prefix = `refresh-${Date.now()}:`;
  const made = await Promise.all([1, 2, 3].map(() => redisStore(redisPort, prefix)));
  for (const m of made) cleanup.push(() => m.client.quit());
  let installer;
  const app = await serve({ install: (b) => installer.install(b), uninstall: (b) => installer.uninstall(b), signal: (b) => installer.signal(b) });
  cleanup.push(() => app.close());
  installer = new Fleet(options(app.url, { store: made[0].store }));
  for (const p of list) await install(p.origin, app.url);
  const fleets = made.map((m, i) => new Fleet(options(app.url, { store: m.store, workerId: `r${i}`, leaseMs: 3000, scanMs: 1000, maxIdleDelay: 500 })));
  const handled = new Set();
  const runs = fleets.map((f) => f.run(async (events, ctx) => { for (const e of events) handled.add(`${ctx.portal.memberId}/${e.messageId}`); }));
  for (const p of list) await changes(p.origin, 1, 3);
  await until('the first changes', 30000, () => handled.size === 30);
  // Every access token of every portal expires at once (the portals share one clock).
  await ctl(EMULATOR, 'clock', { advance_s: 3700 });
  for (const p of list) await changes(p.origin, 10, 3);
  await until('the changes after the expiry', 30000, () => handled.size === 60);
  fleets.forEach((f) => f.stop());
  await Promise.all(runs);
  for (const p of list) {
    const s = await ctl(p.origin, 'stats');
    // One exchange proved the install, one renewed the expired pair.
    assert.equal(s.refreshes, 2, `${p.origin}: ${s.refreshes} refreshes`);
    assert.equal(s.refreshes_refused, 0);
  }
});

test('a spent refresh token, a deleted portal and an uninstall each stop only their portal', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'b24-fleet-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const list = await portals(4, { rate_limit: null });
  let fleet;
  const installs = new Map();
  const app = await serve({
    install: async (b) => { const p = new URLSearchParams(b); installs.set(p.get('auth[member_id]'), p); return fleet.install(b); },
    uninstall: (b) => fleet.uninstall(b),
    signal: (b) => fleet.signal(b),
  });
  cleanup.push(() => app.close());
  fleet = new Fleet(options(app.url, { store: new FileStore(dir), maxIdleDelay: 500 }));
  for (const p of list) await install(p.origin, app.url);
  const stopped = new Map();
  const handled = new Map();
  const run = fleet.run(async (events, ctx) => {
    handled.set(ctx.portal.memberId, (handled.get(ctx.portal.memberId) ?? 0) + events.length);
  }, { onStopped: (portal, error) => stopped.set(portal.memberId, error) });
  for (const p of list) await changes(p.origin, 1, 2);
  await until('the first changes', 30000, () => [...handled.values()].reduce((a, b) => a + b, 0) === 8);
  // p0: its stored refresh token (the one the install's proof brought) is spent behind the
  // fleet's back, then its access token expires.
  const p0 = await storedPair(dir, list[0].member_id);
  const spent = await fetch(`http://${oauthHost}/oauth/token/?grant_type=refresh_token&client_id=${APP}&client_secret=${SECRET}&refresh_token=${p0.refresh}`);
  assert.equal(spent.status, 200);
  await ctl(list[0].origin, 'expire', { access_token: p0.access });
  // p1: deleted. p2: uninstalled by the portal.
  await ctl(list[1].origin, 'portal', { deleted: true });
  const u = await ctl(list[2].origin, 'uninstall', { client_id: APP, handler: `${app.url}/uninstall` });
  assert.equal(u.delivered, true);
  for (const p of list) await changes(p.origin, 10, 2).catch(() => 0);
  await until('three portals stopped', 30000, () => stopped.size >= 3);
  await until('p3 going on', 30000, () => handled.get(list[3].member_id) === 4);
  fleet.stop();
  await run;
  assert.equal(stopped.get(list[0].member_id)?.code, 'PORTAL_STOPPED');
  assert.match(stopped.get(list[0].member_id).description, /invalid_grant/);
  assert.match(stopped.get(list[1].member_id).description, /PORTAL_DELETED/);
  assert.equal(stopped.get(list[2].member_id), undefined, 'an uninstall is not an error');
  assert.ok(!stopped.get(list[0].member_id).message.includes(p0.refresh));
  // The uninstalled portal's record and journal are gone from the store.
  const files = readdirSync(join(dir, 'data')).map(decodeURIComponent).filter((f) => /^b24-offline\/(portal|journal)\//.test(f));
  assert.ok(!files.some((f) => f.includes(list[2].member_id)), files.join(' '));
  assert.ok(files.some((f) => f.includes(list[3].member_id)), files.join(' '));
});

// Issue 18, cases 1-3 against real parts: the emulator's portals and central OAuth server, and an
// attacker's server on loopback that records every request it gets.
test('forged installs reach no host they name, never see the secret, and cannot squat a portal', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'b24-fleet-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const [real] = await portals(1, { rate_limit: null });
  const seenByAttacker = [];
  const attacker = createServer((req, res) => {
    let b = '';
    req.on('data', (c) => { b += c; });
    req.on('end', () => { seenByAttacker.push(`${req.method} ${req.url} ${b}`); res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{"ID":1}}'); });
  }).listen(0, '127.0.0.1');
  await once(attacker, 'listening');
  cleanup.push(() => attacker.close());
  const evil = `127.0.0.1:${attacker.address().port}`;
  let fleet;
  const app = await serve({ install: (b) => fleet.install(b), uninstall: (b) => fleet.uninstall(b), signal: (b) => fleet.signal(b) });
  cleanup.push(() => app.close());
  fleet = new Fleet(options(app.url, { store: new FileStore(dir), installRate: { burst: 5, drainPerSec: 1 } }));
  const forged = (member, client, server, refresh = 'stolen-or-made-up') => new URLSearchParams({
    event: 'ONAPPINSTALL', 'auth[domain]': client, 'auth[access_token]': 'a', 'auth[refresh_token]': refresh,
    'auth[expires_in]': '3600', 'auth[server_endpoint]': `http://${server}/rest/`, 'auth[client_endpoint]': `http://${client}/rest/`,
    'auth[member_id]': member, 'auth[application_token]': 'attacker',
  }).toString();
  const post = (body) => fetch(`${app.url}/install`, { method: 'POST', body });
  // 1. Both endpoints at the attacker: refused by reading alone.
  assert.equal((await post(forged('a'.repeat(32), evil, evil))).status, 403);
  // 2. Squatting the real portal's member id at the attacker's address, proven at the real
  // OAuth server: it does not know the token.
  assert.equal((await post(forged(real.member_id, evil, oauthHost))).status, 403);
  // 3. A flood: the rest are refused before anything is sent.
  const codes = [];
  for (let i = 0; i < 200; i++) codes.push(await (await post(forged('b'.repeat(32), evil, oauthHost, `t${i}`))).text());
  assert.ok(codes.filter((c) => c === 'INSTALL_LIMITED').length >= 190, codes.slice(0, 12).join(' '));
  assert.deepEqual(seenByAttacker, [], 'the attacker got no request, so never the secret');
  // Once the flood has passed (a unit of installRate a second), the real install goes through.
  await sleep(1500);
  await install(real.origin, app.url);
  const installed = readdirSync(join(dir, 'data')).map(decodeURIComponent).filter((f) => f.startsWith('b24-offline/portal/'));
  assert.deepEqual(installed, [`b24-offline/portal/${real.member_id}`]);
  const text = await new FileStore(dir).get(installed[0]);
  assert.ok(!text.includes(SECRET), 'the secret is never stored');
  assert.deepEqual(seenByAttacker, []);
});
