// The one scenario every consumer runs against the emulator: bind, let the "portal" queue
// `n` changes, consume them with the reservation flow, and report the counts.
// `lib` is the package's module; `emulator` the emulator's URL; `token` an access token.
export async function scenario(lib, emulator, token, n = 60) {
  const b24 = lib.Bitrix24.withToken({ domain: emulator, accessToken: token, allowHttp: true, limits: false });
  const q = b24.offline({ store: 'memory' });
  await q.bind(['ONCRMDEALUPDATE']);
  const items = Array.from({ length: n }, (_, i) => ({ event: 'ONCRMDEALUPDATE', data: { FIELDS: { ID: String(i + 1) } } }));
  await fetch(`${emulator}/_emulator/trigger`, { method: 'POST', body: JSON.stringify({ items }) });
  const seen = new Set();
  const summary = await q.consume((events) => { for (const e of events) seen.add(e.id); }, { limit: 25, exclusive: false });
  const left = (await q.list()).total;
  let typed = false;
  try { lib.Bitrix24.withToken({ domain: 'http://example.com', accessToken: 'x' }); } catch (e) { typed = e instanceof lib.B24Error && e.code === 'INVALID_ARGUMENT'; }
  return { handled: seen.size, acked: summary.acked, left, typedErrors: typed };
}
