// Step 3 of the workflow, measured: 1,000 deals changed by someone else (a webhook, as a user
// in the portal would), consumed by the Node build with `objects: true`, every event checked
// against its deal; then the same 1,000 changes consumed the naive way (one crm.deal.get per
// event). Requests are counted by the client's own stats (retries included) and printed; the
// README's figures come from this test.
// Needs EMULATOR_URL and a built pkg/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bitrix24 } from '../../pkg/node/index.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
const DEALS = 1000;

async function control(path, body) {
  const r = await fetch(`${EMULATOR}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(r.status, 200, path);
  return r.json();
}

/** Runs `cmd` (a list of [method, params]) through the webhook, 50 to a batch. */
async function viaWebhook(hook, cmd) {
  for (let i = 0; i < cmd.length; i += 50) {
    const part = Object.fromEntries(cmd.slice(i, i + 50).map(([m, p], j) => [`c${j}`, `${m}?${new URLSearchParams(p)}`]));
    const r = await fetch(`${hook}batch.json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ halt: 0, cmd: part }) });
    const body = await r.json();
    assert.equal(r.status, 200);
    assert.deepEqual(body.result.result_error, [], JSON.stringify(body.result.result_error));
  }
}

const stage = (round) => `ROUND_${round}`;
const update = (round) => Array.from({ length: DEALS }, (_, i) => ['crm.deal.update', { id: i + 1, 'fields[STAGE_ID]': stage(round) }]);

/** Requests of one consume() run: [total, by method]. */
async function measured(b24, run) {
  const before = b24.stats();
  await run();
  const after = b24.stats();
  const by = {};
  for (const [m, count] of Object.entries(after.byMethod)) {
    const n = count - (before.byMethod[m] ?? 0);
    if (n) by[m] = n;
  }
  return [after.requests - before.requests, by];
}

test(`${DEALS} changed deals: objects fetched in one batch request per batch`, async () => {
  await control('reset', {});
  await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  const { access_token: token } = await control('token', {});
  const { url: hook } = await control('webhook', {});
  const b24 = Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false });
  const q = b24.offline({ store: 'memory' });
  await q.bind(['ONCRMDEALUPDATE']);
  await viaWebhook(hook, Array.from({ length: DEALS }, (_, i) => ['crm.deal.add', { 'fields[TITLE]': `deal ${i + 1}` }]));

  // With objects: every event has its deal, as it is now.
  await viaWebhook(hook, update(1));
  let seen = 0;
  const [withObjects, byWith] = await measured(b24, () => q.consume((events) => {
    for (const e of events) {
      assert.equal(e.objectState, 'found', JSON.stringify(e));
      assert.equal(e.object.ID, e.data.FIELDS.ID);
      assert.equal(e.object.TITLE, `deal ${e.data.FIELDS.ID}`);
      assert.equal(e.object.STAGE_ID, stage(1));
      seen++;
    }
  }, { objects: true, limit: 50, exclusive: false }));
  assert.equal(seen, DEALS);
  assert.equal((await q.list()).total, 0);

  // Naive: one crm.deal.get per event.
  await viaWebhook(hook, update(2));
  seen = 0;
  const [naive, byNaive] = await measured(b24, () => q.consume(async (events) => {
    for (const e of events) {
      const deal = await b24.call('crm.deal.get', { id: e.data.FIELDS.ID });
      assert.equal(deal.STAGE_ID, stage(2));
      seen++;
    }
  }, { limit: 50, exclusive: false }));
  assert.equal(seen, DEALS);

  console.log(`requests for ${DEALS} changed deals: with objects ${withObjects} ${JSON.stringify(byWith)}; naive ${naive} ${JSON.stringify(byNaive)}`);
  assert.equal(byWith['crm.deal.get'], undefined, 'no single get');
  assert.ok(withObjects <= 2 * (DEALS / 50) + 6, `with objects: ${withObjects}`);
  assert.ok(naive >= DEALS + DEALS / 50, `naive: ${naive}`);
});

test('bad objects options are refused by name before anything is reserved', async () => {
  await control('reset', {});
  await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  const { access_token: token } = await control('token', {});
  const b24 = Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false });
  const q = b24.offline({ store: 'memory' });
  await q.bind(['ONCRMDEALUPDATE']);
  await control('trigger', { items: [{ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: '1' } } }] });
  const cycle = {};
  cycle.self = cycle;
  for (const objects of ['yes', 1, [], { ONCRMDEALUPDATE: 'crm.deal.get' }, { ONCRMDEALUPDATE: { method: 'crm.deal.get', params: { id: 1 } } }, { X: { method: () => 1 } }, { X: cycle }]) {
    await assert.rejects(q.consume(() => assert.fail('handed over'), { objects, exclusive: false }), (e) => e.name === 'B24Error' && e.code === 'INVALID_ARGUMENT' && /objects/.test(e.message), JSON.stringify(objects, (k, v) => (v === cycle && k ? '[cycle]' : typeof v === 'function' ? 'fn' : v)));
  }
  const page = await q.list();
  assert.equal(page.total, 1);
  assert.equal(page.events[0].processId, undefined, 'nothing reserved');
});
