// Hand-corrects what wasm-pack generates, for one output directory:
// - exports the B24Error class (defined in src/js/glue.js, which wasm-bindgen copies into
//   snippets/) from the package entry, so `import { B24Error } from 'b24-offline'` works;
// - types the raw wasm exports in the .d.ts with `unknown` instead of `any`, and fails the
//   build if an `any` is left anywhere in a type position.
// Usage: node www/tools/postprocess.mjs DIR NAME
import { readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const [dir, name] = process.argv.slice(2);
if (!dir || !name) {
  console.error('usage: postprocess.mjs DIR NAME');
  process.exit(2);
}

function find(root, file) {
  for (const entry of readdirSync(root)) {
    const path = join(root, entry);
    if (statSync(path).isDirectory()) {
      const hit = find(path, file);
      if (hit) return hit;
    } else if (entry === file) {
      return path;
    }
  }
  return null;
}

const glue = find(join(dir, 'snippets'), 'glue.js');
if (!glue) throw new Error(`no snippets/**/glue.js under ${dir}`);
const entry = join(dir, `${name}.js`);
const js = readFileSync(entry, 'utf8');
const line = `export { B24Error } from './${relative(dir, glue)}';\n`;
if (!js.includes(line)) writeFileSync(entry, js + line);

const dtsPath = join(dir, `${name}.d.ts`);
let dts = readFileSync(dtsPath, 'utf8');
dts = dts.replace(/\bany\b(?=\s*[;,)\]=|])/g, 'unknown');
const code = dts.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
const left = code.split('\n').filter((l) => /\bany\b/.test(l));
if (left.length) {
  console.error(`${dtsPath} still has 'any':\n${left.join('\n')}`);
  process.exit(1);
}
writeFileSync(dtsPath, dts);
console.log(`postprocess: ${entry} exports B24Error; ${dtsPath} has no 'any'`);
