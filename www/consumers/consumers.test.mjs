// The package as users get it: `npm pack`, installed from the tarball into throwaway
// consumers under target/consumers/, each running the same scenario against the emulator:
// Node ESM and CommonJS, a Vite app built and loaded in headless Chromium, a plain
// <script type="module"> page on the web build, and a TypeScript file under `tsc --strict`.
//
// Needs EMULATOR_URL and a built pkg/ (`make build`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../e2e/serve.mjs';

const EMULATOR = process.env.EMULATOR_URL;
assert.ok(EMULATOR, 'EMULATOR_URL must point at a running emulator');
const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '../..');
const work = join(root, 'target/consumers');
const bin = (name) => join(root, 'www/node_modules/.bin', name);
let tarball, browser;
const servers = [];

before(async () => {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  execFileSync('npm', ['pack', '--silent', '--pack-destination', work, join(root, 'pkg')], { stdio: ['ignore', 'pipe', 'inherit'] });
  tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz')));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) s.close();
});

/** A throwaway consumer: the sources of www/consumers/NAME plus the package from the tarball. */
function consumer(name) {
  const dir = join(work, name);
  cpSync(join(here, name), dir, { recursive: true });
  cpSync(join(here, 'scenario.js'), join(dir, 'scenario.js'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, private: true, type: 'module' }, null, 2));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

async function token() {
  await fetch(`${EMULATOR}/_emulator/reset`, { method: 'POST', body: '{}' });
  await fetch(`${EMULATOR}/_emulator/config`, { method: 'POST', body: JSON.stringify({ rate_limit: null, operating_limit_s: null, extended_mode: true }) });
  const t = await (await fetch(`${EMULATOR}/_emulator/token`, { method: 'POST', body: '{}' })).json();
  return t.access_token;
}

function expectScenario(result) {
  assert.deepEqual(result, { handled: 60, acked: 60, left: 0, typedErrors: true });
}

test('the tarball holds the three builds and nothing else', () => {
  const listing = execFileSync('tar', ['tzf', tarball]).toString().split('\n').filter(Boolean);
  for (const f of ['package/package.json', 'package/README.md', 'package/LICENSE', 'package/web/b24_offline.js', 'package/web/b24_offline_bg.wasm', 'package/bundler/b24_offline.js', 'package/node/b24_offline.js', 'package/node/index.mjs']) {
    assert.ok(listing.includes(f), f);
  }
  assert.ok(listing.every((f) => /^package\/(web|bundler|node)\/|^package\/(package\.json|README\.md|LICENSE)$/.test(f)), listing.join('\n'));
});

test('Node ESM consumes offline events from the emulator', async () => {
  const dir = consumer('node');
  expectScenario(JSON.parse(execFileSync('node', ['esm.mjs', EMULATOR, await token()], { cwd: dir }).toString()));
});

test('Node CommonJS consumes offline events from the emulator', async () => {
  const dir = join(work, 'node');
  expectScenario(JSON.parse(execFileSync('node', ['cjs.cjs', EMULATOR, await token()], { cwd: dir }).toString()));
});

test('a TypeScript consumer type-checks with tsc --strict', () => {
  const dir = consumer('ts');
  execFileSync(bin('tsc'), ['-p', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
});

async function inBrowser(url) {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('result').textContent !== 'running', null, { timeout: 30000 });
  const result = JSON.parse(await page.textContent('#result'));
  await page.close();
  return result;
}

test('a Vite app built against the package runs in Chromium', async () => {
  const dir = consumer('vite');
  execFileSync(bin('vite'), ['build', '--logLevel', 'error', '--outDir', 'dist'], { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] });
  const wasm = readdirSync(join(dir, 'dist/assets')).filter((f) => f.endsWith('.wasm'));
  assert.equal(wasm.length, 1, 'Vite emitted the .wasm as an asset');
  const { server, url } = await serve('localhost', 0, join(dir, 'dist'));
  servers.push(server);
  expectScenario(await inBrowser(`${url}/?emulator=${encodeURIComponent(EMULATOR)}&token=${await token()}`));
});

test('a plain <script type="module"> page uses the web build', async () => {
  const dir = consumer('plain');
  const { server, url } = await serve('localhost', 0, dir);
  servers.push(server);
  expectScenario(await inBrowser(`${url}/?emulator=${encodeURIComponent(EMULATOR)}&token=${await token()}`));
});
