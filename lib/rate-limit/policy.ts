import type { ServerResponse } from 'node:http';
import type { RateLimitConfig } from '../config/types.ts';
import { HttpError } from '../http/errors.ts';

/**
 * A fixed-window limit and how it is announced: the IETF `RateLimit` / `RateLimit-Policy` fields
 * (draft-ietf-httpapi-ratelimit-headers-08, as express-rate-limit's `draft-8` emits them) on every
 * limited answer, and `Retry-After` on a refusal (RFC 6585 §4).
 */
export interface Window {
  /** Requests counted in the current window, this one included. */
  readonly count: number;
  /** Milliseconds until the window resets. */
  readonly resetMs: number;
}

export class RateLimitPolicy {
  readonly max: number;
  readonly windowMs: number;
  private readonly policyHeader: string;

  constructor(
    readonly name: string,
    config: RateLimitConfig,
  ) {
    this.max = config.maxRequests;
    this.windowMs = config.windowMs;
    this.policyHeader = `"${name}";q=${this.max};w=${Math.ceil(this.windowMs / 1000)}`;
  }

  exceeded(window: Window): boolean {
    return window.count > this.max;
  }

  setHeaders(res: ServerResponse, window: Window): void {
    const remaining = Math.max(0, this.max - window.count);
    res.setHeader('RateLimit-Policy', this.policyHeader);
    res.setHeader('RateLimit', `"${this.name}";r=${remaining};t=${secondsUntil(window)}`);
  }

  refusal(window: Window, who: string): TooManyRequests {
    return new TooManyRequests(who, secondsUntil(window));
  }
}

const secondsUntil = (window: Window): number => Math.max(1, Math.ceil(window.resetMs / 1000));

/** RFC 6585 §4. The message says whose budget ran out and when it comes back, nothing else. */
export class TooManyRequests extends HttpError {
  constructor(who: string, retryAfterSeconds: number) {
    super({
      status: 429,
      code: 'too_many_requests',
      message: `Too many requests ${who}. Try again in ${retryAfterSeconds} seconds.`,
      heading: 'Too many requests',
      retryAfterSeconds,
    });
  }
}
