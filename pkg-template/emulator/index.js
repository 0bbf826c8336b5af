'use strict';
// The portal emulator for JavaScript tests: the emulator's logic (the Rust crate tests/emulator,
// compiled to wasm: b24_emulator.js) behind node:http. This file only moves bytes: it hands each
// request to the wasm and does what the answer's step says (answer, close the connection
// without an answer, wait, post a form to an app, open listeners for new portals), posts the
// forms the portals leave in their outbox, and ticks the held-back onOfflineEvent signals.
const http = require('node:http');
const { Emulator } = require('./b24_emulator.js');

const MAX_BODY = Emulator.maxBody();
const TICK_MS = Emulator.tickMs();
const POST_TIMEOUT_MS = Emulator.postTimeoutMs();

/** `127.0.0.1:PORT` (`[::1]:PORT`) of a listening server: the portal's domain. */
function domainOf(server) {
  const a = server.address();
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(domainOf(server));
    });
  });
}

async function startEmulator(options = {}) {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  if (typeof host !== 'string' || host === '') throw new TypeError('startEmulator: host must be a non-empty string');
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError('startEmulator: port must be an integer from 0 to 65535');

  let engine = null;
  let stopped = false;
  let stopping = null;
  const servers = new Set();
  const timers = new Set();
  const outbound = new Set();

  const sleep = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      t.unref();
      timers.add(t);
    });

  /** POSTs a form to an app: its status once the headers arrive, 0 when none came (no
   *  redirect followed, https not spoken: the native binary's client does the same). */
  const post = (url, form) =>
    new Promise((resolve) => {
      let target;
      try {
        target = new URL(url);
      } catch {
        return resolve(0);
      }
      if (target.protocol !== 'http:') return resolve(0);
      const req = http.request(target, {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(form) },
      });
      const finish = (status) => {
        clearTimeout(timer);
        outbound.delete(req);
        resolve(status);
      };
      const timer = setTimeout(() => {
        req.destroy();
        finish(0);
      }, POST_TIMEOUT_MS);
      timer.unref();
      outbound.add(req);
      req.on('response', (res) => {
        res.resume();
        finish(res.statusCode ?? 0);
      });
      req.on('error', () => finish(0));
      req.end(form);
    });

  const deliver = () => {
    for (const d of engine.takeDeliveries()) {
      post(d.url, d.form).then((status) => (stopped ? d.free() : d.done(status >= 200 && status < 300)));
    }
  };

  const openPortals = async (count) => {
    const opened = [];
    try {
      for (let i = 0; i < count; i++) {
        const server = portalServer();
        opened.push(server);
        await listen(server, 0, '127.0.0.1');
      }
    } catch (e) {
      for (const s of opened) s.close();
      throw e;
    }
    return opened.map(domainOf);
  };

  const respond = (res, step) => {
    const headers = step.headers;
    const body = step.body;
    res.statusCode = step.status;
    step.free();
    for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(headers[i], headers[i + 1]);
    res.setHeader('content-length', body.length);
    res.end(body);
  };

  const run = async (domain, req, res, body, oversized) => {
    let step = engine.handle(domain, req.method, req.url, req.rawHeaders, body, oversized);
    for (;;) {
      deliver();
      switch (step.kind) {
        case 'respond':
          return respond(res, step);
        case 'drop':
          step.free();
          req.socket.destroy();
          return;
        case 'wait':
          await sleep(step.ms);
          if (stopped) return;
          step = step.waited();
          break;
        case 'post': {
          const status = await post(step.url, step.form);
          if (stopped) return;
          step = step.posted(status);
          break;
        }
        case 'listen': {
          let addresses;
          try {
            addresses = await openPortals(step.count);
          } catch (e) {
            if (stopped) return;
            step = step.listenFailed(String(e?.message ?? e));
            break;
          }
          if (stopped) return;
          step = step.listening(addresses);
          break;
        }
        default:
          throw new Error(`the emulator asked for an unknown step '${step.kind}'`);
      }
    }
  };

  function portalServer() {
    const server = http.createServer((req, res) => {
      const domain = domainOf(server);
      const chunks = [];
      let size = 0;
      let oversized = false;
      req.on('data', (chunk) => {
        if (oversized) return;
        size += chunk.length;
        if (size > MAX_BODY) {
          oversized = true;
          chunks.length = 0;
        } else chunks.push(chunk);
      });
      req.on('end', () => {
        if (stopped) return req.socket.destroy();
        run(domain, req, res, Buffer.concat(chunks), oversized).catch((e) => {
          if (res.headersSent || stopped) return req.socket.destroy();
          res.statusCode = 500;
          res.setHeader('content-type', 'text/plain; charset=utf-8');
          res.end(`b24-emulator: ${e?.stack ?? e}`);
        });
      });
    });
    // Connections stay open while idle, as the native binary's do: a pooled client connection
    // is never closed under a request it is about to send.
    server.keepAliveTimeout = 0;
    server.requestTimeout = 0;
    servers.add(server);
    return server;
  }

  const main = portalServer();
  const domain = await listen(main, port, host).catch((e) => {
    servers.delete(main);
    throw e;
  });
  engine = new Emulator(domain);
  const ticker = setInterval(() => {
    engine.tick();
    deliver();
  }, TICK_MS);
  ticker.unref();
  const url = engine.url;

  return {
    url,
    // The central OAuth server of every portal of this emulator is the main portal's origin.
    oauthServer: url,
    port: main.address().port,
    stop() {
      if (stopping) return stopping;
      stopped = true;
      clearInterval(ticker);
      for (const t of timers) clearTimeout(t);
      for (const r of outbound) r.destroy();
      stopping = Promise.all(
        [...servers].map(
          (s) =>
            new Promise((resolve) => {
              s.close(() => resolve());
              s.closeAllConnections();
            }),
        ),
      ).then(() => {
        engine.free();
      });
      return stopping;
    },
  };
}

module.exports = { startEmulator };
