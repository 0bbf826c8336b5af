// The emulator for JavaScript tests as users get it: the packed package installed from its
// tarball into a throwaway consumer (target/consumers-emulator/), `startEmulator` imported
// through the package's exports (ESM and CommonJS), a REST call and an offline-event round trip
// against it, then stopped; the `b24-emulator` bin started and stopped by SIGTERM; its types
// checked by tsc --strict (nodenext resolution, both module kinds).
// Needs a built pkg/ (`make build`); no running emulator.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = join(root, 'target/consumers-emulator');

before(() => {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync('npm', ['pack', '--silent', '--pack-destination', dir, join(root, 'pkg')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz')));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer-emulator', private: true, type: 'module' }, null, 2));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  writeFileSync(join(dir, 'esm.mjs'), "export { startEmulator } from 'b24-offline/emulator';\n");
});

/** A change queued through the control API comes back from event.offline.get, is cleared, and
 *  the queue is empty after; the emulator refuses connections once stopped. */
async function roundTrip(startEmulator) {
  const emu = await startEmulator();
  try {
    assert.match(emu.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(emu.url, `http://127.0.0.1:${emu.port}`);
    const control = async (path, body) => {
      const r = await fetch(`${emu.url}/_emulator/${path}`, { method: 'POST', body: JSON.stringify(body) });
      assert.equal(r.status, 200, `${path}: ${r.status}`);
      return r.json();
    };
    const rest = async (method, params) => {
      const r = await fetch(`${emu.url}/rest/${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ auth, ...params }),
      });
      const body = await r.json();
      assert.equal(r.status, 200, `${method}: ${JSON.stringify(body)}`);
      return body.result;
    };
    await control('config', { rate_limit: null });
    const { access_token: auth } = await control('token', {});
    assert.equal((await rest('profile', {})).ID, '1');
    assert.equal(await rest('event.bind', { event: 'ONCRMDEALUPDATE', event_type: 'offline' }), true);
    assert.deepEqual(await control('trigger', { event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: '7' } } }), { queued: 1 });
    const got = await rest('event.offline.get', { clear: 0 });
    assert.equal(got.events.length, 1);
    assert.equal(got.events[0].EVENT_NAME, 'ONCRMDEALUPDATE');
    assert.deepEqual(got.events[0].EVENT_DATA.FIELDS, { ID: '7' });
    assert.ok(got.process_id);
    await rest('event.offline.clear', { process_id: got.process_id });
    assert.equal((await rest('event.offline.get', {})).events.length, 0);
  } finally {
    await emu.stop();
  }
  await assert.rejects(fetch(`${emu.url}/`), 'a stopped emulator refuses connections');
}

test('startEmulator from the package (ESM): a REST call and an offline event round trip', async () => {
  const { startEmulator } = await import(pathToFileURL(join(dir, 'esm.mjs')).href);
  await roundTrip(startEmulator);
});

test('startEmulator from the package (CommonJS, as jest loads it)', async () => {
  const { startEmulator } = createRequire(join(dir, 'package.json'))('b24-offline/emulator');
  await roundTrip(startEmulator);
});

test('the b24-emulator bin prints the native first line and exits 0 on SIGTERM', async () => {
  const child = spawn(join(dir, 'node_modules/.bin/b24-emulator'), ['--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before its first line`)));
  });
  const [, url] = line.match(/^b24-emulator listening on (http:\/\/127\.0\.0\.1:\d+)$/) ?? [];
  assert.ok(url, line);
  assert.equal((await fetch(`${url}/`)).status, 200);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.kill('SIGTERM');
  assert.deepEqual(await exited, { code: 0, signal: null });
});

test('its types check under tsc --strict, from ESM and CommonJS', () => {
  const use = (module) =>
    `${module === 'cjs' ? "import emulator = require('b24-offline/emulator');\nconst { startEmulator } = emulator;" : "import { startEmulator } from 'b24-offline/emulator';\nimport type { RunningEmulator } from 'b24-offline/emulator';"}
export async function main(): Promise<string> {
  const emu${module === 'cjs' ? '' : ': RunningEmulator'} = await startEmulator({ port: 0 });
  const url: string = emu.url;
  const port: number = emu.port;
  // @ts-expect-error the port is a number
  await startEmulator({ port: '0' });
  await emu.stop();
  return url + port;
}
`;
  writeFileSync(join(dir, 'use.mts'), use('esm'));
  writeFileSync(join(dir, 'use.cts'), use('cjs'));
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', skipLibCheck: false, types: [] },
      files: ['use.mts', 'use.cts'],
    }),
  );
  execFileSync(join(root, 'www/node_modules/.bin/tsc'), ['-p', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
});
