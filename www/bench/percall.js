// Per-call cost of the library against the same request made by hand (fetch + JSON.parse), in
// Node or a browser. The two run interleaved, round by round and in alternating order, on one
// connection pool, so that the machine's noise falls on both; the figure is the median of the
// rounds' ratios (library time / hand-made time), never a time on its own.
export async function perCall({ lib, emulator, token, rounds = 21, n = 80, parallel = 50 }) {
  const b24 = lib.Bitrix24.withToken({ domain: emulator, accessToken: token, allowHttp: true, limits: false });
  const q = b24.offline({ store: 'memory' });
  const byHand = (method) => () =>
    fetch(`${emulator}/rest/${method}.json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ auth: token }),
    })
      .then((r) => r.text())
      .then((text) => {
        const v = JSON.parse(text);
        if (v.error) throw new Error(v.error);
        return v.result;
      });
  const pairs = {
    call: [byHand('profile'), () => b24.call('profile')],
    'q.list': [byHand('event.offline.list'), () => q.list()],
  };
  const out = {};
  for (const [name, [hand, lib_]] of Object.entries(pairs)) {
    for (let i = 0; i < 20; i++) {
      await hand();
      await lib_();
    }
    out[name] = {
      sequential: await ratio(hand, lib_, rounds, n, false),
      [`${parallel} at once`]: await ratio(hand, lib_, rounds, parallel, true, 4),
    };
  }
  return out;
}

async function timed(f, n, parallel, repeat) {
  const t0 = performance.now();
  for (let r = 0; r < repeat; r++) {
    if (parallel) await Promise.all(Array.from({ length: n }, () => f()));
    else for (let i = 0; i < n; i++) await f();
  }
  return performance.now() - t0;
}

// A round is `n` calls one after another, or `repeat` waves of `n` calls at once.
async function ratio(hand, lib, rounds, n, parallel, repeat = 1) {
  const ratios = [];
  let handMs = 0;
  for (let i = 0; i < rounds; i++) {
    let a, b;
    if (i % 2) {
      b = await timed(lib, n, parallel, repeat);
      a = await timed(hand, n, parallel, repeat);
    } else {
      a = await timed(hand, n, parallel, repeat);
      b = await timed(lib, n, parallel, repeat);
    }
    ratios.push(b / a);
    handMs += a;
  }
  ratios.sort((x, y) => x - y);
  const at = (p) => ratios[Math.min(ratios.length - 1, Math.floor(p * ratios.length))];
  return { ratio: at(0.5), p25: at(0.25), p75: at(0.75), byHandMsPerCall: handMs / rounds / n / repeat };
}
