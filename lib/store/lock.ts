import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Store } from './types.ts';

/**
 * One lock per key across every process sharing the store, for work that must happen once: an
 * upstream refresh that spends a single-use refresh token (lib/vault), a rotation of one of our
 * refresh tokens (lib/auth-server/refresh-grace.ts).
 *
 * - Acquired with a random owner token (`setIfAbsent`, Redis `SET NX EX`).
 * - Released only by its owner (`deleteIfEquals`, a compare-and-delete Lua script in Redis, the
 *   same check in the memory store): a holder that outlived its TTL must not free the lock a
 *   second process has taken since.
 * - Bounded by its TTL: a process killed while holding it blocks the others at most that long.
 *   Callers choose a TTL longer than the work can take, or two processes would run it at once.
 */
export interface HeldLock {
  /** Never throws: if the delete fails, the TTL frees the lock. */
  release(): Promise<void>;
}

export async function tryLock(store: Store, key: string, ttlSeconds: number): Promise<HeldLock | undefined> {
  const owner = randomBytes(16).toString('base64url');
  if (!(await store.setIfAbsent(key, owner, ttlSeconds))) return undefined;
  return {
    async release() {
      await store.deleteIfEquals(key, owner).catch(() => undefined);
    },
  };
}

/** Runs `work` under the lock; `{ acquired: false }` when another owner holds it. */
export async function withLock<T>(
  store: Store,
  key: string,
  ttlSeconds: number,
  work: () => Promise<T>,
): Promise<{ acquired: true; value: T } | { acquired: false }> {
  const lock = await tryLock(store, key, ttlSeconds);
  if (!lock) return { acquired: false };
  try {
    return { acquired: true, value: await work() };
  } finally {
    await lock.release();
  }
}

export async function isLocked(store: Store, key: string): Promise<boolean> {
  return (await store.get(key)) !== undefined;
}

const POLL_FIRST_MS = 20;
const POLL_MAX_MS = 250;

export interface PollOptions {
  timeoutMs: number;
  /** Check once before the first pause (default: pause first, the caller has just looked). */
  checkFirst?: boolean;
}

/**
 * Waits for another lock holder's result: calls `check` with a pause doubling from 20 ms to
 * 250 ms in between, until it returns a value or `timeoutMs` has passed (undefined then). Polling
 * rather than the store's publish/subscribe: a message is delivered at most once, and a missed
 * one would hold every waiter until the timeout, while a record that changes once is cheap to poll.
 */
export async function poll<T>(check: () => Promise<T | undefined>, options: PollOptions): Promise<T | undefined> {
  const deadline = Date.now() + options.timeoutMs;
  let delay = POLL_FIRST_MS;
  const pause = async () => {
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
    delay = Math.min(delay * 2, POLL_MAX_MS);
  };
  if (options.checkFirst !== true) await pause();
  for (;;) {
    const result = await check();
    if (result !== undefined) return result;
    if (Date.now() >= deadline) return undefined;
    await pause();
  }
}
