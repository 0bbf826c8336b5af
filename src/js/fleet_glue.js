// The Node build's fleet: calling the app's store object (only this build carries this file).

/**
 * Calls `obj[name](...args)` and settles with its result (a value or a promise), or rejects
 * with 'timeout' if it has not settled within `timeoutMs`, or with what it threw.
 */
export function callMethod(obj, name, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject('timeout'), timeoutMs);
    Promise.resolve()
      .then(() => obj[name](...args))
      .then(
        (v) => { clearTimeout(timer); resolve(v); },
        (e) => { clearTimeout(timer); reject(e); },
      );
  });
}

/** This process's nonce in its worker id: random, so no two processes share one. */
export function workerId() {
  return 'w-' + globalThis.crypto.randomUUID();
}
