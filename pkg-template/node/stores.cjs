'use strict';
// The two stores of `Fleet` (Node): FileStore (one directory, one machine, no other software)
// and RedisStore (any number of workers on any number of machines). Both keep the contract the
// fleet's core holds its reference store to (src/core/fleet/store.rs): swap writes only over the
// value read; a lease has one holder at a time and a fence that grows with every new holder;
// a fenced write lands only while the lease's fence is the one it names.

const fs = require('node:fs');
const path = require('node:path');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A key as a file name: letters, digits, '-', '_' and %XX escapes only (no '/', no '.', so
 *  no '..' and no clash with temporary files); null for a key that cannot be one. */
function fileName(key) {
  let name;
  try {
    name = encodeURIComponent(key).replace(/[!'()*.~]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  } catch {
    return null; // a lone surrogate
  }
  return name.length > 240 ? null : name;
}

function keyOf(name) {
  if (name.includes('.')) return null; // a temporary file
  try { return decodeURIComponent(name); } catch { return null; }
}

/**
 * Tokens, journals and leases in one directory. Writes go to a temporary file renamed over the
 * old one (a crash leaves the old or the new value, never half of one); swap and lease take a
 * lock file per key (O_EXCL), so several processes on one machine may share the directory. A
 * lock left by a killed process is broken after `staleLockMs`.
 */
class FileStore {
  constructor(dir, { staleLockMs = 10000 } = {}) {
    if (typeof dir !== 'string' || !dir) throw new TypeError('FileStore: a directory is required');
    this.dir = path.resolve(dir);
    this.staleLockMs = staleLockMs;
    fs.mkdirSync(path.join(this.dir, 'data'), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(this.dir, 'locks'), { recursive: true, mode: 0o700 });
  }

  file(key) {
    const name = fileName(String(key));
    if (!name) throw new Error('FileStore: a key too long or not text');
    return path.join(this.dir, 'data', name);
  }

  async get(key) {
    try { return await fs.promises.readFile(this.file(key), 'utf8'); } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
  }

  async set(key, value) {
    const file = this.file(key);
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await fs.promises.writeFile(tmp, String(value), { mode: 0o600 });
    await fs.promises.rename(tmp, file);
  }

  async delete(key) {
    await fs.promises.rm(this.file(key), { force: true });
  }

  async locked(key, fn) {
    const name = fileName(String(key));
    if (!name) throw new Error('FileStore: a key too long or not text');
    const lock = path.join(this.dir, 'locks', name);
    for (let i = 0; ; i++) {
      try {
        const h = await fs.promises.open(lock, 'wx');
        await h.close();
        break;
      } catch (e) {
        if (e.code !== 'EEXIST') throw e;
        try {
          const st = await fs.promises.stat(lock);
          if (Date.now() - st.mtimeMs > this.staleLockMs) await fs.promises.rm(lock, { force: true });
        } catch { /* gone meanwhile */ }
        if (i > 2000) throw new Error('FileStore: lock busy');
        await sleep(2 + Math.random() * 8);
      }
    }
    try { return await fn(); } finally { await fs.promises.rm(lock, { force: true }); }
  }

  async swap(key, expected, value) {
    return this.locked(key, async () => {
      if ((await this.get(key)) !== expected) return false;
      if (value === null) await this.delete(key); else await this.set(key, value);
      return true;
    });
  }

  async lease(name, owner, ttlMs, nowMs) {
    const key = `\u0000lease/${name}`;
    return this.locked(key, async () => {
      const raw = await this.get(key);
      const held = raw ? JSON.parse(raw) : { fence: 0 };
      if (held.owner && held.owner !== owner && held.until > nowMs) return null;
      const fence = held.owner === owner && held.until > nowMs ? held.fence : held.fence + 1;
      await this.set(key, JSON.stringify({ owner, until: nowMs + ttlMs, fence }));
      return fence;
    });
  }

  async fenced(name, fence, key, value) {
    return this.locked(`\u0000lease/${name}`, async () => {
      const raw = await this.get(`\u0000lease/${name}`);
      if (!raw || JSON.parse(raw).fence !== fence) return false;
      if (value === null) await this.delete(key); else await this.set(key, value);
      return true;
    });
  }

  async release(name, owner) {
    const key = `\u0000lease/${name}`;
    await this.locked(key, async () => {
      const raw = await this.get(key);
      const held = raw ? JSON.parse(raw) : null;
      if (held && held.owner === owner) await this.set(key, JSON.stringify({ fence: held.fence }));
    });
  }

  async keys(prefix) {
    const names = await fs.promises.readdir(path.join(this.dir, 'data'));
    return names
      .filter((n) => !n.endsWith('.tmp'))
      .map(keyOf)
      .filter((k) => k !== null && !k.startsWith('\u0000') && k.startsWith(prefix))
      .sort();
  }
}

// Every key is listed in the set of its directory (the key up to its last '/'), so that keys()
// reads a set rather than SCANning the database: `put` writes KEYS[1] (deletes it, for nil) and
// keeps it listed in that set, KEYS[2].
const PUT = `
local function put(value)
  if value then
    redis.call('SET', KEYS[1], value); redis.call('SADD', KEYS[2], KEYS[1])
  else
    redis.call('DEL', KEYS[1]); redis.call('SREM', KEYS[2], KEYS[1])
  end
end
`;

const SWAP = `${PUT}
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
put(ARGV[3] == '1' and ARGV[4] or nil)
return 1`;

const SET = `${PUT} put(ARGV[1]) return 1`;
const DEL = `${PUT} put(nil) return 1`;

// The lease in KEYS[1] (its owner, expiring by Redis's own clock), its fence counter in KEYS[2].
const LEASE = `
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return nil end
if not owner then redis.call('INCR', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return tonumber(redis.call('GET', KEYS[2]))`;

// A write (ARGV[2] '0': a delete) only while the fence counter in KEYS[3] is still ARGV[1].
const FENCED = `${PUT}
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
put(ARGV[2] == '1' and ARGV[3] or nil)
return 1`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`;

/**
 * Tokens, journals and leases in Redis, for workers on many machines. Takes a connected client
 * of the `redis` package (node-redis: `sendCommand`) or of `ioredis` (`call`). Leases expire by
 * Redis's clock (PX); swap and lease are Lua scripts, atomic on the server. Keys live under
 * `prefix` (default 'b24-offline:').
 */
class RedisStore {
  constructor(client, { prefix = 'b24-offline:' } = {}) {
    if (client && typeof client.sendCommand === 'function') this.cmd = (args) => client.sendCommand(args);
    else if (client && typeof client.call === 'function') this.cmd = (args) => client.call(...args);
    else throw new TypeError('RedisStore: a connected client of "redis" or "ioredis" is required');
    this.prefix = prefix;
  }

  /** The set listing the keys of `key`'s directory. */
  dir(key) {
    return `${this.prefix}\u0000dir:${key.slice(0, key.lastIndexOf('/') + 1)}`;
  }

  async get(key) {
    const v = await this.cmd(['GET', this.prefix + key]);
    return v === undefined ? null : v;
  }

  async set(key, value) {
    await this.cmd(['EVAL', SET, '2', this.prefix + key, this.dir(key), String(value)]);
  }

  async delete(key) {
    await this.cmd(['EVAL', DEL, '2', this.prefix + key, this.dir(key)]);
  }

  async swap(key, expected, value) {
    const r = await this.cmd([
      'EVAL', SWAP, '2', this.prefix + key, this.dir(key),
      expected === null ? '0' : '1', expected === null ? '' : expected,
      value === null ? '0' : '1', value === null ? '' : value,
    ]);
    return Number(r) === 1;
  }

  async lease(name, owner, ttlMs) {
    const r = await this.cmd([
      'EVAL', LEASE, '2', `${this.prefix}\u0000lease:${name}`, `${this.prefix}\u0000fence:${name}`,
      owner, String(Math.max(1, Math.ceil(ttlMs))),
    ]);
    return r === null || r === undefined ? null : Number(r);
  }

  async fenced(name, fence, key, value) {
    const r = await this.cmd([
      'EVAL', FENCED, '3', this.prefix + key, this.dir(key), `${this.prefix}\u0000fence:${name}`,
      String(fence), value === null ? '0' : '1', value === null ? '' : value,
    ]);
    return Number(r) === 1;
  }

  async release(name, owner) {
    await this.cmd(['EVAL', RELEASE, '1', `${this.prefix}\u0000lease:${name}`, owner]);
  }

  /** Keys starting with `prefix`: from its directory's set, and its own when it names one. */
  async keys(prefix) {
    const sets = [this.dir(prefix)];
    if (!prefix.endsWith('/')) sets.push(this.dir(prefix + '/'));
    const full = this.prefix + prefix;
    const found = new Set();
    for (const set of sets) {
      for (const k of await this.cmd(['SMEMBERS', set])) {
        if (k.startsWith(full)) found.add(k.slice(this.prefix.length));
      }
    }
    return [...found].sort();
  }
}

module.exports = { FileStore, RedisStore };
