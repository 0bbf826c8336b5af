
/** Tokens, journals and leases in one directory: one machine, no other software. Several
 *  processes on the machine may share it. */
export declare class FileStore implements FleetStore {
  constructor(dir: string, options?: { staleLockMs?: number });
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  swap(key: string, expected: string | null, value: string | null): Promise<boolean>;
  lease(name: string, owner: string, ttlMs: number, nowMs: number): Promise<number | null>;
  fenced(name: string, fence: number, key: string, value: string | null): Promise<boolean>;
  release(name: string, owner: string): Promise<void>;
  keys(prefix: string): Promise<string[]>;
}

/** Tokens, journals and leases in Redis, for workers on many machines, on one Redis or a Redis
 *  Cluster: a connected client of the `redis` package (`createClient`, or `createCluster`,
 *  known by its `masters`) or of `ioredis` (`Redis` or `Cluster`: `call`). The prefix may not
 *  contain braces (the store puts a hash tag after it). */
export declare class RedisStore implements FleetStore {
  constructor(
    client:
      | { sendCommand(args: string[]): Promise<unknown> }
      | { sendCommand(firstKey: string | undefined, isReadonly: boolean | undefined, args: string[]): Promise<unknown>; masters: unknown }
      | { call(...args: string[]): Promise<unknown> },
    options?: { prefix?: string },
  );
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  swap(key: string, expected: string | null, value: string | null): Promise<boolean>;
  lease(name: string, owner: string, ttlMs: number, nowMs?: number): Promise<number | null>;
  fenced(name: string, fence: number, key: string, value: string | null): Promise<boolean>;
  release(name: string, owner: string): Promise<void>;
  keys(prefix: string): Promise<string[]>;
}
