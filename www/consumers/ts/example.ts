// A TypeScript consumer, type-checked with `tsc --strict`: the package's .d.ts must describe
// every export precisely enough for this to compile (and it has no `any` to hide behind).
import init, { Bitrix24, B24Error, type OfflineEvent, type ConsumeSummary, type ListPage } from 'b24-offline';

export async function run(domain: string, accessToken: string): Promise<number> {
  await init();
  const b24: Bitrix24 = Bitrix24.withToken({
    domain,
    accessToken,
    expiresIn: 3600,
    refresh: async ({ refreshToken }) => ({ accessToken: refreshToken ?? '', expiresIn: 3600 }),
    limits: { burst: 50, drainPerSec: 2 },
    logger: (level, message, context) => console.log(level, message, context.portal, context.processId),
  });
  // The official SDK's LoggerInterface shape, methods returning promises.
  const sdkLike = { debug: async (m: string) => console.debug(m), info: async (m: string) => console.info(m), warning: async (m: string, c?: Record<string, any>) => console.warn(m, c?.method), error: async (m: string) => console.error(m) };
  const other: Bitrix24 = Bitrix24.withToken({ domain, accessToken, logger: sdkLike });
  const q = b24.offline({ connector: 'erp', store: 'memory' });
  const features = await q.features();
  if (!features.extended) return 0;
  await q.bind(['ONCRMDEALUPDATE']);
  const page: ListPage = await q.list({ filter: { '>ID': 0, ERROR: 0 }, order: { ID: 'ASC' } });
  const first: OfflineEvent | undefined = page.events[0];
  const id: number | undefined = first?.id;
  const r = await q.reserve({ limit: 10 });
  await r.ack(r.events.map((e) => e.messageId));
  const summary: ConsumeSummary = await q.consume(
    async (events, ctx) => (ctx.fromErrorQueue ? undefined : { failed: events.filter((e) => e.name === 'X').map((e) => e.messageId) }),
    { limit: 50, errors: { retries: 3 }, onProgress: (p) => console.log(p.acked, p.remaining ?? 0) },
  );
  // Step 3: each event with its object.
  await other.offline({ store: 'memory' }).consume(
    (events) => {
      for (const e of events) {
        if (e.objectState === 'found' && e.object) console.log(e.object['TITLE']);
        else if (e.objectState === 'failed') console.log(e.objectError?.code);
      }
      return { failed: events.filter((e) => e.objectState === 'failed') };
    },
    { objects: { ONCRMACTIVITYADD: { method: 'crm.activity.get' }, ONCRMDEALDELETE: { deleted: true }, ONUSERADD: false } },
  );
  const deal: unknown = await b24.call('crm.deal.get', { id: id ?? 1 });
  for await (const rows of b24.fetchList('crm.deal.list', { select: ['ID'] }, { idKey: 'ID' })) console.log(rows.length);
  const tasks: unknown[] = await b24.callList('tasks.task.list', {}, { idKey: 'id', resultKey: 'tasks' });
  const batch = await b24.batch({ a: ['crm.deal.get', { id: 1 }] }, { halt: true });
  if (!batch.ok) {
    const e: B24Error = batch.errors['a'];
    console.log(e.code, e.status, e.retryable, deal);
  }
  try {
    await b24.call('crm.deal.get');
  } catch (e) {
    if (e instanceof B24Error && e.code === 'QUERY_LIMIT_EXCEEDED') return -1;
  }
  const stats = b24.stats();
  return summary.acked + stats.requests + tasks.length;
}
