// The few things that are smaller and clearer in JavaScript than through bindings.

/** Every failure of b24-offline: a real Error (with a stack) carrying a stable `code`. */
export class B24Error extends Error {
  constructor(message, code, status, method, description, retryable) {
    super(message);
    this.name = 'B24Error';
    this.code = code;
    this.status = status;
    this.method = method;
    this.description = description;
    this.retryable = retryable;
  }
}

export function makeError(message, code, status, method, description, retryable) {
  return new B24Error(message, code, status, method, description, retryable);
}

/** Resolves with true after `ms`, or with false as soon as `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve(false);
    const onAbort = () => { clearTimeout(timer); resolve(false); };
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, Math.max(0, ms));
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** An AbortSignal that fires after `ms` or when `outer` fires; `timedOut()` tells which. */
export function deadline(ms, outer) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; controller.abort(); }, ms);
  const onAbort = () => controller.abort();
  if (outer) {
    if (outer.aborted) controller.abort();
    else outer.addEventListener('abort', onAbort, { once: true });
  }
  return {
    signal: controller.signal,
    timedOut: () => timedOut,
    done: () => { clearTimeout(timer); if (outer) outer.removeEventListener('abort', onAbort); },
  };
}

/** Wraps `next()` (a function returning Promise<IteratorResult>) as an async iterable. */
export function asyncIterable(next) {
  const iterator = { next, [Symbol.asyncIterator]() { return iterator; } };
  return iterator;
}

/**
 * Runs `run` (which returns a promise) holding the Web Lock `name`, so that one consumer per
 * queue runs across the tabs of a browser. Where the Web Locks API is missing (Node, old
 * browsers) or refused (a third-party frame without storage access), or `exclusive` is false,
 * it just runs.
 */
export function withLock(name, signal, exclusive, run) {
  const locks = typeof navigator !== 'undefined' && navigator.locks;
  if (!exclusive || !locks || typeof locks.request !== 'function') return run();
  let started = false;
  return locks.request(name, signal ? { signal } : {}, () => { started = true; return run(); })
    // A third-party iframe whose storage is blocked may be refused the lock: run without it.
    .catch((e) => (!started && e && e.name === 'SecurityError' ? run() : Promise.reject(e)));
}

/** Calls `fn(...args)` and always returns a promise (a throw becomes a rejection). */
export function callAsync(fn, a, b) {
  try {
    return Promise.resolve(fn(a, b));
  } catch (e) {
    return Promise.reject(e);
  }
}
