// Assembles the npm package in pkg/ from the build's three outputs (web, bundler, nodejs in
// target/pkg-*/, .ci/build) and pkg-template/, the way tiktoken post-processes its build:
// - each target's entry exports B24Error (defined in src/js/glue.js, copied by wasm-bindgen
//   into snippets/); the Node build gets that snippet as CommonJS;
// - every .d.ts is hand-corrected: raw wasm exports typed `unknown` instead of `any` (the build
//   fails if an `any` is left in a type position), and the lib of `Symbol.dispose` referenced;
// - `B24ErrorCode` becomes the union of every code named in src/core/error.rs (the one place
//   where codes are defined), plus `(string & {})` for portal codes nobody listed yet;
// - package.json gets the crate's version; node/ is CommonJS with an ESM wrapper;
// - the shipped .js is minified, names kept; the three targets' wasm must be identical;
// - script/ is the web build bundled into one classic script setting the global `B24Offline`.
// Usage: node www/tools/package.mjs VERSION
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { minifySync } from 'rolldown/utils';

const root = fileURLToPath(new URL('../..', import.meta.url));
const version = process.argv[2];
if (!version) throw new Error('usage: package.mjs VERSION');
const out = join(root, 'pkg');
const NAME = 'b24_offline';
const TARGETS = [['web', 'pkg-web'], ['bundler', 'pkg-bundler'], ['node', 'pkg-nodejs']];

function find(dir, file) {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) {
      const hit = find(path, file);
      if (hit) return hit;
    } else if (entry === file) return path;
  }
  return null;
}

/** The shipped JavaScript minified (oxc, through rolldown): the docs live in the .d.ts, where
 *  editors show them; in the .js a browser would download them and the long local names for
 *  nothing (1.4 KB gzip of the web build). Exported, function and class names are kept, so
 *  `B24Error`, `err.name` and stack traces read as in the source. */
function minify(path, module) {
  const { code, errors } = minifySync(path, readFileSync(path, 'utf8'), {
    module,
    compress: { keepNames: { function: true, class: true } },
    mangle: { toplevel: false, keepNames: true },
  });
  if (errors?.length) throw new Error(`minifying ${path}: ${errors.map((e) => e.message).join('; ')}`);
  writeFileSync(path, code);
}

/** The <script> build (script/b24-offline.js): the web build bundled into one classic script
 *  that sets the global `B24Offline`, as the official SDK's UMD build sets `B24Js`. It loads the
 *  web build's wasm (../web/, found from the script's own URL) at once; `B24Offline.ready`
 *  settles when it is in. */
async function scriptBuild() {
  const dir = join(out, 'script');
  mkdirSync(dir, { recursive: true });
  const entry = join(dir, 'entry.mjs');
  writeFileSync(
    entry,
    `import init from '../web/${NAME}.js';\n` +
      `export * from '../web/${NAME}.js';\n` +
      `const script = document.currentScript;\n` +
      `export const ready = script && script.src\n` +
      `  ? init({ module_or_path: new URL('../web/${NAME}_bg.wasm', script.src) }).then(() => {})\n` +
      `  : Promise.reject(new Error('B24Offline: load this file with a <script src> tag (for modules, import the web build)'));\n`,
  );
  const { rolldown } = await import('rolldown');
  const bundle = await rolldown({ input: entry, transform: { define: { 'import.meta': '{}' } } });
  await bundle.write({ file: join(dir, 'b24-offline.js'), format: 'iife', name: 'B24Offline', minify: true });
  await bundle.close();
  rmSync(entry);
  writeFileSync(
    join(dir, 'b24-offline.d.ts'),
    `// The global the <script> build sets: the web build's API, and \`ready\` (the wasm is in).\n` +
      `import type * as lib from '../web/${NAME}.js';\n` +
      `declare global {\n` +
      `  /** b24-offline from a <script> tag. \`await B24Offline.ready\` before the first call. */\n` +
      `  const B24Offline: Omit<typeof lib, 'default' | 'initSync'> & { readonly ready: Promise<void> };\n` +
      `}\n` +
      `export {};\n`,
  );
}

/** The few methods that are compositions of others, added where wasm-bindgen defines the
 *  class (typed in src/js/types.rs): `fetchList` is an async generator over the wasm's
 *  `listPage` (the core's pager; the generator only holds the position between pages) and
 *  `callList` collects it. `listPage` is left out of the types: it is not for apps. */
function facade(dir) {
  const file = readdirSync(dir).map((f) => join(dir, f)).find((f) => f.endsWith('.js') && /^(?:export )?class Bitrix24\b/m.test(readFileSync(f, 'utf8')));
  if (!file) throw new Error(`no class Bitrix24 in ${dir}`);
  writeFileSync(
    file,
    readFileSync(file, 'utf8') +
      `\nBitrix24.prototype.fetchList = async function* fetchList(method, params, options) {\n` +
      `  for (let at = 0; at !== undefined; ) {\n` +
      `    const page = await this.listPage(method, params, options, at);\n` +
      `    at = page.next;\n` +
      `    yield page.rows;\n` +
      `  }\n` +
      `};\n` +
      `Bitrix24.prototype.callList = async function callList(method, params, options) {\n` +
      `  const all = [];\n` +
      `  for await (const page of this.fetchList(method, params, options)) for (const row of page) all.push(row);\n` +
      `  return all;\n` +
      `};\n`,
  );
  const types = join(dir, `${NAME}.d.ts`);
  const lines = readFileSync(types, 'utf8').split('\n');
  const at = lines.findIndex((l) => /^\s+listPage\(/.test(l));
  if (at < 0) throw new Error(`no listPage in ${types}`);
  let from = at;
  if (/\*\/\s*$/.test(lines[at - 1])) while (!/^\s*\/\*\*/.test(lines[from - 1])) from--;
  lines.splice(from - (from < at ? 1 : 0), at - from + 1 + (from < at ? 1 : 0));
  writeFileSync(types, lines.join('\n'));
}

/** LEB128, unsigned: [value, bytes read] from `buf` at `at`. */
function leb(buf, at) {
  let value = 0, shift = 0, i = at;
  for (;;) {
    const b = buf[i++];
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return [value, i - at];
    shift += 7;
  }
}

function toLeb(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** Names wasm-bindgen gives that cost bytes twice, in the wasm and in the glue, renamed short
 *  in both: its closure invokers (`__wbg_invokeN`; named after whole Rust paths, 150-250 bytes
 *  each), every other export but the memory (`__xN`; `offlinequeue_listAll`, at every `wasm.`
 *  call), and every import (`__iN`; the JS function plus a 16-digit hash, about 45 bytes, the
 *  hash incompressible). The imports' module stays (bundlers resolve it as a file). */
function shortenNames(dir) {
  const wasmPath = join(dir, `${NAME}_bg.wasm`);
  const buf = readFileSync(wasmPath);
  const parts = [buf.subarray(0, 8)];
  const renames = [];
  // Every other export but the memory: the glue reaches them only as `wasm.NAME` (free
  // functions share their JS name, which must stay, so only that form is renamed).
  const exported = [];
  let at = 8;
  while (at < buf.length) {
    const id = buf[at];
    const [size, n] = leb(buf, at + 1);
    const start = at + 1 + n;
    const end = start + size;
    if (id === 2) {
      let p = start;
      const [count, c] = leb(buf, p);
      p += c;
      const entries = [];
      const text = (q) => {
        const [len, l] = leb(buf, q);
        return [buf.subarray(q + l, q + l + len).toString('utf8'), q + l + len];
      };
      const skipLeb = (q) => q + leb(buf, q)[1];
      const skipLimits = (q) => {
        const flags = buf[q];
        q = skipLeb(q + 1);
        return flags & 1 ? skipLeb(q) : q;
      };
      for (let i = 0; i < count; i++) {
        const from = p;
        const [module, afterModule] = text(p);
        let [name, afterName] = text(afterModule);
        const kind = buf[afterName];
        p = afterName + 1;
        if (kind === 0) p = skipLeb(p);
        else if (kind === 1) p = skipLimits(p + 1);
        else if (kind === 2) p = skipLimits(p);
        else if (kind === 3) p += 2;
        else if (kind === 4) p = skipLeb(p + 1);
        else throw new Error(`unknown import kind ${kind}`);
        if (kind === 0 && module === `./${NAME}_bg.js` && /^__wbg_\w+_[0-9a-f]{16}$/.test(name)) {
          const short = `__i${renames.length.toString(36)}`;
          renames.push([name, short]);
          name = short;
          entries.push(Buffer.concat([buf.subarray(from, afterModule), toLeb(Buffer.byteLength(name)), Buffer.from(name), buf.subarray(afterName, p)]));
        } else {
          entries.push(buf.subarray(from, p));
        }
      }
      if (p !== end) throw new Error('the import section did not parse to its end');
      const body = Buffer.concat([toLeb(count), ...entries]);
      parts.push(Buffer.from([2]), toLeb(body.length), body);
    } else if (id !== 7) {
      parts.push(buf.subarray(at, end));
    } else {
      let p = start;
      const [count, c] = leb(buf, p);
      p += c;
      const entries = [];
      for (let i = 0; i < count; i++) {
        const [len, l] = leb(buf, p);
        p += l;
        let name = buf.subarray(p, p + len).toString('utf8');
        p += len;
        const kind = buf[p++];
        const [index, x] = leb(buf, p);
        p += x;
        if (/^wasm_bindgen_[0-9a-f]{16}___/.test(name)) {
          const short = `__wbg_invoke${renames.length}`;
          renames.push([name, short]);
          name = short;
        } else if (name !== 'memory') {
          const short = `__x${exported.length.toString(36)}`;
          exported.push([name, short]);
          name = short;
        }
        entries.push(Buffer.concat([toLeb(Buffer.byteLength(name)), Buffer.from(name), Buffer.from([kind]), toLeb(index)]));
      }
      const body = Buffer.concat([toLeb(count), ...entries]);
      parts.push(Buffer.from([7]), toLeb(body.length), body);
    }
    at = end;
  }
  writeFileSync(wasmPath, Buffer.concat(parts));
  // One pass per file: hashed and invoker names wherever they stand; the other exports only as
  // `wasm.NAME` in the JS, and by name in the wasm's own .d.ts.
  for (const file of readdirSync(dir)) {
    const wasmTypes = file.endsWith('_bg.wasm.d.ts');
    if (!/\.(js|ts)$/.test(file)) continue;
    let text = readFileSync(join(dir, file), 'utf8');
    const taken = (to) => {
      if (new RegExp(`\\b${to}\\b`).test(text)) throw new Error(`${to} is taken in ${file}`);
    };
    for (const [from, to] of renames) {
      taken(to);
      text = text.replaceAll(from, to);
      if (text.includes(from)) throw new Error(`${from} left in ${file}`);
    }
    if (wasmTypes || file.endsWith('.js')) {
      for (const [from, to] of exported) {
        taken(to);
        const use = wasmTypes ? new RegExp(`\\b${from}\\b`, 'g') : new RegExp(`\\bwasm\\.${from}\\b`, 'g');
        text = text.replace(use, wasmTypes ? to : `wasm.${to}`);
        if (!wasmTypes && new RegExp(`\\bwasm\\.${from}\\b`).test(text)) throw new Error(`wasm.${from} left in ${file}`);
      }
    }
    writeFileSync(join(dir, file), text);
  }
}

/** The string values of `pub const NAME: &str = "value";` in error.rs's `mod code`. */
function errorCodes() {
  const src = readFileSync(join(root, 'src/core/error.rs'), 'utf8');
  const body = src.slice(src.indexOf('pub mod code {'), src.indexOf('\n}\n', src.indexOf('pub mod code {')));
  const codes = [...body.matchAll(/pub const \w+: &str = "([^"]+)";/g)].map((m) => m[1]);
  if (codes.length < 10) throw new Error(`found only ${codes.length} codes in src/core/error.rs`);
  return codes;
}

const CODE_LINE = 'export type B24ErrorCode = string;';
const CODE_UNION = `export type B24ErrorCode =\n${errorCodes().map((c) => `  | '${c}'`).join('\n')}\n  | (string & {});`;

function fixTypes(path) {
  let dts = readFileSync(path, 'utf8').replace(/\bany\b(?=\s*[;,)\]=|])/g, 'unknown');
  if (!dts.includes(CODE_LINE)) throw new Error(`${path} lacks the line ${CODE_LINE}`);
  dts = dts.replace(CODE_LINE, CODE_UNION);
  // The classes declare [Symbol.dispose]: bring its lib along rather than require `esnext`.
  if (dts.includes('Symbol.dispose') && !dts.includes('esnext.disposable')) dts = '/// <reference lib="esnext.disposable" />\n' + dts;
  const code = dts.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const left = code.split('\n').filter((l) => /\bany\b/.test(l));
  if (left.length) throw new Error(`${path} still has 'any':\n${left.join('\n')}`);
  writeFileSync(path, dts);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
for (const [dir, built] of TARGETS) {
  const from = join(root, 'target', built);
  const to = join(out, dir);
  cpSync(from, to, { recursive: true, filter: (p) => !/(package\.json|README\.md|\.gitignore)$/.test(p) || p === from });
  for (const junk of ['package.json', 'README.md', '.gitignore']) rmSync(join(to, junk), { force: true });
  const glue = find(join(to, 'snippets'), 'glue.js');
  if (!glue) throw new Error(`no snippets/**/glue.js in ${to}`);
  const rel = './' + relative(to, glue);
  const entry = join(to, `${NAME}.js`);
  const snippets = [];
  (function walk(d) {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.js')) snippets.push(p);
    }
  })(join(to, 'snippets'));
  if (dir === 'node') {
    // wasm-bindgen's nodejs output is CommonJS and require()s the snippets: make them CommonJS too.
    for (const file of snippets) {
      const src = readFileSync(file, 'utf8');
      const names = [...src.matchAll(/^export (?:class|function) (\w+)/gm)].map((m) => m[1]);
      writeFileSync(file, src.replace(/^export (class|function) /gm, '$1 ') + `\nmodule.exports = { ${names.join(', ')} };\n`);
    }
    // The fleet's stores: plain Node modules beside the build.
    cpSync(join(root, 'pkg-template/node/stores.cjs'), join(to, 'stores.cjs'));
    writeFileSync(
      entry,
      readFileSync(entry, 'utf8') +
        `\nmodule.exports.B24Error = require(${JSON.stringify(rel)}).B24Error;\n` +
        `Object.assign(module.exports, require('./stores.cjs'));\n`,
    );
    writeFileSync(join(to, 'package.json'), JSON.stringify({ type: 'commonjs' }, null, 2) + '\n');
    const dts = join(to, `${NAME}.d.ts`);
    writeFileSync(dts, readFileSync(dts, 'utf8') + readFileSync(join(root, 'pkg-template/node/stores.d.ts'), 'utf8'));
    const exported = [...readFileSync(dts, 'utf8').matchAll(/^export (?:declare )?(?:class|function) (\w+)/gm)].map((m) => m[1]);
    const names2 = [...new Set([...exported, 'B24Error'])].filter((n) => !n.startsWith('__'));
    writeFileSync(join(to, 'index.mjs'), `// ESM entry for Node: the CommonJS build, re-exported.\nimport lib from './${NAME}.js';\nexport const { ${names2.join(', ')} } = lib;\n`);
    writeFileSync(join(to, 'index.d.mts'), `export * from './${NAME}.js';\n`);
  } else {
    writeFileSync(entry, readFileSync(entry, 'utf8') + `export { B24Error } from ${JSON.stringify(rel)};\n`);
  }
  facade(to);
  fixTypes(join(to, `${NAME}.d.ts`));
  shortenNames(to);
  minify(entry, dir !== 'node');
  for (const file of snippets) minify(file, dir !== 'node');
}
// One build for the browsers: web and bundler must ship the same wasm bytes (.ci/build
// optimises one and copies it; a difference would mean a target was left from an older build).
// Node's is its own build (the same library plus Fleet).
const [web, bundler] = ['web', 'bundler'].map((dir) => readFileSync(join(out, dir, `${NAME}_bg.wasm`)));
if (!web.equals(bundler)) throw new Error('the web and bundler builds ship different wasm');
await scriptBuild();
// The emulator for JavaScript tests (Node only): wasm-bindgen's nodejs build of the emulator
// crate (target/pkg-emulator, .ci/build) beside its node:http shell from pkg-template/emulator.
{
  const to = join(out, 'emulator');
  mkdirSync(to);
  // The binding's own .d.ts stays out: the shell is the API, typed in index.d.ts.
  for (const f of ['b24_emulator.js', 'b24_emulator_bg.wasm']) cpSync(join(root, 'target/pkg-emulator', f), join(to, f));
  cpSync(join(root, 'pkg-template/emulator'), to, { recursive: true });
  writeFileSync(join(to, 'package.json'), JSON.stringify({ type: 'commonjs' }, null, 2) + '\n');
}
const pkg = JSON.parse(readFileSync(join(root, 'pkg-template/package.json'), 'utf8'));
pkg.version = version;
writeFileSync(join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
for (const f of ['README.md', 'LICENSE']) cpSync(join(root, 'pkg-template', f), join(out, f));
for (const target of Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e).flatMap((v) => (typeof v === 'string' ? [v] : Object.values(v)))))) {
  if (!existsSync(join(out, target))) throw new Error(`exports points at a missing file: ${target}`);
}
console.log(`package: pkg/ b24-offline@${version} (web, bundler, node, script, emulator)`);
