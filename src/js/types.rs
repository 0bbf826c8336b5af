//! The TypeScript shapes of everything crossing the boundary. Exported functions name these
//! through `unchecked_param_type` / `unchecked_return_type`, so the generated `.d.ts` has no
//! `any`.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Stable error codes: the portal's own, plus the library's. The package replaces this line
 *  with the union of every code in src/core/error.rs (www/tools/package.mjs). */
export type B24ErrorCode = string;

/** Request-rate presets, a custom leaky bucket, or false to turn the limiter off. */
export type Limits = 'standard' | 'enterprise' | { burst: number; drainPerSec: number } | boolean;

/** What a log line is about, where known: the portal's host, the REST method, the reservation. */
export interface LogContext { portal?: string; method?: string; processId?: string }
/** The official SDK's LoggerInterface (or any object with these methods); promises it returns
 *  are not awaited, and its failures are ignored. */
export interface LoggerObject {
  debug(message: string, context?: LogContext): unknown;
  info(message: string, context?: LogContext): unknown;
  warning(message: string, context?: LogContext): unknown;
  error(message: string, context?: LogContext): unknown;
}
/** Receives the library's log lines, which never contain tokens: a function, or a
 *  LoggerInterface of @bitrix24/b24jssdk ('warn' lines go to its warning()). */
export type Logger = ((level: 'debug' | 'info' | 'warn' | 'error', message: string, context: LogContext) => void) | LoggerObject;

export interface ClientOptions {
  /** Request-rate limiter (default 'standard': 50 at once, 2 per second). */
  limits?: Limits;
  /** Per-request timeout in milliseconds (default 30000). */
  timeoutMs?: number;
  /** The longest answer read, in bytes (default 8 MiB, at most 256 MiB): a longer one is
   *  BAD_RESPONSE, and is not read past the limit. */
  maxResponseBytes?: number;
  /** Retries after the first attempt (default 6). */
  retries?: number;
  /** Operating-time limit per method in seconds (default 480, the cloud limit). */
  operatingLimit?: number;
  /** Sent as auth_connector with every call, writes included. */
  connector?: string;
  logger?: Logger;
  /** Allow plain http, for loopback hosts only (a local emulator). */
  allowHttp?: boolean;
}

export interface RefreshedToken {
  accessToken: string;
  /** Seconds of life of the new token. */
  expiresIn?: number;
  refreshToken?: string;
}

export interface TokenOptions extends ClientOptions {
  /** The portal: 'acme.bitrix24.com' (https is implied). */
  domain: string;
  accessToken: string;
  /** Seconds of life left; the token is refreshed shortly before it runs out. */
  expiresIn?: number;
  /** Handed to `refresh` so that the app's server can renew the pair. */
  refreshToken?: string;
  /** Called once for all waiting calls when the token expired or is about to. */
  refresh?: (current: { refreshToken?: string }) => Promise<RefreshedToken> | RefreshedToken;
}

export interface SignalOptions { signal?: AbortSignal }

export interface Bitrix24 {
  /** Every page of a list method (arrays of rows), read as you iterate: by `>ID` without
   *  counting where the order allows it (no order, or ascending by the id; fast on large lists,
   *  and no row skipped when rows are deleted meanwhile), else by offset. Bad arguments reject
   *  the first page, before any request. */
  fetchList(method: string, params?: Record<string, unknown>, options?: FetchListOptions): AsyncGenerator<unknown[], void, undefined>;
  /** Every row of a list method: all the pages `fetchList` reads, in one array. */
  callList(method: string, params?: Record<string, unknown>, options?: FetchListOptions): Promise<unknown[]>;
}

/** `fetchList` / `callList`: how to read the rows of a list method. */
export interface FetchListOptions extends SignalOptions {
  /** The rows' id field, for paging by it (default 'ID'; 'id' for tasks.task.list). */
  idKey?: string;
  /** Where the rows are in the result, for methods that wrap them ('tasks' for tasks.task.list). */
  resultKey?: string;
}

export interface FrameOptions extends ClientOptions {
  /** How long to wait for the portal's answers to getInitData and refreshAuth (default 5000
   *  ms). `timeoutMs` is the REST timeout, as everywhere. */
  handshakeTimeoutMs?: number;
  /** The portals this app serves: host names or '*.'-suffixes ('*.bitrix24.com'). A page
   *  hosted by any other portal fails with FRAME_UNAVAILABLE before talking to it. */
  portals?: string[];
}

/** What the portal told the frame (getInitData), without the tokens. */
export interface FrameContext {
  domain: string;
  lang: string;
  memberId: string;
  isAdmin: boolean;
  install: boolean;
  firstRun: boolean;
  placement: string;
  placementOptions: Record<string, unknown>;
}

export interface CallOptions extends SignalOptions {
  /** Whether repeating the call after an ambiguous failure is harmless (default: true for
   *  methods named *.get, *.list, *.fields and other reads). */
  idempotent?: boolean;
  /** auth_connector for this call. */
  connector?: string;
}

export interface Page<T> { result: T; total?: number; next?: number }

export type BatchCommand = [method: string, params?: Record<string, unknown>];
export type BatchCommands = Record<string, BatchCommand> | BatchCommand[];
export interface BatchOptions extends SignalOptions { halt?: boolean }
export interface BatchResult {
  /** True when no command failed. */
  ok: boolean;
  results: Record<string, unknown>;
  errors: Record<string, B24Error>;
  total: Record<string, number>;
  next: Record<string, number>;
}

export interface MethodOperating {
  method: string;
  /** Seconds the portal counts for this method over the last ten minutes. */
  seconds: number;
  /** Local time (ms) when the oldest minute bucket drops. */
  resetAtMs?: number;
  maxStep: number;
  blockedUntilMs: number;
}

export interface ClientStats {
  requests: number;
  retries: number;
  refreshes: number;
  rateLimited: number;
  operatingLimited: number;
  /** Milliseconds spent waiting for the limiter or an operating-time pause. */
  waitedMs: number;
  byMethod: Record<string, number>;
  errors: Record<string, number>;
  operating: MethodOperating[];
  bucketLevel: number;
}

/** Where the journal of open reservations is kept. Methods may return promises. */
export interface JournalStore {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): void | Promise<void>;
  delete(key: string): void | Promise<void>;
}

export interface QueueOptions {
  /** The auth_connector of this queue (defaults to the client's). */
  connector?: string;
  /** The journal: 'local' (localStorage, the default in browsers), 'memory' (the default
   *  elsewhere) or your own store. */
  store?: 'local' | 'memory' | JournalStore;
  /** Key of the journal in the store (default: per portal, app and connector). */
  storeKey?: string;
  /** This consumer's id in the journal (default: random per queue object; in Node it also
   *  names the process and host, so that a process restarted on the same journal and host
   *  takes what its dead predecessor held back at once). Give a stable, unique one to a worker
   *  whose journal is shared across hosts, so that after a restart it takes its own
   *  reservations back at once. */
  consumerId?: string;
}

export interface Features {
  /** rest_offline_extended: reservations (clear=0), process ids, the error queue. */
  extended: boolean;
  /** rest_auth_connector: one queue per auth_connector. */
  connector: boolean;
}

export interface BindResult { event: string; created: boolean }

export interface Binding {
  event: string;
  offline: boolean;
  connector?: string;
  handler?: string;
  authType?: string;
}

export interface NotifyOptions extends SignalOptions {
  /** At most one signal per this many seconds. */
  minTimeout?: number;
}

/** One queued change. `data` is the portal's EVENT_DATA, e.g. { FIELDS: { ID: '42' } }. */
export interface OfflineEvent {
  id: number;
  /** Stable per object and event: deduplicate by it. */
  messageId: string;
  name: string;
  /** ISO 8601 with the portal's offset. */
  timestamp: string;
  data: unknown;
  additional: unknown;
  /** list() only: the reservation holding the row. */
  processId?: string;
  /** list() only: whether the row is in the error queue. */
  error?: boolean;
  /** consume({ objects }) only, for events with a rule: the object as the portal has it now
   *  (objectState 'found'), else null. */
  object?: Record<string, unknown> | null;
  /** 'found'; 'deleted' (the event is a deletion: nothing fetched); 'gone' (the portal no
   *  longer has it); 'failed' (the portal refused this get, or the event has no id: see
   *  objectError). Absent for events without a rule. */
  objectState?: 'found' | 'deleted' | 'gone' | 'failed';
  objectError?: { code: string; description?: string; method?: string };
}

/** How the object of one event name is fetched: `method` with the id read from the event's
 *  data at `id` (dotted, default 'FIELDS.ID') as parameter `param` (default 'id'), the object
 *  taken from the result at `result` (a list stands for its first row), `params` sent too. */
export interface ObjectRule {
  method: string;
  id?: string;
  param?: string;
  result?: string;
  params?: Record<string, unknown>;
}
/** Rules by event name, over the built-in ones (CRM deal/lead/contact/company, tasks, new
 *  users): a rule, `{ deleted: true }` for a deletion, or false for no object. */
export type ObjectRules = Record<string, ObjectRule | { deleted: true } | false>;

/** Filter keys carry the operator: '>ID', '<=TIMESTAMP_X', '!EVENT_NAME', 'MESSAGE_ID'. */
export type EventFilter = Record<string, string | number | boolean | Array<string | number>>;
export type EventOrder = Record<string, 'ASC' | 'DESC' | 'asc' | 'desc'>;

export interface ListOptions extends SignalOptions { filter?: EventFilter; order?: EventOrder; start?: number }
export interface ListAllOptions extends SignalOptions { filter?: EventFilter; order?: EventOrder }
export interface ListPage {
  events: OfflineEvent[];
  total: number;
  next?: number;
  /** Rows of the page that are not readable events, as sent (only when there are some). */
  malformed?: unknown[];
}

export interface GetOptions extends SignalOptions {
  filter?: EventFilter;
  order?: EventOrder;
  limit?: number;
  /** Delete what is returned (lossy). Default false: reserve. */
  clear?: boolean;
  /** Re-select the rows of this reservation. */
  processId?: string;
  /** Work on the error queue. */
  error?: boolean;
}
export interface Taken {
  processId: string | null;
  events: OfflineEvent[];
  /** Rows that are not readable events, as sent (reserved with the rest). */
  malformed?: unknown[];
}

/** Names one event of a batch: its message id, its row id, or the event object itself. */
export type EventRef = string | number | Pick<OfflineEvent, 'id' | 'messageId'> | Pick<OfflineEvent, 'id'> | Pick<OfflineEvent, 'messageId'>;

/** How long reservations may be held (see the README's guarantees). */
export interface HoldOptions {
  /** A handler (or an app holding a Reservation) may take this long per batch (default 300000). */
  handlerTimeoutMs?: number;
  /** A reservation its holder has not finished within this long counts as stranded, and one of
   *  unknown owner after being seen reserved this long (default 600000; at least
   *  handlerTimeoutMs + 4 * timeoutMs + 1000). Give every consumer of a queue the same value. */
  strandedAfterMs?: number;
}

export interface ClearOptions extends SignalOptions { processId: string; messageIds?: string[]; ids?: number[] }
export interface ErrorOptions extends SignalOptions { processId: string; messageIds: string[] }

export interface ReserveOptions extends SignalOptions, HoldOptions {
  filter?: EventFilter;
  order?: EventOrder;
  limit?: number;
  /** Reserve from the error queue. */
  errors?: boolean;
}
export interface TakeOptions extends SignalOptions { filter?: EventFilter; order?: EventOrder; limit?: number }
export interface RecoverOptions extends SignalOptions, HoldOptions {}

export interface ConsumeContext {
  processId: string;
  fromErrorQueue: boolean;
  /** Handed over again after a crash, a reload or a lost answer. */
  recovered: boolean;
  signal?: AbortSignal;
}
/** Return nothing when all succeeded, or `{ failed }` naming the events that failed; a throw,
 *  anything else, or an entry that names no event of the batch fails them all. */
export type ConsumeHandler = (events: OfflineEvent[], context: ConsumeContext) =>
  void | { failed?: EventRef[] } | Promise<void | { failed?: EventRef[] }>;

export interface ConsumeProgress {
  batches: number;
  reserved: number;
  recovered: number;
  acked: number;
  failed: number;
  parked: number;
  dead: number;
  /** Rows handed over twice in this run (retries from the error queue not counted). */
  duplicates: number;
  /** Estimated: events in the queue at the start less those settled since. */
  remaining?: number;
  unsettled: number;
  /** Events of stranded reservations released into the error queue. */
  released: number;
  /** Rows that were not readable events (see onMalformed). */
  malformed: number;
  /** Batches whose handler did not settle within handlerTimeoutMs. */
  timedOut: number;
  /** Failures a consumer went on after (each also went to onError). */
  errors: number;
  /** Reservations of unknown owner (a lost answer's, another consumer's) waiting to count as
   *  stranded; released at the sweep due when the oldest does. */
  waiting: number;
  /** How old the oldest change of the latest batch was when it was handed over (the portal's
   *  TIMESTAMP_X against this machine's clock), 0 once both queues were found empty. */
  lagMs?: number;
}
export interface ConsumeSummary extends ConsumeProgress { stopped: 'empty' | 'aborted' | 'stopped' }

export interface ConsumeOptions extends SignalOptions, HoldOptions {
  filter?: EventFilter;
  order?: EventOrder;
  /** Events per batch (default 50). */
  limit?: number;
  /** Batches in flight at once (default 1, at most 16). */
  concurrency?: number;
  /** The error queue: drained after the queue ('include', the default), left alone ('skip'),
   *  or given up after so many failed attempts ({ retries }). */
  errors?: 'include' | 'skip' | { retries: number };
  /** Keep polling when the queue is empty, waiting idleDelay (doubling up to maxIdleDelay). */
  poll?: boolean;
  idleDelay?: number;
  maxIdleDelay?: number;
  /** One consumer per queue across tabs (Web Locks; default true). */
  exclusive?: boolean;
  /** Rows of a reservation that are not readable events: reported, then left reserved
   *  ('park', the default) or deleted ('clear'). */
  malformed?: 'park' | 'clear';
  /** Step 3: hand each event over with the current state of its object (`object`,
   *  `objectState`), fetched with one `batch` request per batch. true: the built-in rules;
   *  an object: rules of the app's over them. Fetching counts within handlerTimeoutMs; when
   *  the request fails as a whole, the batch fails (error queue) without reaching the handler. */
  objects?: boolean | ObjectRules;
  onProgress?: (progress: ConsumeProgress) => void;
  /** Events given up: under { retries }, or parked so long that the portal would soon delete
   *  them (25 days after their last change). */
  onDeadLetter?: (events: OfflineEvent[], info: { reason: 'retries' | 'expiring' }) => void;
  /** Rows that are not readable events, as the portal sent them. */
  onMalformed?: (rows: unknown[]) => void;
  /** Failures a polling consumer goes on after (it waits and tries again). */
  onError?: (error: B24Error) => void;
}

export interface OfflineSignal { event: string; ts?: number; domain?: string; memberId?: string }

export declare class B24Error extends Error {
  readonly name: 'B24Error';
  readonly code: B24ErrorCode;
  /** HTTP status, 0 when there was no response. */
  readonly status: number;
  readonly method: string;
  readonly description: string;
  /** Whether trying again later can succeed. */
  readonly retryable: boolean;
  /** PORTAL_MOVED: the host the portal redirected to, where the runtime shows it (Node). */
  readonly movedTo?: string;
}
"#;
