// Node, ESM: `import { Bitrix24 } from 'b24-offline'`.
import * as lib from 'b24-offline';
import { scenario } from './scenario.js';

const [emulator, token] = process.argv.slice(2);
console.log(JSON.stringify(await scenario(lib, emulator, token)));
