// `make bench`: the figures README records, measured in one run against a fresh emulator and the
// built package, printed as ratios of things measured side by side (this machine is noisy):
// - per call, library vs the same request by hand (fetch + JSON.parse), `call` and `q.list`,
//   in Node and in headless Chromium, one after another and 50 at once;
// - drain rate at the standard plan's limits (burst 50, 2 requests/s), `limit` 50, against the
//   ceiling those limits allow (one request per batch: 2 x 50 = 100 events/s);
// - requests of an idle polling consumer, per poll and per minute;
// - the download size, raw / gzip / brotli, against the official SDK's browser bundle.
// Needs EMULATOR_URL and a built pkg/ (`.ci/bench` provides both).
import { readFileSync } from 'node:fs';
import { gzipSync, brotliCompressSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../e2e/serve.mjs';
import { perCall } from './percall.js';

const EMULATOR = process.env.EMULATOR_URL;
if (!EMULATOR) throw new Error('EMULATOR_URL must point at a running emulator');
const root = fileURLToPath(new URL('../..', import.meta.url));
const lib = await import(`${root}/pkg/node/index.mjs`);

async function control(path, body, method = 'POST') {
  const r = await fetch(`${EMULATOR}/_emulator/${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  const v = await r.json();
  if (r.status !== 200) throw new Error(`${path}: ${JSON.stringify(v)}`);
  return v;
}

/** A fresh portal with `rateLimit`, the app's token, ONCRMDEALUPDATE bound offline and `n`
 *  changes queued. */
async function portal(rateLimit, n) {
  await control('reset', {});
  await fetch(`${EMULATOR}/_emulator/faults`, { method: 'DELETE' });
  await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true, auth_connector: true, token_ttl_s: 3600 });
  const token = (await control('token', {})).access_token;
  const b24 = lib.Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false });
  await b24.offline().bind('ONCRMDEALUPDATE');
  for (let first = 1; first <= n; first += 1000) {
    const items = Array.from({ length: Math.min(1000, n - first + 1) }, (_, i) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(first + i) } } }));
    await control('trigger', { items });
  }
  await control('config', { rate_limit: rateLimit });
  return token;
}

const requests = async () => Object.values((await control('stats', undefined, 'GET')).requests).reduce((a, b) => a + b, 0);
const byMethod = async () => ({ ...(await control('stats', undefined, 'GET')).requests });
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

function printPerCall(where, result) {
  for (const [name, modes] of Object.entries(result)) {
    for (const [mode, r] of Object.entries(modes)) {
      console.log(`  ${where.padEnd(8)} ${name.padEnd(7)} ${mode.padEnd(11)} ${fmt(r.ratio)}x  (p25 ${fmt(r.p25)}, p75 ${fmt(r.p75)}; by hand ${fmt(r.byHandMsPerCall, 3)} ms a call)`);
    }
  }
}

// ---- per call ----
console.log('per call, library time / the same request by hand (median of interleaved rounds)');
let token = await portal(null, 50);
printPerCall('node', await perCall({ lib, emulator: EMULATOR, token }));
const { server, url } = await serve('127.0.0.1');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking'],
});
try {
  token = await portal(null, 50);
  const page = await browser.newPage();
  await page.goto(`${url}/bench/page.html?emulator=${encodeURIComponent(EMULATOR)}&token=${encodeURIComponent(token)}`);
  page.on('pageerror', (e) => console.error(`browser bench page: ${e.message}`));
  await page.waitForFunction(() => window.benchResult !== undefined, null, { timeout: 300000 });
  const result = await page.evaluate(() => window.benchResult);
  if (result.error) throw new Error(`browser bench: ${result.error}`);
  printPerCall('chromium', result);
} finally {
  await browser.close();
  server.close();
}

// ---- drain at the real limits ----
{
  const n = 2000;
  token = await portal({ burst: 50, drain_per_sec: 2 }, n);
  const b24 = lib.Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: 'standard' });
  // Spend the burst first (on the portal and in the client's limiter): the steady state is what
  // a long drain sees.
  await Promise.all(Array.from({ length: 50 }, () => b24.call('profile')));
  const before = await byMethod();
  const marks = [];
  const t0 = performance.now();
  const summary = await b24.offline({ store: 'memory' }).consume(() => {}, {
    limit: 50,
    exclusive: false,
    onProgress: (p) => marks.push([performance.now(), p.acked]),
  });
  const seconds = (performance.now() - t0) / 1000;
  const after = await byMethod();
  const used = Object.entries(after).map(([m, c]) => [m, c - (before[m] || 0)]).filter(([, c]) => c > 0);
  const total = used.reduce((a, [, c]) => a + c, 0);
  // Steady state: from the first acknowledged batch to the last.
  const first = marks.find(([, a]) => a > 0);
  const last = marks[marks.length - 1];
  const steady = (last[1] - first[1]) / ((last[0] - first[0]) / 1000);
  console.log(`drain at burst 50, 2 requests/s, limit 50 (ceiling 100 events/s): ${summary.acked} events in ${fmt(seconds, 1)} s`);
  console.log(`  steady ${fmt(steady, 1)} events/s = ${fmt(steady / 100)} of the ceiling; whole run ${fmt(summary.acked / seconds, 1)} events/s`);
  console.log(`  ${total} requests for ${summary.batches} batches (${used.map(([m, c]) => `${m} ${c}`).join(', ')})`);
}

// ---- idle ----
{
  token = await portal(null, 0);
  const b24 = lib.Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false });
  const q = b24.offline({ store: 'memory' });
  const abort = new AbortController();
  // Short idle delays so that many polls fit in a few seconds; the first cycle (with its
  // sweep) is left out of the count.
  const run = q.consume(() => {}, { poll: true, idleDelay: 200, maxIdleDelay: 200, signal: abort.signal, exclusive: false });
  await new Promise((ok) => setTimeout(ok, 1000));
  const before = await byMethod();
  await new Promise((ok) => setTimeout(ok, 6000));
  const after = await byMethod();
  abort.abort();
  await run.catch(() => {});
  const used = Object.entries(after).map(([m, c]) => [m, c - (before[m] || 0)]).filter(([, c]) => c > 0);
  const polls = after.batch - (before.batch || 0);
  const total = used.reduce((a, [, c]) => a + c, 0);
  const perPoll = total / polls;
  // At the defaults (maxIdleDelay 30 s, strandedAfterMs 10 min: a sweep every 5 min, one list
  // request on an empty queue): 2 polls a minute plus a fifth of a sweep.
  console.log(`idle polling: ${fmt(perPoll)} requests a poll (${used.map(([m, c]) => `${m} ${c}`).join(', ')} in ${polls} polls)`);
  console.log(`  at the defaults: ${fmt(2 * perPoll + 0.2, 1)} requests an idle minute (2 polls + a fifth of a sweep)`);
}

// ---- size ----
{
  // Written by .ci/build: the wasm, the JS glue and its snippets of the web build.
  const sizes = JSON.parse(readFileSync(`${root}/target/pkg-sizes.json`, 'utf8')).total;
  const sdk = readFileSync(`${root}/www/node_modules/@bitrix24/b24jssdk/dist/umd/index.min.js`);
  const sdkGzip = gzipSync(sdk, { level: 9 }).length;
  const kb = (b) => `${(b / 1024).toFixed(1)} KB`;
  console.log(`download (wasm + JS, web build): ${kb(sizes.raw)} raw, ${kb(sizes.gzip)} gzip, ${kb(sizes.brotli)} brotli`);
  console.log(`  official SDK's browser bundle: ${kb(sdk.length)} raw, ${kb(sdkGzip)} gzip, ${kb(brotliCompressSync(sdk).length)} brotli; ours is ${fmt(sizes.gzip / sdkGzip)} of it (gzip)`);
}
