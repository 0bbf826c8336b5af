// The fleet's figures, one worker on the embedded file store against 1, 50 and 200 emulator
// portals at the real request rate (2 a second a portal, 50 events a batch: a ceiling of 100
// events a second a portal; the burst is 2 so the steady state starts at once): aggregate
// events/s against the sum of the ceilings, the worker's CPU and resident memory per portal,
// and requests per idle portal per hour. Then three worker processes sharing 200 portals on a
// redis-server started here: aggregate events/s, the workers' CPU, how the portals were shared,
// and the store's load (Redis commands per second, busy and idle). Needs EMULATOR_URL, a built
// pkg/ and redis-server.
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fleet, FileStore, serve, redisStore, startRedis, spawnWorker } from '../consumers/fleet/app.mjs';

const EMULATOR = process.env.EMULATOR_URL;
if (!EMULATOR) throw new Error('EMULATOR_URL must point at a running emulator');
const RATE = { burst: 2, drain_per_sec: 2 };
const PER_PORTAL = 500;
const CEILING = 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ctl(origin, path, body) {
  const r = await fetch(`${origin}/_emulator/${path}`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function requests(list) {
  let n = 0;
  for (const p of list) for (const v of Object.values((await ctl(p.origin, 'stats')).requests)) n += v;
  return n;
}

/** The fleet's options for both rounds (the bench's app, the emulator's portals at RATE). */
function benchOptions(url) {
  return {
    oauth: { clientId: 'app.bench', clientSecret: 'secret' },
    events: ['ONCRMDEALUPDATE'],
    signalUrl: `${url}/signal`,
    allowHttp: true,
    // The emulator's central OAuth server (its first portal's origin) proves installs and
    // refreshes every portal, as oauth.bitrix.info does in the cloud.
    oauthServers: [new URL(EMULATOR).host],
    concurrency: 64,
    plan: { burst: RATE.burst, drainPerSec: RATE.drain_per_sec },
    maxIdleDelay: 5000,
    strandedAfterMs: 120000,
    handlerTimeoutMs: 20000,
    timeoutMs: 10000,
  };
}

/** The app installed on every portal, through the portals' install events. */
async function installAll(list, url) {
  for (const p of list) {
    const r = await ctl(p.origin, 'install', { client_id: 'app.bench', handler: `${url}/install` });
    if (!r.delivered) throw new Error('install not delivered');
  }
}

/** PER_PORTAL changes queued on every portal. */
async function queueChanges(list) {
  for (const p of list) {
    const items = Array.from({ length: PER_PORTAL }, (_, i) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(i + 1) } } }));
    await ctl(p.origin, 'trigger', { items });
  }
}

async function round(n) {
  const dir = mkdtempSync(join(tmpdir(), 'b24-fleet-bench-'));
  const { portals: list } = await ctl(EMULATOR, 'portals', { count: n, config: { rate_limit: RATE } });
  let fleet;
  const app = await serve({ install: (b) => fleet.install(b), uninstall: (b) => fleet.uninstall(b), signal: (b) => fleet.signal(b) });
  fleet = new Fleet({ ...benchOptions(app.url), store: new FileStore(dir) });
  await installAll(list, app.url);
  await queueChanges(list);
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  let handled = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const run = fleet.run(async (events) => { handled += events.length; });
  let rssPeak = rssBefore;
  while (handled < n * PER_PORTAL) {
    await sleep(50);
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  // Idle: every queue empty; requests over a window at maxIdleDelay 5 s.
  await sleep(6000);
  const idleFrom = await requests(list);
  const idleT0 = performance.now();
  const idleCpu0 = process.cpuUsage();
  await sleep(20000);
  const idleSeconds = (performance.now() - idleT0) / 1000;
  const idleRequests = (await requests(list)) - idleFrom; // control calls are not REST requests: not counted
  const idleCpu = process.cpuUsage(idleCpu0);
  fleet.stop();
  await run;
  app.close();
  rmSync(dir, { recursive: true, force: true });
  const rate = (n * PER_PORTAL) / seconds;
  return {
    n,
    events: n * PER_PORTAL,
    seconds,
    rate,
    ceiling: n * CEILING,
    ratio: rate / (n * CEILING),
    cpuPerEventUs: ((cpu.user + cpu.system) / (n * PER_PORTAL)),
    idleCpuPerPortalPct: ((idleCpu.user + idleCpu.system) / 1e6 / idleSeconds / n) * 100,
    rssPerPortalKb: (rssPeak - rssBefore) / 1024 / n,
    idlePerHour: (idleRequests / n) * (3600 / idleSeconds),
  };
}

/** User + system CPU seconds of a process so far (Linux). */
function cpuOf(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function redisCommands(client) {
  const info = await client.sendCommand(['INFO', 'stats']);
  return Number(/total_commands_processed:(\d+)/.exec(info)[1]);
}

/** Three worker processes (www/consumers/fleet/app.mjs) on one redis-server, sharing n portals. */
async function shared(n, workers) {
  const redis = await startRedis();
  const prefix = 'bench:';
  const { store, client } = await redisStore(redis.port, prefix);
  const { portals: list } = await ctl(EMULATOR, 'portals', { count: n, config: { rate_limit: RATE } });
  let installer;
  const app = await serve({ install: (b) => installer.install(b), uninstall: (b) => installer.uninstall(b), signal: (b) => installer.signal(b) });
  const options = { ...benchOptions(app.url), leaseMs: 9000 };
  installer = new Fleet({ ...options, store });
  await installAll(list, app.url);
  const lines = [];
  const procs = Array.from({ length: workers }, (_, i) => spawnWorker({ redisPort: redis.port, prefix, worker: `b${i}`, options, handleMs: 0 }, lines));
  while (lines.filter((l) => l.ready).length < workers) await sleep(50);
  // Two scans (3 s each), so that the portals are shared before the changes come.
  await sleep(7000);
  await queueChanges(list);
  const handled = () => lines.reduce((a, l) => a + (l.ids ? l.ids.length : 0), 0);
  const cpu0 = procs.reduce((a, p) => a + cpuOf(p.child.pid), 0);
  const cmd0 = await redisCommands(client);
  const t0 = performance.now();
  while (handled() < n * PER_PORTAL) await sleep(50);
  const seconds = (performance.now() - t0) / 1000;
  const busyCommands = (await redisCommands(client)) - cmd0;
  const cpu = procs.reduce((a, p) => a + cpuOf(p.child.pid), 0) - cpu0;
  const per = {};
  for (const l of lines.filter((x) => x.ids)) (per[l.worker] ??= new Set()).add(l.member);
  await sleep(6000);
  const idleCmd0 = await redisCommands(client);
  const idleFrom = await requests(list);
  const idleT0 = performance.now();
  await sleep(20000);
  const idleSeconds = (performance.now() - idleT0) / 1000;
  const idleCommands = (await redisCommands(client)) - idleCmd0;
  const idleRequests = (await requests(list)) - idleFrom;
  for (const p of procs) p.child.kill('SIGTERM');
  await Promise.all(procs.map((p) => p.exited));
  await client.quit();
  app.close();
  redis.stop();
  const rate = (n * PER_PORTAL) / seconds;
  return {
    n,
    workers,
    rate,
    ratio: rate / (n * CEILING),
    cpuPerEventUs: (cpu * 1e6) / (n * PER_PORTAL),
    portalsPerWorker: Object.values(per).map((s) => s.size).sort((a, b) => b - a),
    busyCommandsPerSec: busyCommands / seconds,
    commandsPerBatch: busyCommands / (n * PER_PORTAL / 50),
    idleCommandsPerPortalHour: (idleCommands / n) * (3600 / idleSeconds),
    idlePerHour: (idleRequests / n) * (3600 / idleSeconds),
  };
}

const rows = [];
for (const n of [1, 50, 200]) rows.push(await round(n));
console.log('fleet: one worker, file store; 2 requests/s a portal, 50 events a batch (ceiling 100 events/s a portal)');
console.log('portals  events  seconds  events/s  ceiling  ratio  CPU us/event  idle CPU %/portal  RSS KB/portal  idle requests/portal/hour (maxIdleDelay 5 s)');
for (const r of rows) {
  console.log(
    [
      String(r.n).padEnd(7), String(r.events).padEnd(6), r.seconds.toFixed(1).padEnd(7), r.rate.toFixed(0).padEnd(8),
      String(r.ceiling).padEnd(7), r.ratio.toFixed(2).padEnd(5), r.cpuPerEventUs.toFixed(0).padEnd(12),
      r.idleCpuPerPortalPct.toFixed(3).padEnd(17), r.rssPerPortalKb.toFixed(0).padEnd(13), r.idlePerHour.toFixed(0),
    ].join('  '),
  );
}
console.log('at the defaults (maxIdleDelay 60 s, a sweep every 5 min): 72 requests per idle portal per hour (derived)');

const r = await shared(200, 3);
console.log(`fleet: ${r.workers} worker processes on one redis-server, ${r.n} portals (scan every 3 s), same limits`);
console.log('events/s  ceiling  ratio  workers CPU us/event  portals per worker  Redis commands/s busy  per batch  Redis commands/idle portal/hour  idle requests/portal/hour');
console.log(
  [
    r.rate.toFixed(0).padEnd(8), String(r.n * CEILING).padEnd(7), r.ratio.toFixed(2).padEnd(5), r.cpuPerEventUs.toFixed(0).padEnd(20),
    r.portalsPerWorker.join('/').padEnd(18), r.busyCommandsPerSec.toFixed(0).padEnd(21), r.commandsPerBatch.toFixed(1).padEnd(9),
    r.idleCommandsPerPortalHour.toFixed(0).padEnd(31), r.idlePerHour.toFixed(0),
  ].join('  '),
);
