// Node, a portal that redirects: `call()` must fail with PORTAL_MOVED naming only the new host,
// and the token must not travel (the trap host records whatever reaches it).
import { Bitrix24, B24Error } from 'b24-offline';

const [emulator, token, location] = process.argv.slice(2);
await fetch(`${emulator}/_emulator/faults`, { method: 'POST', body: JSON.stringify({ rules: [{ kind: { redirect: location, status: 307 } }] }) });
const b24 = Bitrix24.withToken({ domain: emulator, accessToken: token, allowHttp: true, limits: false });
try {
  await b24.call('profile');
  console.log(JSON.stringify({ followed: true }));
} catch (e) {
  const leaked = !(e instanceof B24Error) || JSON.stringify(e).includes(token) || e.message.includes('/trap/') || e.message.includes('x=1');
  console.log(JSON.stringify({ code: e.code, movedTo: e.movedTo, retryable: e.retryable, leaked }));
} finally {
  await fetch(`${emulator}/_emulator/faults`, { method: 'DELETE' });
}
