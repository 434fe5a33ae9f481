import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Adapter, AdapterPayload } from 'oidc-provider';

import {
  DEVICE_FLOW_UNSUPPORTED,
  GRANTABLE,
  assertTtl,
  clientKeptAlive,
  decodeRecord,
  encodePayload,
  epochSeconds,
  grantSetKey,
  idHashOf,
  recordKey,
  recordTtl,
  uidIndexKey,
  type StoredRecord,
} from './redis.ts';
import type { AdapterFactory, Store, Subscription } from './types.ts';
import { log } from '../telemetry/log.ts';

/**
 * Development only: one process, so two dynos would not share it. Lost on restart unless given a
 * `file` (lib/store/dev-file.ts), where it is kept between runs of `npm start`. It mirrors the Redis store key for key — same hashed ids,
 * same index and grant-set semantics — so the contract suite proves behaviour, not luck. Every
 * operation is synchronous inside one call, which is what makes it as atomic as the Lua scripts.
 */
interface MemoryRecord extends StoredRecord {
  indexes: string[];
  grant: string | undefined;
}

interface Entry {
  value: string | MemoryRecord | Set<string>;
  /** Epoch milliseconds; absent → no expiry. */
  expiresAt: number | undefined;
}

/** Expired entries are dropped when read; a sweep every so many writes bounds what is never read. */
const SWEEP_EVERY_WRITES = 1_000;

export interface MemoryStoreOptions {
  /**
   * Keep the entries in this file between runs: loaded now, rewritten shortly after each change
   * and at close. Development only — it holds sessions, grants and sealed upstream tokens.
   */
  file?: string;
}

export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  const file = options.file ? new SnapshotFile(options.file) : undefined;
  // Every change goes through set/delete (or consume, below), so one hook sees them all.
  const entries = new ChangeTrackingMap<string, Entry>(file?.load() ?? [], () => file?.scheduleSave(entries));
  const channels = new Map<string, Set<(message: string) => void>>();
  let writes = 0;

  function live(key: string): Entry | undefined {
    const entry = entries.get(key);
    if (entry && entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  }

  function put(key: string, value: Entry['value'], ttlSeconds: number | undefined): void {
    entries.set(key, {
      value,
      expiresAt: ttlSeconds === undefined ? undefined : Date.now() + ttlSeconds * 1000,
    });
    if (++writes % SWEEP_EVERY_WRITES === 0) {
      const now = Date.now();
      for (const [k, entry] of entries) {
        if (entry.expiresAt !== undefined && entry.expiresAt <= now) entries.delete(k);
      }
    }
  }

  function getString(key: string): string | undefined {
    const value = live(key)?.value;
    if (value !== undefined && typeof value !== 'string') {
      // What Redis answers too; silently returning undefined would hide a key-layout collision.
      throw new TypeError(`WRONGTYPE ${key} does not hold a string`);
    }
    return value;
  }

  function getRecord(key: string): MemoryRecord | undefined {
    const value = live(key)?.value;
    return value !== undefined && typeof value === 'object' && !(value instanceof Set) ? value : undefined;
  }

  function getSet(key: string): Set<string> | undefined {
    const value = live(key)?.value;
    return value instanceof Set ? value : undefined;
  }

  /** Same as UNLINK in redis.ts. */
  function unlink(key: string): void {
    const record = getRecord(key);
    if (!record) return;
    const h = idHashOf(key);
    for (const index of record.indexes) {
      const value = live(index)?.value;
      if (typeof value === 'string' && value.startsWith(h)) entries.delete(index);
    }
    if (record.grant) {
      const members = getSet(record.grant);
      members?.delete(key);
      if (members?.size === 0) entries.delete(record.grant);
    }
  }

  function readRecord(key: string): StoredRecord | undefined {
    const record = getRecord(key);
    // A copy, so a caller mutating the payload it got cannot change what is stored (as in Redis).
    return record && { payload: record.payload, jti: record.jti, consumed: record.consumed };
  }

  class MemoryAdapter implements Adapter {
    constructor(readonly model: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
      if (expiresIn !== undefined) assertTtl(expiresIn, `${this.model} expiresIn`);
      const encoded = encodePayload(id, payload);
      const key = recordKey(this.model, id);
      const h = idHashOf(key);
      const grant = GRANTABLE.has(this.model) && payload.grantId ? grantSetKey(payload.grantId) : undefined;
      const indexes = new Map<string, string>();
      if (this.model === 'Session' && payload.uid) indexes.set(uidIndexKey(payload.uid), h);

      unlink(key);
      put(
        key,
        {
          payload: encoded.payload,
          jti: encoded.jti,
          consumed: undefined,
          indexes: [...indexes.keys()],
          grant,
        },
        recordTtl(this.model, expiresIn),
      );
      for (const [index, value] of indexes) put(index, value, expiresIn);

      if (grant) {
        const existing = live(grant);
        const members = existing?.value instanceof Set ? existing.value : new Set<string>();
        members.add(key);
        let expiresAt: number | undefined;
        if (expiresIn === undefined || (existing && existing.expiresAt === undefined)) {
          expiresAt = undefined;
        } else {
          expiresAt = Math.max(existing?.expiresAt ?? 0, Date.now() + expiresIn * 1000);
        }
        if (members.size > 64) {
          for (const member of members) if (!live(member)) members.delete(member);
        }
        entries.set(grant, { value: members, expiresAt });
      }

      const client = clientKeptAlive(this.model, payload, expiresIn);
      const clientEntry = client === undefined ? undefined : live(client);
      if (clientEntry?.expiresAt !== undefined) {
        clientEntry.expiresAt = Math.max(clientEntry.expiresAt, Date.now() + expiresIn! * 1000);
      }
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      const record = readRecord(recordKey(this.model, id));
      return record && decodeRecord(record, { jti: id });
    }

    /** Without `jti`, as in redis.ts (the uid is no secret, the session id is). */
    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      const h = getString(uidIndexKey(uid));
      if (!h) return undefined;
      const record = readRecord(`oidc:${this.model}:${h}`);
      return record && decodeRecord(record, {});
    }

    async findByUserCode(): Promise<AdapterPayload | undefined> {
      throw new Error(DEVICE_FLOW_UNSUPPORTED);
    }

    async consume(id: string): Promise<void> {
      const record = getRecord(recordKey(this.model, id));
      if (record) record.consumed = epochSeconds();
      file?.scheduleSave(entries);
    }

    async destroy(id: string): Promise<void> {
      const key = recordKey(this.model, id);
      unlink(key);
      entries.delete(key);
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      const key = grantSetKey(grantId);
      for (const member of getSet(key) ?? []) {
        unlink(member);
        entries.delete(member);
      }
      entries.delete(key);
    }
  }

  return {
    kind: 'memory',
    Adapter: MemoryAdapter satisfies AdapterFactory,

    async get(key) {
      return getString(key);
    },

    async set(key, value, ttlSeconds) {
      if (ttlSeconds !== undefined) assertTtl(ttlSeconds, 'ttlSeconds');
      put(key, value, ttlSeconds);
    },

    async del(key) {
      entries.delete(key);
    },

    async take(key) {
      const value = getString(key);
      entries.delete(key);
      return value;
    },

    async setIfAbsent(key, value, ttlSeconds) {
      assertTtl(ttlSeconds, 'ttlSeconds');
      if (live(key)) return false;
      put(key, value, ttlSeconds);
      return true;
    },

    async deleteIfEquals(key, value) {
      if (getString(key) !== value) return false;
      entries.delete(key);
      return true;
    },

    async increment(key, by, windowMs) {
      const now = Date.now();
      const entry = live(key);
      const count = Number(entry?.value ?? 0) + by;
      const expiresAt = entry?.expiresAt ?? now + windowMs;
      entries.set(key, { value: String(count), expiresAt });
      return { count, resetMs: expiresAt - now };
    },

    async publish(channel, message) {
      // Delivered before publish() resolves: one process, so nothing can be missed in between.
      for (const onMessage of [...(channels.get(channel) ?? [])]) {
        try {
          onMessage(message);
        } catch (error) {
          log.error('store subscriber failed', { channel, error });
        }
      }
    },

    subscribe(channel, onMessage): Subscription {
      let handlers = channels.get(channel);
      if (!handlers) channels.set(channel, (handlers = new Set()));
      // A wrapper per call, so subscribing one function twice gives two independent subscriptions.
      const handler = (message: string) => onMessage(message);
      handlers.add(handler);
      let subscribed = true;
      return {
        get active() {
          return subscribed;
        },
        generation: 0,
        async unsubscribe() {
          subscribed = false;
          handlers.delete(handler);
          if (handlers.size === 0 && channels.get(channel) === handlers) channels.delete(channel);
        },
      };
    },

    async check() {},

    async close() {
      file?.saveNow(entries);
      entries.clear();
      channels.clear();
    },
  };
}

class ChangeTrackingMap<K, V> extends Map<K, V> {
  #onChange: (() => void) | undefined;
  constructor(initial: Iterable<readonly [K, V]>, onChange: () => void) {
    super();
    for (const [key, value] of initial) super.set(key, value);
    this.#onChange = onChange;
  }
  override set(key: K, value: V): this {
    super.set(key, value);
    this.#onChange?.();
    return this;
  }
  override delete(key: K): boolean {
    const deleted = super.delete(key);
    if (deleted) this.#onChange?.();
    return deleted;
  }
}

type SavedValue = { string: string } | { record: MemoryRecord } | { set: string[] };
interface Snapshot {
  version: 1;
  entries: Array<[key: string, value: SavedValue, expiresAt: number | null]>;
}

/** How soon after a change the file is rewritten: a login makes a burst of writes. */
const SAVE_DELAY_MS = 100;

/**
 * The store's file. Written whole to a temporary file and renamed over the old one, so a crash
 * mid-write leaves the previous version rather than half a file; mode 0600 from the moment it
 * exists, as it holds sessions and sealed tokens. Expired entries are neither saved nor loaded.
 */
class SnapshotFile {
  #timer: NodeJS.Timeout | undefined;
  constructor(readonly path: string) {}

  load(): Array<[string, Entry]> {
    let raw: string;
    try {
      raw = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    try {
      chmodSync(this.path, 0o600);
      const snapshot = JSON.parse(raw) as Snapshot;
      if (snapshot.version !== 1 || !Array.isArray(snapshot.entries)) throw new Error('unknown format');
      const now = Date.now();
      return snapshot.entries
        .filter(([, , expiresAt]) => expiresAt === null || expiresAt > now)
        .map(([key, saved, expiresAt]) => [key, { value: restore(saved), expiresAt: expiresAt ?? undefined }]);
    } catch (error) {
      // Development data only: starting empty costs a new login, refusing to start costs more.
      log.warn('development store file unreadable; starting empty', { file: this.path, error });
      return [];
    }
  }

  scheduleSave(entries: Map<string, Entry>): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => this.saveNow(entries), SAVE_DELAY_MS);
    this.#timer.unref();
  }

  saveNow(entries: Map<string, Entry>): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = Date.now();
    const snapshot: Snapshot = { version: 1, entries: [] };
    for (const [key, entry] of entries) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) continue;
      snapshot.entries.push([key, save(entry.value), entry.expiresAt ?? null]);
    }
    const temporary = `${this.path}.${process.pid}.tmp`;
    try {
      writeFileSync(temporary, JSON.stringify(snapshot), { mode: 0o600 });
      renameSync(temporary, this.path);
    } catch (error) {
      log.error('development store file not written', { file: this.path, error });
    }
  }
}

function save(value: Entry['value']): SavedValue {
  if (typeof value === 'string') return { string: value };
  if (value instanceof Set) return { set: [...value] };
  return { record: value };
}

function restore(saved: SavedValue): Entry['value'] {
  if ('string' in saved) return saved.string;
  if ('set' in saved) return new Set(saved.set);
  return saved.record;
}
