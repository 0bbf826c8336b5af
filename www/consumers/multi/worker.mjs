// One consumer process of the multi-consumer test: consumes the app's queue with the packed
// package until it reads "stop" on stdin, and writes what it did as JSON lines on stdout:
// {t: 'batch', pid, name, fromErrorQueue, start, end, ok: [[dealId, version]], failed: n}
// for every batch its handler saw, then {t: 'summary', ...}.
//
// Its handler is slow (20-120 ms), fetches every changed deal (step 3 of the workflow: the
// current state, whatever the event says), and fails a share of events the first time.
//
// argv[2]: JSON {emulator, app, name, store: 'file' | 'memory', dir, storeKey, timeoutMs,
//                handlerTimeoutMs, strandedAfterMs, failRate, seed}
import { Bitrix24 } from 'b24-offline';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
let seed = cfg.seed >>> 0 || 1;
const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function token() {
  const r = await fetch(`${cfg.emulator}/_emulator/token`, { method: 'POST', body: JSON.stringify({ client_id: cfg.app }) });
  return (await r.json()).access_token;
}

/** A journal store in a directory shared by every process: one file per key, written whole
 *  and renamed into place. */
function fileStore(dir) {
  mkdirSync(dir, { recursive: true });
  const path = (k) => join(dir, encodeURIComponent(k));
  let n = 0;
  return {
    get: (k) => { try { return readFileSync(path(k), 'utf8'); } catch { return null; } },
    set: (k, v) => { const tmp = `${path(k)}.${process.pid}.${n++}`; writeFileSync(tmp, v); renameSync(tmp, path(k)); },
    delete: (k) => rmSync(path(k), { force: true }),
  };
}

const b24 = Bitrix24.withToken({
  domain: cfg.emulator,
  accessToken: await token(),
  allowHttp: true,
  limits: false,
  timeoutMs: cfg.timeoutMs,
  refresh: async () => ({ accessToken: await token(), expiresIn: 3600 }),
});
const q = b24.offline({
  store: cfg.store === 'file' ? fileStore(cfg.dir) : 'memory',
  storeKey: cfg.storeKey,
  consumerId: cfg.name,
});
const stop = new AbortController();
process.stdin.on('data', (d) => { if (String(d).includes('stop')) stop.abort(); });
process.stdin.on('end', () => stop.abort());

const summary = await q.consume(async (events, ctx) => {
  const start = Date.now();
  await sleep(20 + random() * 100);
  const ok = [];
  const failed = [];
  for (const e of events) {
    if (!ctx.fromErrorQueue && random() < cfg.failRate) {
      failed.push(e);
      continue;
    }
    const id = e.data.FIELDS.ID;
    const deal = await b24.call('crm.deal.get', { id });
    ok.push([id, Number(String(deal.TITLE).slice(1))]);
  }
  out({ t: 'batch', pid: ctx.processId, name: cfg.name, fromErrorQueue: ctx.fromErrorQueue, start, end: Date.now(), ok, failed: failed.length });
  return { failed };
}, {
  limit: 10,
  poll: true,
  idleDelay: 100,
  maxIdleDelay: 300,
  exclusive: false,
  handlerTimeoutMs: cfg.handlerTimeoutMs,
  strandedAfterMs: cfg.strandedAfterMs,
  signal: stop.signal,
  onError: (e) => out({ t: 'error', name: cfg.name, code: e.code }),
});
out({ t: 'summary', name: cfg.name, summary });
