import type { Tracer } from '@opentelemetry/api';
import type { StartSpan } from './lean-tracer.ts';
import { processWide } from './process-wide.ts';

/**
 * What the tracing preload hands to the rest of the process: the tracer, and how to flush. Kept
 * process-wide (process-wide.ts), not in a module variable: the preload and the application may
 * load this file under different URLs (`--import ./dist/…/tracing.js` with `lib/main.ts`, a test
 * importing the span API directly), and must still agree on whether tracing is on.
 */
export interface TracingHandle {
  /** The SDK's tracer, for every span but the two each request makes. */
  readonly tracer: Tracer;
  /** Those two: the request's and its MCP call's (lean-tracer.ts). */
  readonly startSpan: StartSpan;
  /** Exports what is buffered and stops the SDK; resolves once done or `deadlineMs` has passed. */
  shutdown(deadlineMs: number): Promise<void>;
}

const slot = processWide('tracing', (): { handle?: TracingHandle } => ({}));

export function installTracing(handle: TracingHandle): void {
  slot.handle = handle;
}

/** Undefined when the preload did not start tracing (disabled, no endpoint, or no preload). */
export function tracingHandle(): TracingHandle | undefined {
  return slot.handle;
}

/**
 * Flushes buffered spans before the process exits, within the shutdown deadline: a collector that
 * does not answer must not hold the dyno past its SIGKILL. Nothing to do when tracing is off.
 */
export async function shutdownTracing(deadlineMs: number): Promise<void> {
  await tracingHandle()?.shutdown(deadlineMs);
}
