// Answers have a size limit (`maxResponseBytes`, default 8 MiB): an answer over it is BAD_RESPONSE,
// refused on its content-length or read as a stream and dropped as soon as it passes the limit,
// so nothing over the limit is copied into the wasm, and the wasm memory stays bounded after many
// large answers (the Node build keeps std's allocator, which reuses memory across sizes). Against
// a stub HTTP server on 127.0.0.1 playing a hostile portal; the transport (glue.js `post`) is the
// browsers' too. Node build; needs a built pkg/ (not the emulator).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

// The package's wasm memory, seen by catching the instance it makes (it exports no handle).
const Instance = WebAssembly.Instance;
let memory;
WebAssembly.Instance = function (module, imports) {
  const instance = new Instance(module, imports);
  memory ??= Object.values(instance.exports).find((e) => e instanceof WebAssembly.Memory);
  return instance;
};
const { Bitrix24 } = await import('../../pkg/node/index.mjs');
WebAssembly.Instance = Instance;
assert.ok(memory, 'the package made one wasm memory');
const MiB = 1 << 20;
const wasmBytes = () => memory.buffer.byteLength;

// How the stub answers the next REST call: `length` bytes of JSON (`{"result":"xxx..."}`) in
// `chunk`-byte writes every `everyMs`, with a content-length when `declared` is given (which may
// lie). `written` counts what it managed to hand to the socket before the client hung up.
let plan = {};
let written = 0;
let closed = Promise.resolve();
const server = http.createServer((req, res) => {
  req.resume();
  const { length, chunk = 64 * 1024, everyMs = 0, declared, text = 'x' } = plan;
  written = 0;
  let finish;
  closed = new Promise((resolve) => { finish = resolve; });
  res.on('close', () => finish());
  const head = Buffer.from('{"result":"');
  const tail = Buffer.from('"}');
  // The content repeats `text`; a write may start anywhere in it (inside a character).
  const unit = Buffer.byteLength(text);
  const fill = Buffer.from(text.repeat(Math.ceil(chunk / unit) + 1));
  res.writeHead(200, { 'content-type': 'application/json', ...(declared !== undefined && { 'content-length': declared }) });
  let sent = 0;
  const step = () => {
    if (res.destroyed) return;
    if (sent === 0) { res.write(head); sent = head.length; written = sent; }
    while (sent < length - tail.length) {
      const at = (sent - head.length) % unit;
      const part = fill.subarray(at, at + Math.min(chunk, length - tail.length - sent));
      sent += part.length;
      const more = res.write(part);
      written = sent;
      if (!more) return res.once('drain', () => setTimeout(step, everyMs));
      if (everyMs) return setTimeout(step, everyMs);
    }
    res.end(tail);
    written = sent + tail.length;
  };
  step();
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
after(() => server.close());
const domain = `http://127.0.0.1:${server.address().port}`;

const client = (extra) => Bitrix24.withToken({ domain, accessToken: 't', allowHttp: true, limits: false, ...extra });
const badResponse = (e) => {
  assert.equal(e.name, 'B24Error');
  assert.equal(e.code, 'BAD_RESPONSE', e.message);
  assert.match(e.description, /maxResponseBytes/);
  assert.ok(!e.message.includes('xxx'), 'no answer content in the message');
  return true;
};

test('200 MB streamed slowly: BAD_RESPONSE as soon as the limit is passed, the rest never read', async () => {
  const limit = MiB;
  // 64 KiB every 5 ms: the whole answer would take over 15 s.
  plan = { length: 200e6, everyMs: 5 };
  const started = Date.now();
  await assert.rejects(client({ maxResponseBytes: limit }).call('crm.deal.list'), badResponse);
  const elapsed = Date.now() - started;
  await closed;
  assert.ok(elapsed < 3000, `failed after ${elapsed} ms`);
  assert.ok(written > limit && written < limit + MiB, `the server wrote ${written} bytes`);
});

test('a content-length over the limit is refused before the body is read', async () => {
  plan = { length: 200e6, everyMs: 20, declared: 200e6 };
  await assert.rejects(client({ maxResponseBytes: MiB }).call('crm.deal.list'), badResponse);
  await closed;
  assert.ok(written < 256 * 1024, `the server wrote ${written} bytes`);
  // The default limit is 8 MiB.
  plan = { length: 8 * MiB + 1, everyMs: 20, declared: 8 * MiB + 1 };
  await assert.rejects(client().call('crm.deal.list'), badResponse);
  await closed;
  assert.ok(written < 256 * 1024, `the server wrote ${written} bytes`);
});

test('an answer at the limit is read, in chunks that split multi-byte characters', async () => {
  const limit = MiB;
  for (const declared of [undefined, limit]) {
    plan = { length: limit, chunk: 1001, declared };
    const result = await client({ maxResponseBytes: limit }).call('crm.deal.list');
    assert.equal(result.length, limit - '{"result":""}'.length);
  }
  // 'ж' is two bytes and '€' three: odd chunk sizes cut them in two.
  plan = { length: 30_013, chunk: 997, text: 'ж€' };
  const result = await client({ maxResponseBytes: 30_013 }).call('crm.deal.list');
  assert.equal(result, 'ж€'.repeat(6000));
  plan = { length: 30_018, chunk: 997, text: 'ж€' };
  await assert.rejects(client({ maxResponseBytes: 30_013 }).call('crm.deal.list'), badResponse);
});

test('the wasm memory stays bounded after 20 answers over the limit and 20 under it', async () => {
  const limit = 4 * MiB;
  const b24 = client({ maxResponseBytes: limit });
  plan = { length: limit / 2 };
  await b24.call('crm.deal.list');
  const start = wasmBytes();
  for (let i = 0; i < 20; i++) {
    plan = { length: 50e6, chunk: 256 * 1024, declared: i % 2 ? 50e6 : undefined };
    await assert.rejects(b24.call('crm.deal.list'), badResponse);
  }
  const over = wasmBytes();
  assert.ok(over - start <= MiB, `over the limit: ${start} -> ${over} bytes`);
  for (let i = 0; i < 20; i++) {
    // Sizes that differ: memory freed by one is reused by the next.
    plan = { length: limit - (i % 5) * 700_000, chunk: 256 * 1024 };
    const result = await b24.call('crm.deal.list');
    assert.equal(result.length, plan.length - '{"result":""}'.length);
  }
  const under = wasmBytes();
  assert.ok(under <= start + 3 * limit, `under the limit: ${start} -> ${under} bytes`);
});

test('maxResponseBytes is a whole number of bytes from 1 to 256 MiB', () => {
  for (const maxResponseBytes of [0, -1, 1.5, 256 * MiB + 1, '8388608', Infinity, NaN]) {
    assert.throws(() => client({ maxResponseBytes }), (e) => e.code === 'INVALID_ARGUMENT' && /maxResponseBytes/.test(e.message), String(maxResponseBytes));
  }
  for (const maxResponseBytes of [1, 256 * MiB, undefined, null]) client({ maxResponseBytes });
});
