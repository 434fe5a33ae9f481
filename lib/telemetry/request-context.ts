import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context, Span } from '@opentelemetry/api';
import { processWide } from './process-wide.ts';

/**
 * The request being served, reachable from any code running on its behalf: the logger reads its
 * id, and other modules attach what they need to it through a WeakMap keyed by the context;
 * tracing's two fields live on it instead, read by the context manager at every `context.active()`.
 *
 * One AsyncLocalStorage for all of them, on purpose: each instance's `run` costs every request a
 * context frame of its own, and on Node 20 every enabled instance added a step to the creation of
 * every promise, timer and socket (about 5 % of a bare forwarder's CPU each). On Node 24
 * (AsyncContextFrame) the per-promise cost is gone and a `run` costs ~0.15 µs (measured: 6
 * awaits per request, 0.42 → 0.61 → 0.76 µs for 0, 1, 2 instances).
 *
 * With tracing on, the request's span rides here too: OpenTelemetry's context manager
 * (context-manager.ts) falls back to it where no context was set explicitly, so a request costs
 * no frame of OpenTelemetry's own.
 */
export class RequestContext {
  /** `performance.now()` when the request arrived, for its log line. */
  readonly startedAt = performance.now();
  /** The request's SERVER span, when tracing is on. */
  span: Span | undefined;
  /** The OpenTelemetry context naming `span` active, made when first asked for (context-manager.ts). */
  otelContext: Context | undefined;

  constructor(readonly requestId: string) {}
}

/** Shared with the tracing preload's copy of this file, whatever URL it was loaded by. */
const storage = processWide('request-context', () => new AsyncLocalStorage<RequestContext>());

export function runInRequest<A extends unknown[], T>(context: RequestContext, fn: (...args: A) => T, ...args: A): T {
  return storage.run(context, fn, ...args);
}

export function currentRequest(): RequestContext | undefined {
  return storage.getStore();
}
