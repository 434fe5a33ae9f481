import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import type { RateLimitConfig } from '../config/types.ts';
import { isOutage } from '../store/outage.ts';
import type { Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { RateLimitPolicy } from './policy.ts';

/**
 * The client's address. Heroku's router appends the address it accepted the connection from to
 * X-Forwarded-For, after whatever the client sent: only the LAST entry is the router's word, every
 * earlier one may be forged. Without the header (no router: development) the socket's address.
 */
export function clientAddress(req: IncomingMessage): string {
  const forwarded = req.headers['x-forwarded-for'];
  if (typeof forwarded === 'string') {
    const last = forwarded.slice(forwarded.lastIndexOf(',') + 1).trim();
    if (last !== '') return last;
  }
  return req.socket.remoteAddress ?? 'unknown';
}

/** The routes limited per address, each with a budget of its own: a login uses several of each. */
const GROUPS: ReadonlyArray<readonly [name: string, pattern: RegExp]> = [
  ['registration', /^\/reg(?:\/|$)/],
  ['authorization', /^\/auth(?:\/|$)/],
  ['token', /^\/token(?:\/|$)/],
  ['interaction', /^\/interaction(?:\/|$)/],
];

export interface AddressLimitDeps {
  store: Store;
  config: RateLimitConfig;
  log: Logger;
}

/**
 * MAX_REQUESTS per MAX_REQUESTS_WINDOW per client address on registration, authorization, token
 * and interaction routes, counted in the shared store so every instance sees the same count (one
 * round trip per request: these routes talk to the store anyway).
 *
 * The store unavailable: the request goes through uncounted (fail open), with one warning per
 * outage. Every route behind this limit needs the same store and answers 503 on its own while it
 * is down or full, so nothing can be created meanwhile; refusing here instead would turn a limiter
 * hiccup (its counter write refused by a full Redis whose reads still work) into refused logins.
 */
export function limitByAddress({ store, config, log }: AddressLimitDeps): RequestHandler {
  const policies = new Map(GROUPS.map(([name]) => [name, new RateLimitPolicy(name, config)]));
  let failing = false;

  return (req, res, next) => {
    if (req.method === 'OPTIONS') return next();
    const group = GROUPS.find(([, pattern]) => pattern.test(req.path))?.[0];
    if (group === undefined) return next();
    const policy = policies.get(group)!;
    const address = clientAddress(req);
    store.increment(`ratelimit:${group}:${address}`, 1, policy.windowMs).then(
      (window) => {
        if (failing) log.info('rate limit counting again');
        failing = false;
        policy.setHeaders(res, window);
        if (policy.exceeded(window)) return next(policy.refusal(window, 'from this address'));
        next();
      },
      (error: unknown) => {
        if (!isOutage(error)) return next(error);
        if (!failing) log.warn('rate limit not counted: the store is unavailable', { error: (error as Error).message });
        failing = true;
        next();
      },
    );
  };
}
