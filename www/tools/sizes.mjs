// Prints raw, gzip and brotli sizes of the given files and of their sum, so that every build
// shows what the package weighs (and a regression is visible in the log).
// Usage: node www/tools/sizes.mjs FILE... [--json OUT] [--budget BUDGET.json]
// With --budget, exits 1 when the gzip total exceeds its `gzip_total_bytes`.
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';

const args = process.argv.slice(2);
const jsonAt = args.indexOf('--json');
const out = jsonAt >= 0 ? args.splice(jsonAt, 2)[1] : null;
const budgetAt = args.indexOf('--budget');
const budgetFile = budgetAt >= 0 ? args.splice(budgetAt, 2)[1] : null;
const sizes = (buf) => ({
  raw: buf.length,
  gzip: gzipSync(buf, { level: 9 }).length,
  brotli: brotliCompressSync(buf, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length,
});
const rows = args.map((f) => ({ file: basename(f), ...sizes(readFileSync(f)) }));
const total = rows.reduce((t, r) => ({ raw: t.raw + r.raw, gzip: t.gzip + r.gzip, brotli: t.brotli + r.brotli }), { raw: 0, gzip: 0, brotli: 0 });
const kb = (n) => (n / 1024).toFixed(1).padStart(7) + ' KB';
console.log('file'.padEnd(28) + 'raw'.padStart(10) + 'gzip'.padStart(10) + 'brotli'.padStart(10));
for (const r of [...rows, { file: 'total', ...total }]) {
  console.log(r.file.padEnd(28) + kb(r.raw) + kb(r.gzip) + kb(r.brotli));
}
if (out) writeFileSync(out, JSON.stringify({ files: rows, total }, null, 2) + '\n');
if (budgetFile) {
  const { gzip_total_bytes: limit } = JSON.parse(readFileSync(budgetFile, 'utf8'));
  if (total.gzip > limit) {
    console.error(`size budget exceeded: ${total.gzip} bytes gzip > ${limit} (${budgetFile})`);
    process.exit(1);
  }
  console.log(`within the size budget: ${total.gzip} of ${limit} bytes gzip`);
}
