// The rules the core's reference store is held to (src/core/fleet/store.rs), for the stores the
// package ships (and any a user writes): swap, leases with fences, fenced writes, listing.
import assert from 'node:assert/strict';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Swap, leases (one holder, a fence per new holder), fenced writes, set/delete and keys(). */
export async function storeContract(store) {
  assert.equal(await store.swap('a/k', null, 'v1'), true);
  assert.equal(await store.swap('a/k', null, 'v2'), false);
  assert.equal(await store.swap('a/k', 'x', 'v2'), false);
  assert.equal(await store.swap('a/k', 'v1', 'v2'), true);
  assert.equal(await store.get('a/k'), 'v2');
  const f1 = await store.lease('p', 'w1', 400, Date.now());
  assert.ok(Number.isInteger(f1) && f1 >= 1);
  assert.equal(await store.lease('p', 'w2', 400, Date.now()), null);
  assert.equal(await store.lease('p', 'w1', 400, Date.now()), f1, 'a renewal keeps the fence');
  assert.equal(await store.fenced('p', f1, 'a/j', 'mine'), true);
  assert.equal(await store.fenced('p', f1 + 1, 'a/j', 'forged'), false);
  await sleep(500);
  // Run out, nobody else took it: the holder's write still lands.
  assert.equal(await store.fenced('p', f1, 'a/j', 'late but alone'), true);
  const f2 = await store.lease('p', 'w2', 400, Date.now());
  assert.ok(f2 > f1);
  assert.equal(await store.fenced('p', f1, 'a/j', 'stale'), false);
  assert.equal(await store.fenced('p', f1, 'a/j', null), false);
  assert.equal(await store.get('a/j'), 'late but alone');
  assert.equal(await store.lease('p', 'w1', 400, Date.now()), null);
  await store.release('p', 'w1');
  assert.equal(await store.lease('p', 'w1', 400, Date.now()), null, 'released only by its holder');
  await store.release('p', 'w2');
  const f3 = await store.lease('p', 'w1', 400, Date.now());
  assert.ok(f3 > f2, 'a new holder after a release gets a new fence');
  assert.equal(await store.fenced('p', f3, 'a/j', null), true);
  assert.equal(await store.get('a/j'), null);
  assert.deepEqual(await store.keys('a/'), ['a/k']);
  await store.set('a/s', 'x');
  assert.deepEqual(await store.keys('a/'), ['a/k', 'a/s']);
  await store.delete('a/s');
  assert.equal(await store.swap('a/k', 'v2', null), true);
  assert.equal(await store.get('a/k'), null);
  assert.deepEqual(await store.keys('a/'), []);
}

/** A random member id (32 lower-case hex digits). */
export function memberId() {
  return Array.from({ length: 32 }, () => '0123456789abcdef'[Math.floor(Math.random() * 16)]).join('');
}

/** The fleet's own key shapes (`PREFIXportal/MEMBER`, `PREFIXjournal/MEMBER[/...]`,
 *  `PREFIXwake/MEMBER`, `PREFIXlease/MEMBER`): records created, swapped and deleted, journals
 *  written under their portal's lease, and every listing the fleet makes. */
export async function portalContract(store, prefix, count = 12) {
  const members = Array.from({ length: count }, memberId).sort();
  for (const m of members) {
    assert.equal(await store.swap(`${prefix}portal/${m}`, null, `record ${m}`), true);
    const fence = await store.lease(`${prefix}lease/${m}`, 'w1', 5000, Date.now());
    assert.ok(fence >= 1);
    assert.equal(await store.fenced(`${prefix}lease/${m}`, fence, `${prefix}journal/${m}`, 'index'), true);
    assert.equal(await store.fenced(`${prefix}lease/${m}`, fence, `${prefix}journal/${m}/p1`, 'entry'), true);
    assert.equal(await store.fenced(`${prefix}lease/${m}`, fence + 1, `${prefix}journal/${m}/p2`, 'forged'), false);
    await store.set(`${prefix}wake/${m}`, '1');
  }
  assert.deepEqual(await store.keys(`${prefix}portal/`), members.map((m) => `${prefix}portal/${m}`));
  assert.deepEqual(await store.keys(`${prefix}wake/`), members.map((m) => `${prefix}wake/${m}`));
  const [first, second] = members;
  assert.deepEqual(await store.keys(`${prefix}journal/${first}`), [`${prefix}journal/${first}`, `${prefix}journal/${first}/p1`]);
  // A refused swap and a refused fenced write leave nothing listed.
  const absent = memberId();
  assert.equal(await store.swap(`${prefix}portal/${absent}`, 'not there', 'x'), false);
  assert.equal(await store.fenced(`${prefix}lease/${absent}`, 7, `${prefix}journal/${absent}`, 'x'), false);
  assert.equal(await store.get(`${prefix}portal/${absent}`), null);
  assert.deepEqual(await store.keys(`${prefix}portal/`), members.map((m) => `${prefix}portal/${m}`));
  assert.deepEqual(await store.keys(`${prefix}journal/${absent}`), []);
  // Deleted, by a swap, a fenced write and a plain delete: no longer listed.
  assert.equal(await store.swap(`${prefix}portal/${first}`, `record ${first}`, null), true);
  const fence = await store.lease(`${prefix}lease/${first}`, 'w1', 5000, Date.now());
  assert.equal(await store.fenced(`${prefix}lease/${first}`, fence, `${prefix}journal/${first}`, null), true);
  await store.delete(`${prefix}journal/${first}/p1`);
  await store.delete(`${prefix}wake/${first}`);
  assert.deepEqual(await store.keys(`${prefix}portal/`), members.slice(1).map((m) => `${prefix}portal/${m}`));
  assert.deepEqual(await store.keys(`${prefix}wake/`), members.slice(1).map((m) => `${prefix}wake/${m}`));
  assert.deepEqual(await store.keys(`${prefix}journal/${first}`), []);
  assert.deepEqual(await store.keys(`${prefix}journal/${second}`), [`${prefix}journal/${second}`, `${prefix}journal/${second}/p1`]);
  // Written and deleted at once, many times over: whatever exists at the end is listed.
  const key = `${prefix}portal/${second}`;
  await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? store.delete(key) : store.set(key, `v${i}`))));
  for (let round = 0; round < 5; round++) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store.delete(key) : store.set(key, `v${i}`))));
    const listed = (await store.keys(`${prefix}portal/`)).includes(key);
    if ((await store.get(key)) !== null) assert.ok(listed, 'a key that exists is listed');
  }
  return members;
}
