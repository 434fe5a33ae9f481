import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import type { Adapter, AdapterPayload } from 'oidc-provider';

import type { RedisConfig } from '../config/types.ts';
import { log, redactUrl } from '../telemetry/log.ts';
import { hashId } from './hash.ts';
import {
  CONSUME,
  defineScript,
  DELETE_IF_EQUALS,
  DESTROY,
  EXTEND_EXPIRY,
  INCREMENT,
  REVOKE,
  UPSERT,
} from './redis-scripts.ts';
import { guardStore, stallWatch } from './outage.ts';
import { StoreUnavailableError, type AdapterFactory, type Store, type Subscription } from './types.ts';

// ---------------------------------------------------------------------------------------------
// Key layout of oidc-provider's models, shared with memory.ts so both stores agree byte for byte.
// Written down in lib/store/README.md.
// ---------------------------------------------------------------------------------------------

export { hashId };

export const recordKey = (model: string, id: string): string => `oidc:${model}:${hashId(id)}`;
export const uidIndexKey = (uid: string): string => `oidc:uid:${hashId(uid)}`;
export const grantSetKey = (grantId: string): string => `oidc:grant:${hashId(grantId)}`;

/** Models oidc-provider revokes together through `revokeByGrantId`. */
export const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

/**
 * A registered client that no grant ever used expires after a day: registration is anonymous
 * (RFC 7591), and clients that are never used must not pile up forever. Each record that keeps a
 * grant alive (the Grant itself, its refresh tokens) extends its client's expiry to at least its
 * own, so a client lives as long as its longest-lived grant. Clients stored before this rule have
 * no expiry and keep none.
 */
export const UNUSED_CLIENT_TTL = 24 * 60 * 60;
export const KEEPS_CLIENT_ALIVE = new Set(['Grant', 'RefreshToken']);

/** The expiry a record is stored with: oidc-provider gives none for a client. */
export const recordTtl = (model: string, expiresIn: number | undefined): number | undefined =>
  expiresIn ?? (model === 'Client' ? UNUSED_CLIENT_TTL : undefined);

/** The client whose expiry an upsert of this record extends, if any. */
export const clientKeptAlive = (model: string, payload: AdapterPayload, expiresIn: number | undefined) =>
  KEEPS_CLIENT_ALIVE.has(model) && typeof payload.clientId === 'string' && expiresIn !== undefined
    ? recordKey('Client', payload.clientId)
    : undefined;

/**
 * The device flow (RFC 8628) is not enabled, so oidc-provider never writes a user code nor looks
 * one up. Refused loudly rather than stored in clear or answered "not found", should someone
 * enable it: its user-code index would need a design of its own (user codes are short enough to
 * brute-force, and the lookup must yield the device_code, a bearer secret).
 */
export const DEVICE_FLOW_UNSUPPORTED = 'the device flow (user codes) is not supported by this store';

/**
 * What a record holds. `payload` never contains the id: oidc-provider puts the id in `jti`, which
 * would undo the hashing of the key. `jti` says the id was removed and `find(id)` restores it
 * (the caller holds the id anyway). `consumed` is a separate field so `consume` is a single atomic
 * field write rather than a read-modify-write of the JSON.
 */
export interface StoredRecord {
  payload: string;
  jti: boolean;
  consumed: number | undefined;
}

export function encodePayload(id: string, payload: AdapterPayload): { payload: string; jti: boolean } {
  const copy: AdapterPayload = { ...payload };
  const stripJti = copy.jti === id;
  if (stripJti) delete copy.jti;
  if (copy.userCode !== undefined) throw new Error(DEVICE_FLOW_UNSUPPORTED);
  return { payload: JSON.stringify(copy), jti: stripJti };
}

export function decodeRecord(record: StoredRecord, restore: { jti?: string }): AdapterPayload {
  const payload = JSON.parse(record.payload) as AdapterPayload;
  if (record.jti && restore.jti !== undefined) payload.jti = restore.jti;
  if (record.consumed !== undefined) payload.consumed = record.consumed;
  return payload;
}

/** oidc-provider passes whole seconds; anything else would be silently wrong in one store only. */
export function assertTtl(ttlSeconds: number, what: string): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) {
    throw new RangeError(`${what} must be a positive whole number of seconds, got ${ttlSeconds}`);
  }
}

export const epochSeconds = (): number => Math.floor(Date.now() / 1000);

/** The last path segment of a record key: the hashed id every index value starts with. */
export const idHashOf = (key: string): string => key.slice(key.lastIndexOf(':') + 1);

// ---------------------------------------------------------------------------------------------

/** Bound for the whole boot check, so a blackholed host fails start-up instead of hanging it. */
const CHECK_DEADLINE_MS = 5_000;

function describe(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    // Node tries every address of a name (IPv6 and IPv4 for localhost) and reports them together
    // with an empty message.
    return error.errors.map(describe).join('; ');
  }
  if (error instanceof Error) return error.message || (error as NodeJS.ErrnoException).code || error.name;
  return String(error);
}

/** Bounds on waiting for Redis (R2: a 503 within seconds, never a hang). */
const CONNECT_TIMEOUT_MS = 3_000;
const COMMAND_TIMEOUT_MS = 2_000;

export interface RedisStoreOptions {
  /** Tests shorten these; production keeps the defaults above. */
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
}

export function createRedisStore(config: RedisConfig, options: RedisStoreOptions = {}): Store {
  const where = redactUrl(config.url);
  const prefix = config.keyPrefix;
  const k = (key: string): string => prefix + key;

  const client = new Redis(config.url, {
    // No I/O at construction: createApp(deps) stays pure and start-up decides when to connect.
    lazyConnect: true,
    connectTimeout: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
    // A frozen server (SIGSTOP, a host swapping) keeps the socket open and answers nothing: every
    // command, queued ones included, fails after this long instead of hanging the request.
    commandTimeout: options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS,
    // A command queued while the connection is being re-established fails after two failed
    // attempts (under a second of refused connections) instead of waiting for the server.
    maxRetriesPerRequest: 2,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    // Heroku Key-Value Store serves rediss:// with a self-signed certificate.
    ...(config.url.startsWith('rediss:') ? { tls: { rejectUnauthorized: config.tlsRejectUnauthorized } } : {}),
  });

  let lastConnectionError: unknown;
  let healthy = true;
  client.on('error', (error: unknown) => {
    lastConnectionError = error;
    // One line per outage, not one per reconnect attempt.
    if (healthy) log.warn('redis connection error', { redis: where, error: describe(error) });
    healthy = false;
  });
  client.on('ready', () => {
    if (!healthy) log.info('redis connection restored', { redis: where });
    healthy = true;
    lastConnectionError = undefined;
  });

  const stall = stallWatch(client, where);

  const upsertScript = defineScript(client, 'oidcUpsert', UPSERT);
  const destroyScript = defineScript(client, 'oidcDestroy', DESTROY);
  const revokeScript = defineScript(client, 'oidcRevoke', REVOKE);
  const consumeScript = defineScript(client, 'oidcConsume', CONSUME);
  const deleteIfEqualsScript = defineScript(client, 'deleteIfEquals', DELETE_IF_EQUALS);
  const incrementScript = defineScript(client, 'incrementWindow', INCREMENT);
  const extendScript = defineScript(client, 'extendExpiry', EXTEND_EXPIRY);

  // -------------------------------------------------------------------------------------------
  // Pub/sub. A connection in subscriber mode can run no other command, so subscriptions share one
  // extra connection, opened on the first subscribe. Publishing uses the main connection: Redis
  // runs a connection's commands in order, so a message published before a write of ours reaches
  // subscribers before anyone can read the result of that write from us.
  // -------------------------------------------------------------------------------------------
  interface Channel {
    handlers: Set<(message: string) => void>;
    active: boolean;
    generation: number;
  }
  const channels = new Map<string, Channel>();
  let subscriber: Redis | undefined;

  function confirm(names: string[]): void {
    if (!subscriber || names.length === 0) return;
    subscriber.subscribe(...names).then(
      () => {
        for (const name of names) {
          const channel = channels.get(name);
          if (!channel) continue;
          channel.generation += 1;
          channel.active = true;
        }
      },
      // The connection dropped before the confirmation: 'ready' subscribes again.
      () => undefined,
    );
  }

  function openSubscriber(): Redis {
    if (subscriber) return subscriber;
    const connection = client.duplicate({
      // Resubscribing ourselves on 'ready' is what tells us when delivery resumed (generation).
      autoResubscribe: false,
      lazyConnect: true,
      // Named so an operator (and a test) can tell it apart in CLIENT LIST.
      connectionName: `${prefix}subscriber`,
      maxRetriesPerRequest: null,
    });
    connection.on('message', (name: string, message: string) => {
      for (const onMessage of [...(channels.get(name)?.handlers ?? [])]) {
        try {
          onMessage(message);
        } catch (error) {
          log.error('store subscriber failed', { channel: name.slice(prefix.length), error });
        }
      }
    });
    connection.on('ready', () => confirm([...channels.keys()]));
    connection.on('close', () => {
      for (const channel of channels.values()) channel.active = false;
    });
    // Outages are logged once by the main connection; without a listener 'error' would throw.
    connection.on('error', () => undefined);
    subscriber = connection;
    return connection;
  }

  async function readRecord(key: string): Promise<StoredRecord | undefined> {
    const [payload, jti, consumed] = await client.hmget(k(key), 'payload', 'jti', 'consumed');
    if (payload === null || payload === undefined) return undefined;
    return { payload, jti: jti === '1', consumed: consumed ? Number(consumed) : undefined };
  }

  class RedisAdapter implements Adapter {
    constructor(readonly model: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
      if (expiresIn !== undefined) assertTtl(expiresIn, `${this.model} expiresIn`);
      const encoded = encodePayload(id, payload);
      const record = recordKey(this.model, id);
      const h = idHashOf(record);
      const grant = GRANTABLE.has(this.model) && payload.grantId ? grantSetKey(payload.grantId) : undefined;
      const indexKeys: string[] = [];
      const indexValues: string[] = [];
      if (this.model === 'Session' && payload.uid) {
        indexKeys.push(k(uidIndexKey(payload.uid)));
        indexValues.push(h);
      }
      await upsertScript(
        [k(record), ...(grant ? [k(grant)] : []), ...indexKeys],
        [
          encoded.payload,
          encoded.jti ? '1' : '0',
          recordTtl(this.model, expiresIn) ?? 0,
          grant ? '1' : '0',
          ...indexValues,
        ],
      );
      const client = clientKeptAlive(this.model, payload, expiresIn);
      if (client) await extendScript([k(client)], [expiresIn!]);
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      const record = await readRecord(recordKey(this.model, id));
      return record && decodeRecord(record, { jti: id });
    }

    /**
     * The Session comes back without its id (`jti`): the uid travels in clear inside tokens and
     * interactions, so nothing derived from it may unlock the session cookie value. oidc-provider
     * only reads a session found by uid (interaction and session-binding checks).
     */
    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      const h = await client.get(k(uidIndexKey(uid)));
      if (!h) return undefined;
      const record = await readRecord(`oidc:${this.model}:${h}`);
      return record && decodeRecord(record, {});
    }

    async findByUserCode(): Promise<AdapterPayload | undefined> {
      throw new Error(DEVICE_FLOW_UNSUPPORTED);
    }

    async consume(id: string): Promise<void> {
      await consumeScript([k(recordKey(this.model, id))], [epochSeconds()]);
    }

    async destroy(id: string): Promise<void> {
      await destroyScript([k(recordKey(this.model, id))], []);
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await revokeScript([k(grantSetKey(grantId))], []);
    }
  }

  const store: Store = {
    kind: 'redis',
    Adapter: RedisAdapter satisfies AdapterFactory,

    async get(key) {
      return (await client.get(k(key))) ?? undefined;
    },

    async set(key, value, ttlSeconds) {
      if (ttlSeconds === undefined) {
        await client.set(k(key), value);
      } else {
        assertTtl(ttlSeconds, 'ttlSeconds');
        await client.set(k(key), value, 'EX', ttlSeconds);
      }
    },

    async del(key) {
      await client.del(k(key));
    },

    async take(key) {
      return (await client.getdel(k(key))) ?? undefined;
    },

    async setIfAbsent(key, value, ttlSeconds) {
      assertTtl(ttlSeconds, 'ttlSeconds');
      return (await client.set(k(key), value, 'EX', ttlSeconds, 'NX')) === 'OK';
    },

    async deleteIfEquals(key, value) {
      return (await deleteIfEqualsScript([k(key)], [value])) === 1;
    },

    async increment(key, by, windowMs) {
      const [count, ttl] = (await incrementScript([k(key)], [by, Math.max(1, Math.ceil(windowMs))])) as [
        number,
        number,
      ];
      return { count, resetMs: ttl };
    },

    async publish(channel, message) {
      await client.publish(k(channel), message);
    },

    subscribe(channel, onMessage): Subscription {
      const name = k(channel);
      let state = channels.get(name);
      const first = !state;
      if (!state) channels.set(name, (state = { handlers: new Set(), active: false, generation: 0 }));
      const handler = (message: string) => onMessage(message);
      state.handlers.add(handler);
      const connection = openSubscriber();
      if (connection.status === 'wait') connection.connect().catch(() => undefined);
      else if (first && connection.status === 'ready') confirm([name]);
      // Otherwise the connection is on its way up and 'ready' subscribes every channel.
      const channelState = state;
      let subscribed = true;
      return {
        get active() {
          return subscribed && channelState.active;
        },
        get generation() {
          return channelState.generation;
        },
        async unsubscribe() {
          subscribed = false;
          channelState.handlers.delete(handler);
          if (channelState.handlers.size > 0 || channels.get(name) !== channelState) return;
          channels.delete(name);
          channelState.active = false;
          if (subscriber?.status === 'ready') await subscriber.unsubscribe(name);
        },
      };
    },

    async check() {
      let stage = 'connect' as 'connect' | 'roundtrip';
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${CHECK_DEADLINE_MS / 1000} s`)),
          CHECK_DEADLINE_MS,
        );
      });
      const roundtrip = async (): Promise<void> => {
        if (client.status === 'wait' || client.status === 'end') await client.connect();
        await client.ping();
        stage = 'roundtrip';
        const key = k(`check:${randomBytes(12).toString('base64url')}`);
        const value = randomBytes(12).toString('base64url');
        await client.set(key, value, 'EX', 30);
        const read = await client.get(key);
        // GETDEL rather than DEL: `take` depends on it (Redis ≥ 6.2), so an older server fails
        // here at boot rather than on the first login.
        await client.getdel(key);
        if (read !== value) throw new Error('the value read back differs from the value written');
        // Our scripts carry flags (redis-scripts.ts) so that a full Redis refuses their writes.
        await client.eval('#!lua flags=no-writes\nreturn 1', 0).catch((error: Error) => {
          throw new Error(`Redis 7.0 or later is required (script flags): ${error.message}`);
        });
      };
      try {
        await Promise.race([roundtrip(), deadline]);
      } catch (error) {
        // ioredis rejects connect() with a generic "Connection is closed."; the socket error that
        // explains it arrived on the 'error' event.
        const cause = stage === 'connect' ? (lastConnectionError ?? error) : error;
        // A reply error (WRONGPASS, NOAUTH) means the server answered: say so, not "unreachable".
        const answered = cause instanceof Error && cause.name === 'ReplyError';
        const problem =
          stage === 'roundtrip'
            ? 'failed the write/read/delete check'
            : answered
              ? 'refused the connection'
              : 'is unreachable';
        const message = `Redis at ${where} ${problem}: ${describe(cause)}`;
        throw new StoreUnavailableError(message, { cause });
      } finally {
        clearTimeout(timer);
      }
    },

    async close() {
      for (const channel of channels.values()) channel.active = false;
      channels.clear();
      if (subscriber?.status === 'ready') await subscriber.quit();
      else subscriber?.disconnect();
      subscriber = undefined;
      if (client.status === 'ready') {
        await client.quit();
      } else {
        // quit() on a client that never connected would first try to connect.
        client.disconnect();
      }
    },
  };

  return guardStore(store, {
    where,
    isDown: () => stall.stalled || !healthy || client.status === 'reconnecting',
    noticed: (error) => {
      if (error instanceof Error && error.message === 'Command timed out') stall.begin();
    },
  });
}
