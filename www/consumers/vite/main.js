// A Vite app that installed the packed tarball: `import init from 'b24-offline'`.
import init, * as lib from 'b24-offline';
import { scenario } from './scenario.js';

const q = new URLSearchParams(location.search);
const out = document.getElementById('result');
init()
  .then(() => scenario(lib, q.get('emulator'), q.get('token')))
  .then((r) => { out.textContent = JSON.stringify(r); }, (e) => { out.textContent = JSON.stringify({ error: String(e && e.message || e) }); });
