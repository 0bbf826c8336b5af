// The fleet's figures, one worker on the embedded file store against 1, 50 and 200 emulator
// portals at the real request rate (2 a second a portal, 50 events a batch: a ceiling of 100
// events a second a portal; the burst is 2 so the steady state starts at once): aggregate
// events/s against the sum of the ceilings, the worker's CPU and resident memory per portal,
// and requests per idle portal per hour. Needs EMULATOR_URL and a built pkg/.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fleet, FileStore, serve } from '../consumers/fleet/app.mjs';

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

async function round(n) {
  const dir = mkdtempSync(join(tmpdir(), 'b24-fleet-bench-'));
  const { portals: list } = await ctl(EMULATOR, 'portals', { count: n, config: { rate_limit: RATE } });
  let fleet;
  const app = await serve({ install: (b) => fleet.install(b), uninstall: (b) => fleet.uninstall(b), signal: (b) => fleet.signal(b) });
  fleet = new Fleet({
    oauth: { clientId: 'app.bench', clientSecret: 'secret' },
    store: new FileStore(dir),
    events: ['ONCRMDEALUPDATE'],
    signalUrl: `${app.url}/signal`,
    allowHttp: true,
    concurrency: 64,
    plan: { burst: RATE.burst, drainPerSec: RATE.drain_per_sec },
    maxIdleDelay: 5000,
    strandedAfterMs: 120000,
    handlerTimeoutMs: 20000,
    timeoutMs: 10000,
  });
  for (const p of list) {
    const r = await ctl(p.origin, 'install', { client_id: 'app.bench', handler: `${app.url}/install` });
    if (!r.delivered) throw new Error('install not delivered');
  }
  for (const p of list) {
    const items = Array.from({ length: PER_PORTAL }, (_, i) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(i + 1) } } }));
    await ctl(p.origin, 'trigger', { items });
  }
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
