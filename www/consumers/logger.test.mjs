// The logger hook with the official SDK's own Logger (@bitrix24/b24jssdk, installed for tests
// only): the library's log lines arrive through its LoggerInterface with a structured context
// (portal, method, processId); a logger that throws or rejects never breaks the work; a logger
// of the wrong shape is refused by name. Node build, against the emulator.
// Needs EMULATOR_URL and a built pkg/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Logger, MemoryHandler, LogLevel } from '@bitrix24/b24jssdk';
import { Bitrix24 } from '../../pkg/node/index.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');

async function control(path, body, method = 'POST') {
  const r = await fetch(`${EMULATOR}/_emulator/${path}`, { method, body: method === 'DELETE' ? undefined : JSON.stringify(body) });
  assert.equal(r.status, 200, path);
  return r.json();
}

async function fresh() {
  await control('reset', {});
  await control('faults', {}, 'DELETE');
  await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  return (await control('token', {})).access_token;
}

const host = new URL(EMULATOR).host;

test("the official SDK's Logger receives the lines with their context", async () => {
  const token = await fresh();
  const logger = Logger.create('b24-offline');
  const memory = new MemoryHandler(LogLevel.DEBUG);
  logger.pushHandler(memory);
  const b24 = Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false, retries: 2, logger });
  const q = b24.offline({ store: 'memory' });
  await q.bind(['ONCRMDEALUPDATE']);
  await control('trigger', { items: [1, 2, 3].map((id) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(id) } } })) });
  // One failed answer (retried), and a handler that throws once (the batch goes to the error queue).
  await control('faults', { rules: [{ method: 'event.offline.list', kind: 'http_500', times: 1 }] });
  let calls = 0;
  const summary = await q.consume(() => { if (calls++ === 0) throw new Error('boom'); }, { exclusive: false });
  assert.equal(summary.acked, 3);
  await new Promise((r) => setTimeout(r, 20));
  const records = memory.getRecords();
  const retry = records.find((r) => r.message.startsWith('retrying event.offline.list'));
  assert.ok(retry, JSON.stringify(records));
  assert.equal(retry.levelName, 'WARNING');
  assert.deepEqual(retry.context, { portal: host, method: 'event.offline.list' });
  const threw = records.find((r) => r.message.startsWith('the handler threw'));
  assert.ok(threw, JSON.stringify(records));
  assert.equal(threw.context.portal, host);
  assert.match(threw.context.processId, /\S/);
  for (const r of records) assert.ok(!r.message.includes(token) && !JSON.stringify(r.context).includes(token), 'no token in a log line');
});

test('a logger that throws or rejects never breaks the work', async () => {
  for (const logger of [
    () => { throw new Error('logger down'); },
    { debug: async () => { throw new Error('x'); }, info: async () => { throw new Error('x'); }, warning: () => Promise.reject(new Error('x')), error: () => { throw new Error('x'); } },
  ]) {
    const token = await fresh();
    const b24 = Bitrix24.withToken({ domain: EMULATOR, accessToken: token, allowHttp: true, limits: false, retries: 2, logger });
    const q = b24.offline({ store: 'memory' });
    await q.bind(['ONCRMDEALUPDATE']);
    await control('trigger', { items: [{ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: '1' } } }] });
    await control('faults', { rules: [{ method: 'event.offline.list', kind: 'http_500', times: 1 }] });
    let calls = 0;
    const summary = await q.consume(() => { if (calls++ === 0) throw new Error('boom'); }, { exclusive: false });
    assert.equal(summary.acked, 1);
  }
  // A rejection left unhandled would have failed this test file by now.
  await new Promise((r) => setTimeout(r, 20));
});

test('a logger of the wrong shape is refused by name', () => {
  for (const logger of ['console', 1, {}, { debug() {}, info() {}, warn() {}, error() {} }, { debug() {}, info() {}, warning: 1, error() {} }]) {
    assert.throws(() => Bitrix24.withToken({ domain: EMULATOR, accessToken: 't', allowHttp: true, logger }), (e) => e.name === 'B24Error' && e.code === 'INVALID_ARGUMENT' && /^INVALID_ARGUMENT: logger/.test(e.message), String(logger));
  }
});
