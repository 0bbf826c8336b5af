// End to end in headless Chromium: the emulator's portal page (origin A) hosts a test app
// (origin B) that loads the built package, gets its token with fromFrame(), binds an offline
// event and consumes with reserve/ack; the test drives the emulator's control API and checks
// the counts. Also: refresh through the portal, a forged answer from a third origin, opening
// the app outside the portal, and the official SDK initialising against the same page.
//
// Needs EMULATOR_URL (an emulator on 127.0.0.1) and a built pkg/ (`make build`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
let browser, app, third;

before(async () => {
  // Origin B (localhost) and origin C (127.0.0.1) are both this static server's: different
  // origins from the portal (127.0.0.1:EMULATOR_PORT) and from each other.
  app = await serve('localhost');
  third = await serve('127.0.0.1');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  app?.server.close();
  third?.server.close();
});

async function control(path, body) {
  const r = await fetch(`${EMULATOR}/_emulator/${path}`, { method: body === undefined ? 'GET' : 'POST', body: body === undefined ? undefined : JSON.stringify(body) });
  assert.equal(r.status, 200, `control ${path}`);
  return r.json();
}

/** Opens the portal page hosting `page` of the app server (`server`: another one); resolves
 *  with the page and the app's frame. */
async function portal(page, params = {}, server = app) {
  const tab = await browser.newPage();
  const q = new URLSearchParams({ app: `${server.url}/e2e/${page}`, ...params });
  await tab.goto(`${EMULATOR}/portal/?${q}`);
  await tab.waitForFunction(() => window.portal && window.portal.ready);
  const frame = await waitFor(() => tab.frames().find((f) => f.url().startsWith(server.url)));
  await frame.waitForFunction(() => window.app && window.app.status !== 'loading', null, { timeout: 15000 });
  return { tab, frame };
}

async function waitFor(fn, ms = 10000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function trigger(n, first = 1) {
  const items = Array.from({ length: n }, (_, i) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(first + i) } } }));
  return (await control('trigger', { items })).queued;
}

test('an app in the portal page consumes offline events with reserve/ack', async () => {
  await control('reset', {});
  await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
  const { tab, frame } = await portal('frame-app.html', { placement: 'CRM_DEAL_DETAIL_TAB', options: '{"ID":"42"}' });
  const appState = await frame.evaluate(() => ({ status: window.app.status, context: window.app.context, domain: window.app.domain }));
  assert.equal(appState.status, 'ready', JSON.stringify(appState));
  assert.equal(appState.context.placement, 'CRM_DEAL_DETAIL_TAB');
  assert.deepEqual(appState.context.placementOptions, { ID: '42' });
  assert.equal(appState.context.isAdmin, true);
  assert.equal(appState.domain, new URL(EMULATOR).host);
  await frame.evaluate(() => window.app.bind());
  assert.equal(await trigger(120), 120);
  const handled = await frame.evaluate(() => window.app.consumeByHand());
  assert.equal(handled, 120);
  const rows = await control('queue');
  assert.equal(rows.length, 0, 'queue empty');
  await frame.evaluate(() => window.app.title('Offline queue'));
  assert.equal(await tab.textContent('#title'), 'Offline queue');
  const log = await tab.evaluate(() => window.portal.commands.map((c) => c.command));
  assert.deepEqual(log.filter((c) => c !== 'resizeWindow'), ['getInitData', 'setTitle']);
  await tab.screenshot({ path: new URL('../../target/e2e-portal.png', import.meta.url).pathname });
  await tab.close();
});

test('an expired token is refreshed through the portal, once', async () => {
  await control('reset', {});
  const { tab, frame } = await portal('frame-app.html');
  const token = await tab.evaluate(() => window.portal.auth().access_token);
  await control('expire', { access_token: token });
  const results = await frame.evaluate(() => Promise.all([1, 2, 3, 4, 5].map(() => window.app.profile())));
  assert.equal(results.length, 5);
  assert.equal(await tab.evaluate(() => window.portal.refreshes), 1, 'five expired calls, one refreshAuth');
  const stats = await frame.evaluate(() => window.app.stats());
  assert.equal(stats.refreshes, 1);
  await tab.close();
});

test('a forged answer from a third origin is ignored', async () => {
  await control('reset', {});
  // The portal never answers getInitData; a third-origin frame answers it instead, with the
  // right callback id. The app must not take it: its fromFrame() times out.
  const tab = await browser.newPage();
  const q = new URLSearchParams({ app: `${app.url}/e2e/frame-app.html?timeout=2500`, mute: 'getInitData', third: `${third.url}/e2e/third.html` });
  await tab.goto(`${EMULATOR}/portal/?${q}`);
  const request = await waitFor(() => tab.evaluate(() => window.portal && window.portal.commands.find((c) => c.command === 'getInitData')));
  const thirdFrame = await waitFor(() => tab.frames().find((f) => f.url().startsWith(third.url)));
  await thirdFrame.evaluate((cb) => {
    const forged = `${cb}:${JSON.stringify({ AUTH_ID: 'forged', AUTH_EXPIRES: 3600, DOMAIN: 'evil.example' })}`;
    for (let i = 0; i < 3; i++) window.parent.frames[0].postMessage(forged, '*');
    window.parent.frames[0].postMessage({ not: 'a string' }, '*');
  }, request.callback);
  const frame = tab.frames().find((f) => f.url().startsWith(app.url));
  await frame.waitForFunction(() => window.app && window.app.status !== 'loading', null, { timeout: 10000 });
  const state = await frame.evaluate(() => window.app);
  assert.equal(state.status, 'failed');
  assert.equal(state.error.code, 'FRAME_UNAVAILABLE');
  assert.match(state.error.message, /did not answer getInitData/);
  await tab.close();
});

test('an answer from the portal origin that the parent did not post is ignored', async () => {
  await control('reset', {});
  // A sibling frame on the portal's own origin (the emulator's root page) answers getInitData
  // in the portal's place, with the right callback id: not the parent, so not heard.
  const tab = await browser.newPage();
  const q = new URLSearchParams({ app: `${app.url}/e2e/frame-app.html?timeout=2500`, mute: 'getInitData', third: `${EMULATOR}/` });
  await tab.goto(`${EMULATOR}/portal/?${q}`);
  const request = await waitFor(() => tab.evaluate(() => window.portal && window.portal.commands.find((c) => c.command === 'getInitData')));
  const sibling = await waitFor(() => tab.frames().find((f) => f !== tab.mainFrame() && f.url().startsWith(EMULATOR)));
  await sibling.evaluate((cb) => {
    window.parent.frames[0].postMessage(`${cb}:${JSON.stringify({ AUTH_ID: 'forged', AUTH_EXPIRES: 3600 })}`, '*');
  }, request.callback);
  const frame = tab.frames().find((f) => f.url().startsWith(app.url));
  await frame.waitForFunction(() => window.app && window.app.status !== 'loading', null, { timeout: 10000 });
  const state = await frame.evaluate(() => window.app);
  assert.equal(state.status, 'failed');
  assert.match(state.error.message, /did not answer getInitData/);
  await tab.close();
});

test('an app pinned to its portals refuses any other portal before talking to it', async () => {
  await control('reset', {});
  const host = new URL(EMULATOR).host;
  const refused = await portal('frame-app.html?portals=acme.bitrix24.com,*.bitrix24.de');
  const state = await refused.frame.evaluate(() => window.app);
  assert.equal(state.status, 'failed');
  assert.equal(state.error.code, 'FRAME_UNAVAILABLE');
  assert.match(state.error.message, /portals/);
  const log = await refused.tab.evaluate(() => window.portal.commands.map((c) => c.command));
  assert.deepEqual(log, [], 'not even getInitData was sent');
  await refused.tab.close();
  const allowed = await portal(`frame-app.html?portals=acme.bitrix24.com,${host}`);
  assert.equal(await allowed.frame.evaluate(() => window.app.status), 'ready');
  await allowed.tab.close();
});

/** Reloads the app's frame as a user would, and waits for the new page to be ready. */
async function reload(tab, server) {
  const frame = tab.frames().find((f) => f.url().startsWith(server.url));
  await frame.evaluate(() => location.reload());
  await new Promise((r) => setTimeout(r, 300));
  const again = await waitFor(() => tab.frames().find((f) => f.url().startsWith(server.url)));
  await again.waitForFunction(() => window.app && window.app.status === 'ready', null, { timeout: 15000 });
  return again;
}

for (const exclusive of [true, false]) {
  test(`a reload in the middle of a batch: the new page takes it back at once (${exclusive ? 'under the Web Lock' : 'by the sign of life'})`, async () => {
    await control('reset', {});
    await control('config', { rate_limit: null, operating_limit_s: null, extended_mode: true });
    // The app on the portal's site (another port of 127.0.0.1): a same-site frame keeps its
    // localStorage and Web Locks, which Chromium withholds from this cross-site test frame.
    const { tab, frame } = await portal('frame-app.html?store=local', {}, third);
    assert.equal(await frame.evaluate(() => window.app.status), 'ready', JSON.stringify(await frame.evaluate(() => window.app)));
    await frame.evaluate(() => { window.app.forget(); return window.app.bind(); });
    assert.equal(await trigger(60), 60);
    await frame.evaluate((x) => window.app.consumeAndHang(x), exclusive);
    await frame.waitForFunction(() => window.app.inHandler === 2, null, { timeout: 10000 });
    const rows = await control('queue');
    assert.equal(rows.filter((r) => r.PROCESS_ID).length, 20, 'the second batch is reserved');
    const again = await reload(tab, third);
    // With default settings (strandedAfterMs ten minutes) the batch comes back at once: the
    // first page is gone (its Web Locks went with it).
    const found = exclusive ? [] : await again.evaluate(() => window.app.recoverAndAck());
    const summary = await again.evaluate(() => window.app.consumeAll());
    if (exclusive) {
      assert.equal(summary.recovered, 20, JSON.stringify(summary));
    } else {
      assert.deepEqual(found, [{ recovered: true, events: 20 }]);
    }
    assert.ok(summary.ms < 5000, `in ${summary.ms} ms`);
    const seen = await again.evaluate(() => window.app.seen());
    assert.equal(new Set(seen).size, 60, 'every event handled');
    assert.equal(seen.length, 80, 'the interrupted batch twice, the rest once');
    assert.equal((await control('queue')).length, 0, 'nothing left or reserved');
    await tab.close();
  });
}

test('outside the portal the app fails fast with FRAME_UNAVAILABLE', async () => {
  const tab = await browser.newPage();
  await tab.goto(`${app.url}/e2e/frame-app.html`);
  await tab.waitForFunction(() => window.app && window.app.status !== 'loading');
  const state = await tab.evaluate(() => window.app);
  assert.equal(state.status, 'failed');
  assert.equal(state.error.code, 'FRAME_UNAVAILABLE');
  assert.equal(state.error.isB24Error, true);
  assert.ok(state.ms < 500, `failed in ${state.ms} ms`);
  await tab.close();
});

test("an app on the official SDK hands its B24Frame's auth over: no second handshake, refreshes through it", async () => {
  await control('reset', {});
  const { tab, frame } = await portal('b24jssdk-handover.html', { placement: 'DEFAULT' });
  const state = await frame.evaluate(() => ({ status: window.app.status, admin: window.app.admin, error: window.app.error }));
  assert.equal(state.status, 'ready', JSON.stringify(state));
  assert.equal(state.admin, true);
  const token = await tab.evaluate(() => window.portal.auth().access_token);
  await control('expire', { access_token: token });
  assert.deepEqual(await frame.evaluate(() => Promise.all([1, 2, 3].map(() => window.app.profile()))), [true, true, true]);
  const log = await tab.evaluate(() => window.portal.commands.map((c) => c.command));
  assert.equal(log.filter((c) => c === 'getInitData').length, 1, `one handshake, the SDK's: ${JSON.stringify(log)}`);
  assert.equal(await tab.evaluate(() => window.portal.refreshes), 1, "three expired calls, one refreshAuth through the SDK");
  await tab.close();
});

test('the official @bitrix24/b24jssdk B24Frame initialises against the portal page', async () => {
  await control('reset', {});
  const { tab, frame } = await portal('b24jssdk-app.html', { placement: 'DEFAULT' });
  const state = await frame.evaluate(() => window.app);
  assert.equal(state.status, 'ready', JSON.stringify(state));
  assert.equal(state.hasToken, true);
  assert.equal(state.isAdmin, true);
  const log = await tab.evaluate(() => window.portal.commands.map((c) => c.command));
  assert.ok(log.includes('getInitData'), JSON.stringify(log));
  await tab.close();
});
