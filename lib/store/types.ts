import type { Adapter } from 'oidc-provider';
import { HttpError } from '../http/errors.ts';

/** What oidc-provider's `adapter` option takes: a constructor given the model name. */
export type AdapterFactory = new (model: string) => Adapter;

/**
 * Storage behind one interface: the Redis store in production, the in-memory store for local
 * development. Both pass `test/store.contract.test.ts`. Keys given here are logical (`vault:…`,
 * `consent:…`); each store adds its own prefix. The key layout is written down in
 * `lib/store/README.md`.
 */
export interface Store {
  /** Human-readable kind for logs: `redis` or `memory`. */
  readonly kind: 'redis' | 'memory';
  /** oidc-provider adapter class persisting its models in this store. */
  readonly Adapter: AdapterFactory;

  get(key: string): Promise<string | undefined>;
  /** `ttlSeconds` absent → no expiry. */
  set(key: string, value: string, ttlSeconds?: number): Promise<void>;
  del(key: string): Promise<void>;
  /** Atomic get-and-delete: what makes single-use values (upstream `state`) single-use. */
  take(key: string): Promise<string | undefined>;
  /** Set only when absent; true when this call set it. Locks are built on this. */
  setIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  /** Delete only while the value is still `value` (release a lock we still own). */
  deleteIfEquals(key: string, value: string): Promise<boolean>;

  /**
   * Adds `by` to the counter at `key`, which expires `windowMs` after its first increment (a fixed
   * window: later increments do not extend it). Returns the new count and the milliseconds left
   * until the counter resets. Rate limits are built on this.
   */
  increment(key: string, by: number, windowMs: number): Promise<{ count: number; resetMs: number }>;

  /**
   * Broadcasts `message` to every subscriber of `channel` in every process sharing this store,
   * this process included. At most once: a subscriber whose connection is down misses it, which
   * its Subscription's `generation` makes visible. Channels are prefixed like keys.
   */
  publish(channel: string, message: string): Promise<void>;
  /**
   * Calls `onMessage` for each message published on `channel` from now on. Connects on first use
   * (Redis: one extra connection per store, shared by all channels), never at construction.
   */
  subscribe(channel: string, onMessage: (message: string) => void): Subscription;

  /** Boot check: round trip plus a real write, read and delete. Throws a StoreUnavailableError. */
  check(): Promise<void>;
  close(): Promise<void>;
}

/**
 * What a cache invalidated by messages needs to know to stay correct: whether messages are being
 * received right now, and whether any may have been lost since it last looked.
 */
export interface Subscription {
  /** True while messages are delivered; false before the subscription is confirmed and while the
   * connection is down. Anything derived while false may already be stale. */
  readonly active: boolean;
  /** Changes each time the subscription is (re)established: messages may have been missed in
   * between, so whatever was cached under an earlier generation must be dropped. */
  readonly generation: number;
  unsubscribe(): Promise<void>;
}

/** Seconds a client is asked to wait after the store failed: about one reconnect attempt. */
export const STORE_RETRY_AFTER_SECONDS = 2;

/**
 * The store did not answer, or refused to write (down, frozen, full, read-only). Never a 500 and
 * never a 401 (R2): the request was fine and will be again, so 503 with Retry-After. The message
 * names the store for the operator's log; a client only sees `temporarily_unavailable`.
 */
export class StoreUnavailableError extends HttpError {
  /** What Koa and oidc-provider read as the answer's status. */
  readonly statusCode = 503;

  constructor(message: string, options?: { cause?: unknown }) {
    super({
      status: 503,
      code: 'STORE_UNAVAILABLE',
      message,
      expose: false,
      cause: options?.cause,
      retryAfterSeconds: STORE_RETRY_AFTER_SECONDS,
    });
  }
}
