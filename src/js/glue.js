// The few things that are smaller and clearer in JavaScript than through bindings.

/** Every failure of b24-offline: a real Error (with a stack) carrying a stable `code`. */
export class B24Error extends Error {
  constructor(message, code, status, method, description, retryable, movedTo) {
    super(message);
    this.name = 'B24Error';
    this.code = code;
    this.status = status;
    this.method = method;
    this.description = description;
    this.retryable = retryable;
    if (movedTo !== undefined) this.movedTo = movedTo;
  }
}

/** setTimeout fires at once for delays past 2^31 - 1 ms: longer waits are cut to that. */
const clamp = (ms) => (ms > 0 ? Math.min(ms, 2147483647) : 0);

/**
 * Resolves with true after `ms`, or with false as soon as `signal` aborts. Its `cancel()`
 * drops the timer and the listener (a wait nobody awaits any more must not keep a Node
 * process alive, nor pile up listeners on a long-lived signal).
 */
export function sleep(ms, signal) {
  let cancel = () => {};
  const p = new Promise((resolve) => {
    if (signal && signal.aborted) return resolve(false);
    const onAbort = () => { clearTimeout(timer); resolve(false); };
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, clamp(ms));
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    cancel = () => { clearTimeout(timer); if (signal) signal.removeEventListener('abort', onAbort); };
  });
  p.cancel = () => cancel();
  return p;
}

/**
 * POSTs a JSON body (or GETs, when it is empty: the OAuth server's refresh) and reads the
 * answer as text: `[status, text]`, or for a redirect
 * `[status, null, location]` (status 0 and no location where the runtime hides them, as
 * browsers do). Redirects are never followed: the body carries the token. An answer longer
 * than `max` bytes (by its content-length, or as it is read) is not read further. Rejects with
 * 'timeout', 'aborted', 'too large' or 'network: why'.
 */
export function post(url, body, timeoutMs, max, signal) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; controller.abort(); }, clamp(timeoutMs));
  const onAbort = () => controller.abort();
  if (signal) {
    if (signal.aborted) controller.abort();
    else signal.addEventListener('abort', onAbort, { once: true });
  }
  // Aborting also drops the rest of an answer that was not read (a redirect's, a long one).
  const done = () => { clearTimeout(timer); controller.abort(); if (signal) signal.removeEventListener('abort', onAbort); };
  const big = 'too large';
  return fetch(url, {
    method: body ? 'POST' : 'GET',
    headers: { 'content-type': 'application/json' },
    body: body || undefined,
    redirect: 'manual',
    credentials: 'omit',
    signal: controller.signal,
  })
    .then(async (r) => {
      if (r.type === 'opaqueredirect' || (r.status >= 300 && r.status < 400)) {
        return [r.status, null, r.headers.get('location')];
      }
      if (r.headers.get('content-length') > max) throw big;
      let text = '', size = 0;
      if (r.body) {
        const reader = r.body.getReader(), utf8 = new TextDecoder();
        for (let c; !(c = await reader.read()).done;) {
          if ((size += c.value.length) > max) throw big;
          text += utf8.decode(c.value, { stream: true });
        }
        text += utf8.decode();
      }
      return [r.status, text];
    })
    .catch((e) => {
      throw e === big ? e : timedOut ? 'timeout' : signal && signal.aborted ? 'aborted' : 'network: ' + ((e && e.message) || e);
    })
    .finally(done);
}

/** `JSON.parse`, or `undefined` when the text is not JSON (JSON itself has no `undefined`). */
export function parseJson(text) {
  try { return JSON.parse(text); } catch { /* undefined */ }
}

/** `JSON.stringify`, or `undefined` when the value cannot be written (a BigInt, a cycle). */
export function toJson(value) {
  try { return JSON.stringify(value); } catch { /* undefined */ }
}

/** A property, for the wasm side: `undefined` rather than a throw (a getter that throws).
 *  Cheaper than `Reflect.get` through wasm-bindgen's catching wrapper, and called for every
 *  field of every row. */
export function prop(o, k) {
  try { return o[k]; } catch { /* undefined */ }
}

/** Sets a property of an object the wasm side just made; never throws (a setter an app
 *  planted on a prototype cannot unwind through the wasm). */
export function put(o, k, v) {
  try { o[k] = v; } catch { /* as Reflect.set's result was: ignored */ }
}

/** Wraps `next()` (a function returning Promise<IteratorResult>) as an async iterable. */
export function asyncIterable(next) {
  const iterator = { next, [Symbol.asyncIterator]() { return iterator; } };
  return iterator;
}

const locksApi = () => (typeof navigator !== 'undefined' && navigator.locks) || undefined;

/** Node's process and host name (undefined in browsers): a Node consumer's id names them, so
 *  that a consumer restarted on the same journal knows its predecessor's process is gone. */
const node = () => {
  const p = globalThis.process;
  const os = p && p.pid && p.getBuiltinModule && p.getBuiltinModule('node:os');
  return os ? { p, host: os.hostname() } : undefined;
};

/** A new consumer id: `rand` in browsers; `p<pid>@<host>.rand` in Node. */
export function ownerId(rand) {
  const n = node();
  return n ? `p${n.p.pid}@${n.host}.${rand}` : rand;
}

/** Whether the consumer `owner` is surely gone: its id names a process of this host that no
 *  longer runs (never this process itself; anything it cannot tell is alive). */
export function ownerGone(owner) {
  const n = node();
  const m = /^p(\d+)@(.+)\.[^.]+$/.exec(owner);
  if (!n || !m || m[2] !== n.host || +m[1] === n.p.pid) return false;
  try { n.p.kill(+m[1], 0); return false; } catch (e) { return e.code === 'ESRCH'; }
}

/**
 * A queue object's sign of life for other tabs: holds the Web Lock `name` until `release()`
 * (or until the page goes away). `held` turns true once the lock is granted; it stays false
 * where Web Locks are missing or refused.
 */
export function holdAlive(name) {
  // In Node the process is the sign of life (see ownerGone), for ids that name it.
  const n = node();
  const sign = { held: !!n && name.includes(`/p${n.p.pid}@${n.host}.`), release() {} };
  const locks = locksApi();
  if (!locks || typeof locks.request !== 'function') return sign;
  const gone = new Promise((resolve) => { sign.release = resolve; });
  locks.request(name, () => { sign.held = true; return gone; }).catch(() => { sign.held = false; });
  return sign;
}

/** Ids of the consumers alive in this browser (locks `prefix` + id held), or undefined where
 *  that cannot be known. */
export function liveOwners(prefix) {
  const locks = locksApi();
  if (!locks || typeof locks.query !== 'function') return Promise.resolve(undefined);
  return locks.query().then(
    (s) => s.held.map((l) => l.name || '').filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length)),
    () => undefined,
  );
}

/**
 * Runs `run(locked)` (which returns a promise) holding the Web Lock `name`, so that one
 * consumer per queue runs across the tabs of a browser; `locked` tells whether it holds it
 * (with `ifAvailable`, it runs at once, without the lock when someone else holds it).
 * Where the Web Locks API is missing (Node, old browsers) or refused (a third-party frame
 * without storage access), or `exclusive` is false, it just runs.
 */
export function withLock(name, signal, exclusive, run, ifAvailable) {
  const locks = locksApi();
  if (!exclusive || !locks || typeof locks.request !== 'function') return run(false);
  let started = false;
  const opts = ifAvailable ? { ifAvailable: true } : signal ? { signal } : {};
  return locks.request(name, opts, (lock) => { started = true; return run(!!lock); })
    .catch((e) => {
      if (started || !e) throw e;
      // A third-party iframe whose storage is blocked may be refused the lock: run without it.
      if (e.name === 'SecurityError') return run(false);
      if (e.name === 'AbortError') {
        const why = "aborted while waiting for another tab's consumer of this queue";
        throw new B24Error('ABORTED: ' + why, 'ABORTED', 0, '', why, false);
      }
      throw e;
    });
}

/** `callAsync` for a journal store: a call that has not settled within `ms` rejects. */
export function callStore(fn, key, value, ms) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject('timeout'), clamp(ms)); });
  return Promise.race([callAsync(fn, key, value), late]).finally(() => clearTimeout(timer));
}

/** Calls `fn(...args)` and always returns a promise (a throw becomes a rejection). */
export function callAsync(fn, a, b) {
  try {
    return Promise.resolve(fn(a, b));
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * One message to the app's logger: a function `(level, message, context)`, or an object with
 * the official SDK's LoggerInterface methods (`warn` goes to `warning`). The context holds what
 * is known: `portal` (host), `method`, `processId`. A logger that throws or rejects is ignored:
 * logging never breaks the work (and a rejection must not become an unhandled one).
 */
export function logTo(logger, level, message, portal, method, processId) {
  const context = {};
  if (portal) context.portal = portal;
  if (method) context.method = method;
  if (processId) context.processId = processId;
  try {
    const r = typeof logger === 'function' ? logger(level, message, context) : logger[level === 'warn' ? 'warning' : level](message, context);
    if (r && typeof r.then === 'function') r.then(undefined, () => {});
  } catch {
    // The app's logger failed: nothing to do about it here.
  }
}
