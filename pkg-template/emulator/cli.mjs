#!/usr/bin/env node
// `npx b24-emulator [--listen HOST:PORT]`: the same first line and the same exit codes as the
// native binary (cargo run -p b24-emulator); serves until SIGTERM/SIGINT. TLS is native only.
import { startEmulator } from './index.mjs';

const USAGE = `usage: b24-emulator [--listen HOST:PORT] [--tls]
  --listen  address to serve on (default 127.0.0.1:0, port 0 = any free port)
  --tls     serve https with a self-signed certificate for 127.0.0.1 and localhost`;

function usage(why) {
  process.stderr.write(`b24-emulator: ${why}\n${USAGE}\n`);
  process.exit(2);
}

let listen = '127.0.0.1:0';
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === '--listen') {
    if (i + 1 >= args.length) usage('--listen needs an address');
    listen = args[++i];
  } else if (arg === '--tls') {
    process.stderr.write('b24-emulator: --tls is served by the native binary only (cargo run -p b24-emulator -- --tls); this one serves http\n');
    process.exit(2);
  } else if (arg === '-h' || arg === '--help') {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  } else usage(`unknown argument ${arg}`);
}

const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
const port = /^\d{1,5}$/.test(listen.slice(colon + 1)) ? Number(listen.slice(colon + 1)) : NaN;
if (colon < 1 || !(port <= 65535)) {
  process.stderr.write(`b24-emulator: cannot listen on ${listen}: invalid socket address syntax\n`);
  process.exit(1);
}

// The handlers exist before the address is announced: a SIGTERM sent as soon as the first line
// is read ends the process cleanly.
let emulator = null;
let exiting = false;
const exit = async () => {
  if (exiting) return;
  exiting = true;
  await emulator?.stop();
  process.exit(0);
};
process.on('SIGTERM', exit);
process.on('SIGINT', exit);

try {
  emulator = await startEmulator({ host, port });
} catch (e) {
  process.stderr.write(`b24-emulator: cannot listen on ${listen}: ${e?.message ?? e}\n`);
  process.exit(1);
}
if (exiting) await emulator.stop();
else process.stdout.write(`b24-emulator listening on ${emulator.url}\n`);
