'use strict';
// The two stores of `Fleet` (Node): FileStore (one directory, one machine, no other software)
// and RedisStore (any number of workers on any number of machines, one Redis or a Redis
// Cluster). Both keep the contract the fleet's core holds its reference store to
// (src/core/fleet/store.rs): swap writes only over the value read; a lease has one holder at a
// time and a fence that grows with every new holder; a fenced write lands only while the
// lease's fence is the one it names.

const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const crypto = require('node:crypto');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A key as a file name: letters, digits, '-', '_' and %XX escapes only (no '/', no '.', so
 *  no '..' and no clash with temporary files or a lock's own files); null for a key that
 *  cannot be one. */
function fileName(key) {
  let name;
  try {
    name = encodeURIComponent(key).replace(/[!'()*.~]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  } catch {
    return null; // a lone surrogate
  }
  return name.length > 240 ? null : name;
}

/** The lock files' name for a key's file name: itself, or for a long one (its lock's staging
 *  directories add 33 characters) '%%' and its SHA-256 ('%%' is never in a file name). */
function lockName(name) {
  return name.length <= 200 ? name : '%%' + crypto.createHash('sha256').update(name).digest('hex');
}

function keyOf(name) {
  if (name.includes('.')) return null; // a temporary file
  try { return decodeURIComponent(name); } catch { return null; }
}

const lost = () => new Error('FileStore: the lock was lost (held past its deadline, or broken): nothing was written');

/** Whether a lock's owner (as its file reads) is surely gone or out of time. */
function breakable(owner, now, staleLockMs, mtimeMs) {
  if (!owner) return now - mtimeMs > staleLockMs; // being written (or left by an older FileStore)
  if (!(now < owner.deadline)) return true;
  if (owner.host !== os.hostname() || owner.pid === process.pid) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (e) {
    return e.code === 'ESRCH';
  }
}

function parseOwner(text) {
  try {
    const o = JSON.parse(text);
    return typeof o.token === 'string' && Number.isInteger(o.pid) && typeof o.deadline === 'number' ? o : null;
  } catch {
    return null;
  }
}

/**
 * Tokens, journals and leases in one directory. Writes go to a temporary file renamed over the
 * old one (a crash leaves the old or the new value, never half of one). Swap, lease, fenced
 * writes and release run under a lock per key, so several processes on one machine may share
 * the directory:
 *
 * - `locks/NAME` (created with O_EXCL) names its holder: a random token, pid, host name and a
 *   deadline (taken + `staleLockMs`). It is broken only when its deadline has passed or its
 *   process is gone (same host: `kill(pid, 0)` says ESRCH), and only if it still names the
 *   holder that was judged; a lock being written (no owner yet) by its age.
 * - The holder stages every write in its own directory `locks/NAME.TOKEN` and renames it from
 *   there into place (a delete renames the file into it). A new holder first moves every other
 *   `locks/NAME.*` directory away, so from then on an older holder's rename finds no source and
 *   fails: a holder that was paused past its deadline and broken never writes, however late it
 *   wakes, even if it was paused between its last check and its rename. Before each write the
 *   holder also checks that the lock still names it and its deadline has not passed (an Error
 *   otherwise: STORE_FAILED in the fleet). Release removes the lock only while it names it.
 */
class FileStore {
  constructor(dir, { staleLockMs = 10000 } = {}) {
    if (typeof dir !== 'string' || !dir) throw new TypeError('FileStore: a directory is required');
    if (!(staleLockMs > 0)) throw new TypeError('FileStore: staleLockMs must be a positive number');
    this.dir = path.resolve(dir);
    this.staleLockMs = staleLockMs;
    for (const d of ['data', 'locks', 'tmp']) fs.mkdirSync(path.join(this.dir, d), { recursive: true, mode: 0o700 });
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
    const tmp = path.join(this.dir, 'tmp', `${process.pid}.${crypto.randomBytes(6).toString('hex')}`);
    await fs.promises.writeFile(tmp, String(value), { mode: 0o600 });
    await fs.promises.rename(tmp, file);
  }

  async delete(key) {
    await fs.promises.rm(this.file(key), { force: true });
  }

  /** Moves a directory out of the way (then removes it): whoever stages writes in it can no
   *  longer write. */
  async retire(dir) {
    const away = path.join(this.dir, 'tmp', `${path.basename(dir)}.${crypto.randomBytes(6).toString('hex')}`);
    try { await fs.promises.rename(dir, away); } catch (e) {
      if (e.code === 'ENOENT') return;
      throw e;
    }
    await fs.promises.rm(away, { recursive: true, force: true });
  }

  /** Runs `fn(w)` holding the lock of `key`; `w.put(k, value)` writes (deletes, for null) under
   *  it, or fails once the lock is no longer this holder's. */
  async locked(key, fn) {
    const base = fileName(String(key));
    if (!base) throw new Error('FileStore: a key too long or not text');
    const name = lockName(base);
    const locks = path.join(this.dir, 'locks');
    const lock = path.join(locks, name);
    const token = crypto.randomBytes(16).toString('hex');
    const own = path.join(locks, `${name}.${token}`);
    // Waits for a live holder up to its deadline (or this store's staleLockMs), and 2 s more.
    let limit = Date.now() + this.staleLockMs;
    let owner;
    for (;;) {
      owner = { token, pid: process.pid, host: os.hostname(), deadline: Date.now() + this.staleLockMs };
      let h;
      try { h = await fs.promises.open(lock, 'wx', 0o600); } catch (e) {
        if (e.code !== 'EEXIST') throw e;
      }
      if (h) {
        try {
          await h.writeFile(JSON.stringify(owner));
          await h.close();
        } catch (e) {
          await h.close().catch(() => {});
          await fs.promises.rm(lock, { force: true });
          throw e;
        }
        break;
      }
      const deadline = await this.breakIfStale(lock);
      if (deadline > limit) limit = deadline;
      if (Date.now() > limit + 2000) throw new Error('FileStore: lock busy');
      await sleep(2 + Math.random() * 8);
    }
    const mine = async () => {
      let text;
      try { text = await fs.promises.readFile(lock, 'utf8'); } catch (e) {
        if (e.code === 'ENOENT') return false;
        throw e;
      }
      return parseOwner(text)?.token === token;
    };
    try {
      // The staging directory is made after the lock is taken and before it is checked again:
      // whoever takes the lock after that check finds it and retires it.
      await fs.promises.mkdir(own, { mode: 0o700 });
      if (!(await mine())) throw lost();
      for (const entry of await fs.promises.readdir(locks)) {
        if (entry.startsWith(`${name}.`) && entry !== `${name}.${token}`) await this.retire(path.join(locks, entry));
      }
      const put = async (k, value) => {
        const file = this.file(k);
        if (!(Date.now() < owner.deadline) || !(await mine())) throw lost();
        const staged = path.join(own, crypto.randomBytes(6).toString('hex'));
        if (value === null) {
          try { await fs.promises.rename(file, staged); } catch (e) {
            if (e.code !== 'ENOENT') throw e;
            // Nothing to delete, or the staging directory is gone (then the lock is).
            try { await fs.promises.stat(own); } catch { throw lost(); }
            return;
          }
          await fs.promises.rm(staged, { force: true });
        } else {
          try { await fs.promises.writeFile(staged, String(value), { mode: 0o600 }); } catch (e) {
            if (e.code === 'ENOENT') throw lost();
            throw e;
          }
          try { await fs.promises.rename(staged, file); } catch (e) {
            if (e.code === 'ENOENT') throw lost();
            throw e;
          }
        }
      };
      return await fn({ put });
    } finally {
      await fs.promises.rm(own, { recursive: true, force: true });
      if (await mine()) await fs.promises.rm(lock, { force: true });
    }
  }

  /** Removes the lock file `lock` if its holder is gone or out of time, and only the lock that
   *  was judged: read again just before the unlink. Should a breaker pause between that read and
   *  the unlink and so remove a newer holder's lock, that holder loses it (its next write fails:
   *  the following holder retires its staging directory), but never writes beside another.
   *  Returns the deadline of a holder left in place (0 when unknown). */
  async breakIfStale(lock) {
    const read = async () => {
      try {
        const [text, st] = await Promise.all([fs.promises.readFile(lock, 'utf8'), fs.promises.stat(lock)]);
        return { text, mtimeMs: st.mtimeMs };
      } catch (e) {
        if (e.code === 'ENOENT') return null;
        throw e;
      }
    };
    const seen = await read();
    if (!seen) return 0;
    const owner = parseOwner(seen.text);
    if (!breakable(owner, Date.now(), this.staleLockMs, seen.mtimeMs)) return owner ? owner.deadline : 0;
    const again = await read();
    if (again && again.text === seen.text && again.mtimeMs === seen.mtimeMs) await fs.promises.rm(lock, { force: true });
    return 0;
  }

  async swap(key, expected, value) {
    return this.locked(key, async (w) => {
      if ((await this.get(key)) !== expected) return false;
      await w.put(key, value);
      return true;
    });
  }

  async lease(name, owner, ttlMs, nowMs) {
    const key = `\u0000lease/${name}`;
    return this.locked(key, async (w) => {
      const raw = await this.get(key);
      const held = raw ? JSON.parse(raw) : { fence: 0 };
      if (held.owner && held.owner !== owner && held.until > nowMs) return null;
      const fence = held.owner === owner && held.until > nowMs ? held.fence : held.fence + 1;
      await w.put(key, JSON.stringify({ owner, until: nowMs + ttlMs, fence }));
      return fence;
    });
  }

  async fenced(name, fence, key, value) {
    return this.locked(`\u0000lease/${name}`, async (w) => {
      const raw = await this.get(`\u0000lease/${name}`);
      if (!raw || JSON.parse(raw).fence !== fence) return false;
      await w.put(key, value);
      return true;
    });
  }

  async release(name, owner) {
    const key = `\u0000lease/${name}`;
    await this.locked(key, async (w) => {
      const raw = await this.get(key);
      const held = raw ? JSON.parse(raw) : null;
      if (held && held.owner === owner) await w.put(key, JSON.stringify({ fence: held.fence }));
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

// Redis. Every key carries a hash tag right after the prefix, `{MEMBER}` for a key with a
// segment of 32 lower-case hex digits (the first such: a portal's member id) and `{-}` for any
// other, so that a portal's record, journal, wake flag, leases and fences share one slot of a
// Redis Cluster and every script below touches one slot only.
//
// Each key is listed in a set per directory (the key up to its last '/'), so that keys() reads
// a set rather than SCANning. When the set has the key's slot (journal entries, worker
// heartbeats), the scripts keep it up to date with the key. When it does not (`portal/MEMBER`,
// `journal/MEMBER`, `wake/MEMBER`: the directory has no member id), the listing is kept from
// here, around the script: added before a write, removed after a delete and added back if the
// key exists again by then, and added again after a write that created the key. A listing may
// then name a key that is gone (callers get() what they list), and one taken while the same
// key is deleted and created again at once may miss it; the set never ends without a key that
// exists.

// KEYS[1] is the key. `put` writes it (deletes it, for nil) and, given its directory's set (when
// in the same slot), keeps it listed there. Every write script answers {written, existed before,
// exists after}.
const PUT = `
local function put(value, set)
  local had = redis.call('EXISTS', KEYS[1])
  if value then
    redis.call('SET', KEYS[1], value)
    if set then redis.call('SADD', set, KEYS[1]) end
    return {1, had, 1}
  end
  redis.call('DEL', KEYS[1])
  if set then redis.call('SREM', set, KEYS[1]) end
  return {1, had, 0}
end
local function refused()
  local has = redis.call('EXISTS', KEYS[1])
  return {0, has, has}
end
`;

// KEYS[2]: the set, if any.
const SWAP = `${PUT}
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return refused() end
elseif cur ~= ARGV[2] then
  return refused()
end
return put(ARGV[3] == '1' and ARGV[4] or nil, KEYS[2])`;

const SET = `${PUT} return put(ARGV[1], KEYS[2])`;
const DEL = `${PUT} return put(nil, KEYS[2])`;

// The lease in KEYS[1] (its owner, expiring by Redis's own clock), its fence counter in KEYS[2].
const LEASE = `
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return nil end
if not owner then redis.call('INCR', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return tonumber(redis.call('GET', KEYS[2]))`;

// A write (ARGV[2] '0': a delete) only while the fence counter in KEYS[2] is still ARGV[1];
// KEYS[3]: the set, if any.
const FENCED = `${PUT}
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return refused() end
return put(ARGV[2] == '1' and ARGV[3] or nil, KEYS[3])`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`;

const MEMBER = /^[0-9a-f]{32}$/;

/** The hash tag of a key (or of a directory, or a lease name): its first segment of 32
 *  lower-case hex digits, '-' when it has none. */
function tagOf(key) {
  for (const segment of key.split('/')) if (MEMBER.test(segment)) return segment;
  return '-';
}

/**
 * Tokens, journals and leases in Redis, for workers on many machines. Takes a connected client
 * of the `redis` package (node-redis: `createClient`, or `createCluster` for a Redis Cluster) or
 * of `ioredis` (`Redis` or `Cluster`). Leases expire by Redis's clock (PX); writes, swap, lease,
 * fenced writes and release are Lua scripts, atomic on the server and each within one slot.
 * Keys live under `prefix` (default 'b24-offline:'; no braces: the store sets the hash tags).
 */
class RedisStore {
  constructor(client, { prefix = 'b24-offline:' } = {}) {
    if (client && typeof client.sendCommand === 'function' && client.masters !== undefined) {
      // node-redis's cluster client routes by the key it is given; every command goes to the
      // slot's master (not readonly: a replica may lag).
      this.cmd = (key, args) => client.sendCommand(key, false, args);
    } else if (client && typeof client.sendCommand === 'function') {
      this.cmd = (key, args) => client.sendCommand(args);
    } else if (client && typeof client.call === 'function') {
      // ioredis (its Cluster finds the keys in the command itself).
      this.cmd = (key, args) => client.call(...args);
    } else {
      throw new TypeError('RedisStore: a connected client of "redis" or "ioredis" is required');
    }
    if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
      throw new TypeError("RedisStore: the prefix must be text without '{' or '}'");
    }
    this.prefix = prefix;
  }

  /** The Redis key of a store key. */
  key(key) {
    return `${this.prefix}{${tagOf(key)}}${key}`;
  }

  /** The set listing the keys of `key`'s directory. */
  dir(key) {
    const dir = key.slice(0, key.lastIndexOf('/') + 1);
    return `${this.prefix}{${tagOf(dir)}}\u0000dir:${dir}`;
  }

  /** The directory's set when it is in the key's slot (the scripts keep it), else null. */
  together(key) {
    return tagOf(key) === tagOf(key.slice(0, key.lastIndexOf('/') + 1)) ? this.dir(key) : null;
  }

  /** Runs a write script on `key` with its extra KEYS (`keys`, after the key) and ARGV, keeping
   *  the key listed; `value` is what it writes (null: a delete). Whether it wrote. */
  async write(key, value, script, keys, argv) {
    const k = this.key(key);
    const set = this.together(key);
    const all = set ? [k, ...keys, set] : [k, ...keys];
    if (!set && value !== null) await this.cmd(this.dir(key), ['SADD', this.dir(key), k]);
    const r = await this.cmd(k, ['EVAL', script, String(all.length), ...all, ...argv]);
    const [written, had, has] = Array.from(r, Number);
    if (!set) {
      if (value !== null && written && !had) await this.cmd(this.dir(key), ['SADD', this.dir(key), k]);
      else if (!has && (value === null ? written : true)) await this.unlist(key);
    }
    return written === 1;
  }

  /** Drops `key` from its directory's set, and lists it again if it exists by then. */
  async unlist(key) {
    const k = this.key(key);
    const set = this.dir(key);
    await this.cmd(set, ['SREM', set, k]);
    if (Number(await this.cmd(k, ['EXISTS', k])) === 1) await this.cmd(set, ['SADD', set, k]);
  }

  async get(key) {
    const k = this.key(key);
    const v = await this.cmd(k, ['GET', k]);
    return v === undefined ? null : v;
  }

  async set(key, value) {
    await this.write(key, String(value), SET, [], [String(value)]);
  }

  async delete(key) {
    await this.write(key, null, DEL, [], []);
  }

  async swap(key, expected, value) {
    return this.write(key, value, SWAP, [], [
      expected === null ? '0' : '1', expected === null ? '' : expected,
      value === null ? '0' : '1', value === null ? '' : value,
    ]);
  }

  leaseKeys(name) {
    const tag = `${this.prefix}{${tagOf(name)}}`;
    return [`${tag}\u0000lease:${name}`, `${tag}\u0000fence:${name}`];
  }

  async lease(name, owner, ttlMs) {
    const [lease, fence] = this.leaseKeys(name);
    const r = await this.cmd(lease, [
      'EVAL', LEASE, '2', lease, fence, owner, String(Math.max(1, Math.ceil(ttlMs))),
    ]);
    return r === null || r === undefined ? null : Number(r);
  }

  /** The key must be in the lease's slot on a Redis Cluster (the fleet's are: both name the
   *  portal's member id); elsewhere Redis refuses the script (CROSSSLOT). */
  async fenced(name, fence, key, value) {
    return this.write(key, value, FENCED, [this.leaseKeys(name)[1]], [
      String(fence), value === null ? '0' : '1', value === null ? '' : value,
    ]);
  }

  async release(name, owner) {
    const [lease] = this.leaseKeys(name);
    await this.cmd(lease, ['EVAL', RELEASE, '1', lease, owner]);
  }

  /** Keys starting with `prefix`: from its directory's set, and its own when it names one. */
  async keys(prefix) {
    const sets = [this.dir(prefix)];
    if (!prefix.endsWith('/')) sets.push(this.dir(prefix + '/'));
    const found = new Set();
    for (const set of sets) {
      for (const k of await this.cmd(set, ['SMEMBERS', set])) {
        if (!k.startsWith(this.prefix)) continue;
        const key = k.slice(k.indexOf('}', this.prefix.length) + 1);
        if (key.startsWith(prefix)) found.add(key);
      }
    }
    return [...found].sort();
  }
}

module.exports = { FileStore, RedisStore };
