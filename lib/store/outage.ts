import type { Redis } from 'ioredis';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { log } from '../telemetry/log.ts';
import { StoreUnavailableError, type AdapterFactory, type Store } from './types.ts';

/**
 * Redis refusing or failing a command for a reason that passes (R2: 503, never 500 or 401):
 *
 * - OOM: `maxmemory` reached with `noeviction`. Every write is refused alike: a registration no
 *   more than a consent or a refresh.
 * - READONLY: the node became a replica (a managed Redis failing over).
 * - LOADING, MASTERDOWN, BUSY, TRYAGAIN, CLUSTERDOWN, NOREPLICAS: the server is there, not ready.
 *
 * A script's write refused for one of these reasons comes back as the same reply, prefixed or not
 * by "ERR Error running script".
 */
const TRANSIENT_REPLY = /(?:^|\s)(OOM|READONLY|LOADING|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/;

/** What ioredis rejects a command with when no answer came: connection gone, timed out, given up. */
const NO_ANSWER = new Set([
  'Command timed out',
  'Connection is closed.',
  "Stream isn't writeable and enableOfflineQueue options is false",
]);

const SOCKET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH']);

/** Whether an error of a Redis command means "the store is unavailable right now". */
export function isOutage(error: unknown): boolean {
  if (error instanceof StoreUnavailableError) return true;
  if (!(error instanceof Error)) return false;
  if (error.name === 'ReplyError') return TRANSIENT_REPLY.test(error.message);
  if (error.name === 'MaxRetriesPerRequestError') return true;
  if (NO_ANSWER.has(error.message)) return true;
  return SOCKET_ERRORS.has((error as NodeJS.ErrnoException).code ?? '');
}

export interface OutageGuard {
  /** Where the store is, for the operator (credentials removed). */
  readonly where: string;
  /**
   * True while the connection is known to be lost. Commands then fail at once instead of
   * waiting in a queue for a reconnection that may take seconds: the client is told to retry.
   */
  isDown(): boolean;
  /** Told of every outage error, e.g. to stop sending commands to a server that stopped answering. */
  noticed?(error: unknown): void;
}

/**
 * The store, each operation turned into a StoreUnavailableError when the store is unavailable;
 * any other error (a defect, a bad argument) goes through unchanged.
 */
export function guardStore(store: Store, guard: OutageGuard): Store {
  const run = async <T>(operation: string, work: () => Promise<T>): Promise<T> => {
    if (guard.isDown()) throw new StoreUnavailableError(`Redis at ${guard.where} is unreachable (${operation})`);
    try {
      return await work();
    } catch (error) {
      if (error instanceof StoreUnavailableError || !isOutage(error)) throw error;
      guard.noticed?.(error);
      throw new StoreUnavailableError(`Redis at ${guard.where} failed ${operation}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  };

  const Inner = store.Adapter;
  class GuardedAdapter implements Adapter {
    private readonly inner: Adapter;
    constructor(readonly model: string) {
      this.inner = new Inner(model);
    }
    upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
      return run(`${this.model}.upsert`, () => this.inner.upsert(id, payload, expiresIn) as Promise<void>);
    }
    find(id: string): Promise<AdapterPayload | undefined> {
      return run(`${this.model}.find`, async () => (await this.inner.find(id)) ?? undefined);
    }
    findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return run(`${this.model}.findByUid`, async () => (await this.inner.findByUid(uid)) ?? undefined);
    }
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return run(`${this.model}.findByUserCode`, async () => (await this.inner.findByUserCode(userCode)) ?? undefined);
    }
    consume(id: string): Promise<void> {
      return run(`${this.model}.consume`, () => this.inner.consume(id) as Promise<void>);
    }
    destroy(id: string): Promise<void> {
      return run(`${this.model}.destroy`, () => this.inner.destroy(id) as Promise<void>);
    }
    revokeByGrantId(grantId: string): Promise<void> {
      return run(`${this.model}.revokeByGrantId`, () => this.inner.revokeByGrantId(grantId) as Promise<void>);
    }
  }

  return {
    kind: store.kind,
    Adapter: GuardedAdapter satisfies AdapterFactory,
    get: (key) => run('GET', () => store.get(key)),
    set: (key, value, ttlSeconds) => run('SET', () => store.set(key, value, ttlSeconds)),
    del: (key) => run('DEL', () => store.del(key)),
    take: (key) => run('GETDEL', () => store.take(key)),
    setIfAbsent: (key, value, ttlSeconds) => run('SET NX', () => store.setIfAbsent(key, value, ttlSeconds)),
    deleteIfEquals: (key, value) => run('compare-and-delete', () => store.deleteIfEquals(key, value)),
    increment: (key, by, windowMs) => run('INCRBY', () => store.increment(key, by, windowMs)),
    publish: (channel, message) => run('PUBLISH', () => store.publish(channel, message)),
    subscribe: (channel, onMessage) => store.subscribe(channel, onMessage),
    check: () => store.check(),
    close: () => store.close(),
  };
}

/** How often a stalled connection is asked whether it answers again. */
const PROBE_EVERY_MS = 250;

/**
 * A frozen server keeps its socket open and answers nothing. After one command timed out the
 * server is taken as stalled: further commands fail at once (each would otherwise wait the full
 * timeout, and requests pile up) while a PING now and then asks whether it answers again.
 */
export function stallWatch(client: Redis, where: string): { readonly stalled: boolean; begin(): void } {
  let stalled = false;
  const probe = () => {
    if (client.status === 'end') return;
    client.ping().then(
      () => {
        stalled = false;
        log.info('redis is answering again', { redis: where });
      },
      () => setTimeout(probe, PROBE_EVERY_MS).unref(),
    );
  };
  return {
    get stalled() {
      return stalled;
    },
    begin() {
      if (stalled) return;
      stalled = true;
      log.warn('redis is not answering', { redis: where });
      probe();
    },
  };
}
