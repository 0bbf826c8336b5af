// Node, CommonJS: `require('b24-offline')`.
const lib = require('b24-offline');

(async () => {
  const { scenario } = await import('./scenario.js');
  const [emulator, token] = process.argv.slice(2);
  console.log(JSON.stringify(await scenario(lib, emulator, token)));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
