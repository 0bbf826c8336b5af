// The queue console: a small app built on b24-offline, running inside the emulator's portal
// page. Everything it does goes through the package's public API; the only other calls are to
// the emulator's control API, to make "a user changed a deal" happen.
import init, { Bitrix24, B24Error } from '/pkg/web/b24_offline.js';

const $ = (id) => document.getElementById(id);
const EVENTS = ['ONCRMDEALUPDATE', 'ONCRMDEALADD'];
let b24, queue, controller = null, start = 0, progress = {}, attempts = new Map();

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $('log').prepend(li);
}

function counters(el, pairs) {
  el.replaceChildren(...pairs.map(([k, v]) => {
    const d = document.createElement('div');
    d.innerHTML = `<dt></dt><dd></dd>`;
    d.firstChild.textContent = k;
    d.lastChild.textContent = v;
    return d;
  }));
}

async function guarded(fn) {
  try {
    await fn();
  } catch (e) {
    log(e instanceof B24Error ? `${e.code}: ${e.description}` : String(e));
  }
}

async function showQueue() {
  const page = await queue.list({ order: { ID: 'ASC' }, start });
  $('total').textContent = `· ${page.total} rows`;
  $('page').textContent = page.total ? `${start + 1}–${start + page.events.length} of ${page.total}` : 'empty';
  $('prev').disabled = start === 0;
  $('next').disabled = page.next === undefined;
  $('rows').replaceChildren(...page.events.map((e) => {
    const tr = document.createElement('tr');
    const state = e.error ? ['error', 'error queue'] : e.processId ? ['reserved', 'reserved'] : ['free', 'free'];
    for (const text of [e.id, e.name, e.data?.FIELDS?.ID ?? '', e.timestamp.slice(11, 19)]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement('td');
    td.innerHTML = `<span class="state ${state[0]}">${state[1]}</span>`;
    tr.append(td);
    return tr;
  }));
}

function showStats() {
  const s = b24.stats();
  counters($('stats'), [['requests', s.requests], ['retries', s.retries], ['rate limited', s.rateLimited], ['waited, s', (s.waitedMs / 1000).toFixed(1)], ['refreshes', s.refreshes], ['bucket', s.bucketLevel.toFixed(1)], ['op. limited', s.operatingLimited], ['errors', Object.values(s.errors).reduce((a, b) => a + b, 0)]]);
  $('methods').replaceChildren(...Object.entries(s.byMethod).map(([m, n]) => {
    const tr = document.createElement('tr');
    const op = s.operating.find((o) => o.method === m);
    for (const text of [m, n, op ? op.seconds.toFixed(3) : '–']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

function showProgress(p) {
  progress = p;
  counters($('counters'), [['reserved', p.reserved], ['acked', p.acked], ['to error queue', p.failed], ['recovered', p.recovered], ['parked', p.parked], ['released', p.released ?? 0], ['duplicates', p.duplicates], ['batches', p.batches], ['remaining', p.remaining ?? '?']]);
  const all = p.acked + (p.remaining ?? 0);
  $('bar').style.width = all ? `${Math.min(100, (100 * p.acked) / all)}%` : '0';
}

async function bind() {
  const r = await queue.bind(EVENTS);
  log(`bound ${r.map((b) => `${b.event}${b.created ? '' : ' (already)'}`).join(', ')}`);
  const list = await queue.bindings();
  $('bindings').textContent = list.filter((b) => b.offline).map((b) => b.event).join(', ') || 'none';
}

async function trigger(n) {
  const first = Math.floor(Math.random() * 100000);
  const items = Array.from({ length: n }, (_, i) => ({ event: EVENTS[0], data: { FIELDS: { ID: String(first + i) } } }));
  const r = await fetch(`${location.protocol === 'https:' ? 'https' : 'http'}://${b24.frame.domain}/_emulator/trigger`, { method: 'POST', body: JSON.stringify({ items }) });
  log(`${(await r.json()).queued} changes queued`);
  await showQueue();
}

async function consume() {
  controller = new AbortController();
  $('start').disabled = true;
  $('stop').disabled = false;
  const failRate = Number($('failRate').value) / 100;
  attempts = new Map();
  const handler = async (events, ctx) => {
    await new Promise((r) => setTimeout(r, 60)); // "work"
    const failed = [];
    for (const e of events) {
      const n = (attempts.get(e.messageId) || 0) + 1;
      attempts.set(e.messageId, n);
      if (!ctx.fromErrorQueue && n === 1 && Math.random() < failRate) failed.push(e.messageId);
    }
    return { failed };
  };
  log('consumer started');
  try {
    const s = await queue.consume(handler, {
      limit: Number($('limit').value), concurrency: Number($('concurrency').value), signal: controller.signal,
      onProgress: showProgress, errors: 'include',
    });
    showProgress(s);
    log(`consumer ${s.stopped}: ${s.acked} acked, ${s.failed} went through the error queue, ${s.duplicates} duplicates`);
    document.body.dataset.consumed = String(s.acked);
  } catch (e) {
    log(e instanceof B24Error ? `${e.code}: ${e.description}` : String(e));
  }
  $('start').disabled = false;
  $('stop').disabled = true;
  controller = null;
  await showQueue();
}

async function main() {
  await init();
  try {
    b24 = await Bitrix24.fromFrame({ allowHttp: true, limits: 'standard' });
  } catch (e) {
    $('fatal').hidden = false;
    $('fatal').textContent = `${e.code}: ${e.description}. Start the demo with "make demo" and open the portal URL it prints.`;
    $('where').textContent = 'not inside a portal';
    return;
  }
  queue = b24.offline();
  const f = b24.frame;
  $('where').textContent = `${f.domain} · ${f.placement} · ${f.isAdmin ? 'administrator' : 'employee'}`;
  const features = await queue.features();
  $('features').innerHTML = `<span class="${features.extended ? '' : 'off'}">reservations</span><span class="${features.connector ? '' : 'off'}">connectors</span>`;
  $('main').hidden = false;
  await b24.frame.setTitle('Offline queue console');
  $('bind').onclick = () => guarded(bind);
  $('trigger10').onclick = () => guarded(() => trigger(10));
  $('trigger100').onclick = () => guarded(() => trigger(100));
  $('start').onclick = () => guarded(consume);
  $('stop').onclick = () => controller?.abort();
  $('prev').onclick = () => guarded(async () => { start = Math.max(0, start - 50); await showQueue(); });
  $('next').onclick = () => guarded(async () => { start += 50; await showQueue(); });
  showProgress({ reserved: 0, acked: 0, failed: 0, recovered: 0, parked: 0, duplicates: 0, batches: 0 });
  await guarded(async () => {
    const list = await queue.bindings();
    $('bindings').textContent = list.filter((b) => b.offline).map((b) => b.event).join(', ') || 'no bindings yet';
    await showQueue();
  });
  setInterval(showStats, 500);
  setInterval(() => controller && guarded(showQueue), 1000);
  document.body.dataset.ready = 'true';
  log('ready');
}

main();
