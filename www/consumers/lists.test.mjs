// fetchList / callList from the Node build against the emulator's CRM: pages by >ID without
// counting when the order allows, by offset otherwise; an early break costs no more requests;
// bad arguments are refused before any request.
// Needs EMULATOR_URL and a built pkg/.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { Bitrix24 } from '../../pkg/node/index.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
let b24;

async function control(path, body) {
  const r = await fetch(`${EMULATOR}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(r.status, 200, path);
  return r.json();
}

before(async () => {
  await control('reset', {});
  await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  const { access_token: token } = await control('token', {});
  b24 = Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false });
  const cmd = {};
  for (let i = 1; i <= 120; i++) cmd[`a${i}`] = ['crm.deal.add', { fields: { TITLE: `deal ${String(i).padStart(3, '0')}` } }];
  const r = await b24.batch(cmd);
  assert.ok(r.ok);
});

const ids = (rows) => rows.map((r) => Number(r.ID));
const requests = () => b24.stats().byMethod['crm.deal.list'] ?? 0;

test('fetchList pages by ID without counting, callList collects', async () => {
  const before = requests();
  const pages = [];
  for await (const rows of b24.fetchList('crm.deal.list', { select: ['ID', 'TITLE'] })) pages.push(ids(rows));
  assert.deepEqual(pages.map((p) => p.length), [50, 50, 20]);
  assert.deepEqual(pages.flat(), Array.from({ length: 120 }, (_, i) => i + 1));
  assert.equal(requests() - before, 3, 'no empty last page');
  const all = await b24.callList('crm.deal.list', { filter: { '>ID': 100 } });
  assert.deepEqual(ids(all), Array.from({ length: 20 }, (_, i) => i + 101));
});

test('another order pages by offset; an early break sends nothing more', async () => {
  const all = await b24.callList('crm.deal.list', { order: { TITLE: 'DESC' } });
  assert.equal(all.length, 120);
  assert.equal(all[0].TITLE, 'deal 120');
  const before = requests();
  for await (const rows of b24.fetchList('crm.deal.list')) {
    assert.equal(rows.length, 50);
    break;
  }
  assert.equal(requests() - before, 1);
});

test('bad arguments reject before any request', async () => {
  const before = b24.stats().requests;
  for (const [params, options] of [[{ start: 50 }, undefined], ['x', undefined], [{ filter: 'ID>1' }, undefined], [{}, { idKey: '' }], [{}, { resultKey: 7 }], [{}, 'fast']]) {
    await assert.rejects(b24.callList('crm.deal.list', params, options), (e) => e.name === 'B24Error' && e.code === 'INVALID_ARGUMENT', JSON.stringify([params, options]));
  }
  await assert.rejects(b24.callList('crm deal list'), (e) => e.code === 'INVALID_ARGUMENT');
  assert.equal(b24.stats().requests, before);
  assert.equal(typeof b24.listPage, 'function', 'the facade builds on it');
});
