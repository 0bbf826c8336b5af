// The demo, as a newcomer sees it: the queue console in the emulator's portal page. Click
// through bind → 100 changes → consume (with failures going through the error queue), check
// the counts, and save a screenshot (target/demo.png; www/screenshot.png in the README is a copy).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
let browser, app;

before(async () => {
  app = await serve('localhost');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  app?.server.close();
});

test('the queue console binds, consumes 100 changes and shows the limiter', async () => {
  await fetch(`${EMULATOR}/_emulator/reset`, { method: 'POST', body: '{}' });
  await fetch(`${EMULATOR}/_emulator/config`, { method: 'POST', body: JSON.stringify({ rate_limit: 'standard', operating_limit_s: 480, extended_mode: true }) });
  const tab = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await tab.goto(`${EMULATOR}/portal/?app=${encodeURIComponent(`${app.url}/`)}&placement=DEFAULT`);
  const frame = await new Promise((ok, fail) => {
    const until = Date.now() + 10000;
    const look = () => {
      const f = tab.frames().find((x) => x.url().startsWith(app.url));
      if (f) return ok(f);
      if (Date.now() > until) return fail(new Error('no app frame'));
      setTimeout(look, 50);
    };
    look();
  });
  await frame.waitForSelector('body[data-ready="true"]', { timeout: 15000 });
  await frame.click('#bind');
  await frame.waitForFunction(() => document.getElementById('bindings').textContent.includes('ONCRMDEALUPDATE'));
  await frame.click('#trigger100');
  await frame.waitForFunction(() => document.getElementById('total').textContent.includes('100 rows'));
  await frame.click('#start');
  await frame.waitForSelector('body[data-consumed]', { timeout: 60000 });
  const consumed = await frame.evaluate(() => Number(document.body.dataset.consumed));
  assert.equal(consumed, 100, 'every change acknowledged, failures included after the error pass');
  await frame.waitForFunction(() => document.getElementById('page').textContent === 'empty');
  const requests = await frame.evaluate(() => document.querySelector('#stats dd').textContent);
  assert.ok(Number(requests) > 5, `the limiter panel shows the requests: ${requests}`);
  assert.equal(await tab.textContent('#title'), 'Offline queue console');
  await tab.screenshot({ path: new URL('../../target/demo.png', import.meta.url).pathname });
  await tab.close();
});
