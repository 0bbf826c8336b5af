// A Node consumer SIGKILLed in the middle of a batch, restarted on the same journal without a
// consumerId: the restarted process takes the batch back within seconds (its predecessor's id
// names a process of this host that no longer runs), not after strandedAfterMs (issue 19).
// Needs EMULATOR_URL and a built pkg/.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
const pkg = fileURLToPath(new URL('../../pkg/node/index.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'b24-restart-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The consumer process: a journal in files of `dir`, the default (random) consumer id, the
// default strandedAfterMs (ten minutes). Its handler prints the batch, then hangs when told to.
const script = join(dir, 'consumer.mjs');
writeFileSync(script, `
import { Bitrix24 } from ${JSON.stringify(pkg)};
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const [emulator, dir, mode] = process.argv.slice(2);
const path = (k) => join(dir, 'journal', encodeURIComponent(k));
mkdirSync(join(dir, 'journal'), { recursive: true });
let n = 0;
const store = {
  get: (k) => { try { return readFileSync(path(k), 'utf8'); } catch { return null; } },
  set: (k, v) => { const t = path(k) + '.' + process.pid + '.' + n++; writeFileSync(t, v); renameSync(t, path(k)); },
  delete: (k) => rmSync(path(k), { force: true }),
};
const token = async () => (await (await fetch(emulator + '/_emulator/token', { method: 'POST', body: '{}' })).json()).access_token;
const b24 = Bitrix24.withToken({ domain: emulator, accessToken: await token(), allowHttp: true, limits: false });
const q = b24.offline({ store, storeKey: 'restart' });
const stop = new AbortController();
await q.consume(async (events, ctx) => {
  process.stdout.write(JSON.stringify({ ids: events.map((e) => e.data.FIELDS.ID), recovered: ctx.recovered, fromErrorQueue: ctx.fromErrorQueue, at: Date.now() }) + '\\n');
  if (mode === 'hang') await new Promise(() => {});
  stop.abort();
}, { signal: stop.signal, poll: true, idleDelay: 200, maxIdleDelay: 500 }).catch((e) => { if (e.code !== 'ABORTED') throw e; });
`);

function start(mode) {
  const child = spawn(process.execPath, [script, EMULATOR, dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { lines.push(JSON.parse(buf.slice(0, i))); buf = buf.slice(i + 1); }
  });
  return { child, lines, exited: new Promise((r) => child.once('exit', r)) };
}

async function until(what, limitMs, done) {
  const end = Date.now() + limitMs;
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a SIGKILLed Node consumer restarted on its journal takes its batch back at once', async () => {
  const ctl = (path, body) => fetch(`${EMULATOR}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) }).then((r) => r.json());
  await ctl('reset', {});
  await ctl('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  const { access_token: t } = await ctl('token', {});
  await fetch(`${EMULATOR}/rest/event.bind.json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ auth: t, event: 'ONCRMDEALUPDATE', event_type: 'offline' }) });
  await ctl('trigger', { items: [1, 2, 3].map((id) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(id) } } })) });
  const first = start('hang');
  await until('the first process to hold the batch', 20000, () => first.lines.length > 0);
  assert.deepEqual(first.lines[0].ids, ['1', '2', '3']);
  first.child.kill('SIGKILL');
  await first.exited;
  const killedAt = Date.now();
  const second = start('ack');
  try {
    await until('the restarted process to get the batch back', 20000, () => second.lines.length > 0);
  } finally {
    second.child.kill('SIGKILL');
  }
  const got = second.lines[0];
  assert.deepEqual(got.ids.sort(), ['1', '2', '3']);
  assert.ok(got.at - killedAt < 10000, `took ${got.at - killedAt} ms (strandedAfterMs is 600000)`);
});
