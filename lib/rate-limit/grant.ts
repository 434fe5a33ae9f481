import type { RateLimitConfig } from '../config/types.ts';
import type { Answers } from '../proxy/answers.ts';
import type { Step } from '../proxy/pipeline.ts';
import type { Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { RateLimitPolicy, type Window } from './policy.ts';

/** How often each process adds what it counted to the shared count. */
const DEFAULT_FLUSH_MS = 1_000;

interface GrantCount {
  /** Index of the window these counts belong to. */
  window: number;
  /** The shared count as the store last reported it (our flushed requests included). */
  shared: number;
  /** Counted here and being added to the store right now. */
  sending: number;
  /** Counted here, not sent yet. */
  local: number;
}

/**
 * `/mcp` limited per grant, not per address: hosted MCP clients share egress addresses, while a
 * grant is one user's authorization of one client. MAX_REQUESTS per MAX_REQUESTS_WINDOW.
 *
 * A warm `/mcp` request must not wait for the store, so the decision is made in process:
 * - windows are fixed and aligned to the epoch (window = floor(now / length)), so every instance
 *   agrees on where one ends without talking to the others;
 * - each process counts its own requests per grant and, once a second, adds them to a shared
 *   counter in the store (one INCRBY per active grant, off the request path), learning the total;
 * - a request is refused when the last known total plus what was counted here since exceeds the
 *   limit.
 * What a process has not heard yet is at most one flush interval of the other instances' requests:
 * with N instances a grant can exceed its limit by what N − 1 of them accept in a second, and like
 * every fixed window, by up to the limit again across a window boundary. Store unavailable: each
 * process keeps its own count (the limit then holds per instance) and sends it when it can.
 */
export class GrantRateLimiter {
  readonly policy: RateLimitPolicy;
  private readonly counts = new Map<string, GrantCount>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> | undefined;
  private failing = false;

  constructor(
    private readonly store: Store,
    config: RateLimitConfig,
    private readonly log: Logger,
    flushMs = DEFAULT_FLUSH_MS,
  ) {
    this.policy = new RateLimitPolicy('mcp', config);
    this.timer = setInterval(() => void this.flush(), flushMs);
    // A pending flush must not keep a stopping process alive.
    this.timer.unref();
  }

  /** Counts one request of `grantId` and says whether it is within the limit. No I/O. */
  hit(grantId: string, now = Date.now()): Window & { allowed: boolean } {
    const length = this.policy.windowMs;
    const window = Math.floor(now / length);
    let count = this.counts.get(grantId);
    if (!count || count.window !== window) {
      count = { window, shared: 0, sending: 0, local: 0 };
      this.counts.set(grantId, count);
    }
    const resetMs = (window + 1) * length - now;
    const total = count.shared + count.sending + count.local + 1;
    if (total > this.policy.max) return { allowed: false, count: total, resetMs };
    count.local += 1;
    return { allowed: true, count: total, resetMs };
  }

  /** Sends what was counted here to the store and learns the totals. Runs on its own timer. */
  flush(now = Date.now()): Promise<void> {
    this.flushing ??= this.send(now).finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async send(now: number): Promise<void> {
    const length = this.policy.windowMs;
    const current = Math.floor(now / length);
    const batch: Array<[string, GrantCount, number]> = [];
    for (const [grantId, count] of this.counts) {
      if (count.window !== current) {
        // A past window's unsent requests no longer matter: its shared counter has expired too.
        this.counts.delete(grantId);
      } else if (count.local > 0) {
        batch.push([grantId, count, count.local]);
        count.sending += count.local;
        count.local = 0;
      }
    }
    await Promise.all(
      batch.map(async ([grantId, count, delta]) => {
        try {
          // Lives until its window ends, plus a second for clocks a little apart.
          const ttlMs = (current + 1) * length - now + 1_000;
          const { count: total } = await this.store.increment(`ratelimit:mcp:${grantId}:${current}`, delta, ttlMs);
          count.shared = total;
          count.sending -= delta;
          if (this.failing) this.log.info('grant rate limit shared again');
          this.failing = false;
        } catch (error) {
          count.sending -= delta;
          count.local += delta;
          if (!this.failing) {
            this.log.warn('grant rate limit not shared: counting per instance', { error: (error as Error).message });
          }
          this.failing = true;
        }
      }),
    );
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/**
 * The `/mcp` step: after the caller is known (its grant), before anything is forwarded. No I/O,
 * so a warm request stays synchronous. RateLimit headers go on the refusal only: a forwarded
 * answer carries the MCP server's headers, and the hot path sets nothing it does not need.
 */
export function limitPerGrant(limiter: GrantRateLimiter, answer: Answers): Step {
  return ({ caller, res }) => {
    const window = limiter.hit(caller!.grantId);
    if (window.allowed) return true;
    limiter.policy.setHeaders(res, window);
    const refusal = limiter.policy.refusal(window, 'for this login');
    answer.error(res, refusal.status, refusal.code, refusal.message, {
      'Retry-After': String(refusal.retryAfterSeconds),
    });
    return false;
  };
}
