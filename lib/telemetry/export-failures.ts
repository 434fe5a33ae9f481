import { STATUS_CODES } from 'node:http';
import type { Level } from './log.ts';

/**
 * How a report is written: the logger's `write`, handed in (see sdk.ts for why it is not imported
 * here). It may return a promise, which the reports below pass on, so that shutdown waits for the
 * last line; it must not throw nor reject.
 */
export type WriteLine = (level: Level, msg: string, fields: Record<string, unknown>) => unknown;

/** The longest error text a line carries: enough for a socket error or a timeout. */
const MAX_ERROR_LENGTH = 200;

/**
 * What an operator sees when the collector does not take our spans (a wrong endpoint, an expired
 * API key, a collector that is down, more exports in flight than the exporter allows): spans are
 * then dropped, and the SDK only tells its diagnostic logger, which is silent unless
 * OTEL_LOG_LEVEL is set. Without a line of our own, traces stop arriving and nothing says why.
 *
 * At most one line per `intervalMs`, whatever the exports do: a collector that is down fails
 * every export, several a second under load, and one that is overloaded fails some and takes
 * others; a line per change would bury the request log. The first failure after a quiet interval
 * is told at once; what follows is summed up at the next tick: `still failing` with the spans
 * dropped since the last line, or `recovered` once an interval has passed with exports taken and
 * none dropped.
 */
export class ExportFailures {
  /** Dropped since the last line. */
  private spans = 0;
  private batches = 0;
  private lastError: unknown;
  /** Whether an export was taken since the last line. */
  private delivered = false;
  /** Dropped since the failures began, for the `recovered` line; undefined while all is well. */
  private droppedInRun: number | undefined;
  /** Whether the last line said exports fail (so the next one says they still do). */
  private toldFailing = false;
  private lastLineAt = -Infinity;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly write: WriteLine,
    private readonly intervalMs = 60_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The outcome of one export of `spans` spans: `error` undefined when the collector took them. */
  async exported(spans: number, error: unknown): Promise<void> {
    if (error === undefined) {
      this.delivered = true;
      return;
    }
    this.droppedInRun = (this.droppedInRun ?? 0) + spans;
    // `write` neither throws nor rejects; the catch keeps a broken one from becoming an unhandled
    // rejection on a timer, where nothing would await it.
    this.timer ??= setInterval(() => void this.tick().catch(() => {}), this.intervalMs).unref();
    if (this.now() - this.lastLineAt >= this.intervalMs && this.batches === 0) {
      this.toldFailing = true;
      return this.line('warn', 'trace export failed: spans dropped', { spans, ...describe(error) });
    }
    this.spans += spans;
    this.batches++;
    this.lastError = error;
  }

  /** Writes what was dropped since the last line, if anything: at shutdown, nothing goes unsaid. */
  async summarize(): Promise<void> {
    if (this.batches === 0) return;
    const fields = { spans: this.spans, batches: this.batches, ...describe(this.lastError) };
    this.spans = 0;
    this.batches = 0;
    this.lastError = undefined;
    const msg = this.toldFailing ? 'trace export still failing: spans dropped' : 'trace export failed: spans dropped';
    this.toldFailing = true;
    return this.line('warn', msg, fields);
  }

  /** Once an interval while failures are being told: sums them up, or says they have stopped. */
  private async tick(): Promise<void> {
    if (this.batches > 0) return this.summarize();
    if (!this.delivered) return;
    const dropped = this.droppedInRun;
    clearInterval(this.timer);
    this.timer = undefined;
    this.droppedInRun = undefined;
    this.toldFailing = false;
    return this.line('info', 'trace export recovered', { dropped_spans: dropped });
  }

  private async line(level: Level, msg: string, fields: Record<string, unknown>): Promise<void> {
    this.lastLineAt = this.now();
    this.delivered = false;
    await this.write(level, msg, fields);
  }
}

/**
 * The error as fields. For an HTTP answer (the OTLP exporter puts its status in `code`): the
 * status and its standard text, never the collector's own reason phrase or response body (kept
 * in `data`), which are the collector's words and may echo what it was sent, request headers (the
 * API key in OTEL_EXPORTER_OTLP_HEADERS) among them. Otherwise the error's message, bounded: a
 * socket error (`connect ECONNREFUSED 10.0.0.5:4318`), a timeout, the exporter's own limit, a
 * status it retried until it gave up (429, 502–504: `Export failed with retryable status`).
 */
function describe(error: unknown): { error: string; status?: number } {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return { error: STATUS_CODES[code] ?? 'HTTP error', status: code };
  const message = error instanceof Error ? error.message || error.name : 'unknown error';
  return { error: message.length > MAX_ERROR_LENGTH ? `${message.slice(0, MAX_ERROR_LENGTH)}…` : message };
}
