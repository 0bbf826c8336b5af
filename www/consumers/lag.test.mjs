// Consumer lag in the progress a queue reports (issue 19): how old the oldest change of the
// batch in hand was when it was handed over, and 0 once both queues were found empty; the
// reservations of unknown owner waiting to be released. Its own emulator (the npm one, from the
// built pkg/): the shared one's clock has been moved forward by other tests, and lag compares the
// portal's clock with this machine's.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Bitrix24 } from '../../pkg/node/index.mjs';
import { startEmulator } from '../../pkg/emulator/index.mjs';

const emu = await startEmulator({ host: '127.0.0.1', port: 0 });
after(() => emu.stop());
const EMULATOR = emu.url;
const ctl = (path, body) => fetch(`${EMULATOR}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) }).then((r) => r.json());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('progress carries the lag of the batch in hand, and 0 once the queue is empty', async () => {
  assert.equal((await (await fetch(`${EMULATOR}/_emulator/clock`)).json()).offset_s, 0);
  await ctl('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  const { access_token: token } = await ctl('token', {});
  const b24 = Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false });
  const q = b24.offline({ store: 'memory' });
  await q.bind('ONCRMDEALUPDATE');
  await ctl('trigger', { items: [1, 2, 3].map((id) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(id) } } })) });
  // The changes wait a while (TIMESTAMP_X has whole seconds).
  await sleep(2100);
  const seen = [];
  const summary = await q.consume(() => {}, { onProgress: (p) => seen.push(p) });
  assert.equal(summary.acked, 3);
  const handedOver = seen.find((p) => p.batches === 1);
  assert.ok(handedOver, JSON.stringify(seen));
  assert.ok(handedOver.lagMs >= 1000 && handedOver.lagMs < 30000, `lag ${handedOver.lagMs} ms`);
  assert.equal(summary.lagMs, 0, 'both queues empty at the end');
  assert.equal(summary.waiting, 0);
});
