import { STATUS_CODES } from 'node:http';
import type { Level } from './log.ts';

/**
 * How a report is written: the logger's `write`, handed in (see sdk.ts for why it is not imported
 * here). It may return a promise, which the reports below pass on, so that shutdown waits for the
 * last line.
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
 * One line at the first failure, then at most one per `intervalMs` while failures go on (a
 * collector that is down fails every export, several a second under load: a line each would bury
 * the request log), and one when an export succeeds again, with the total dropped meanwhile.
 */
export class ExportFailures {
  /** Since the first failure of the current run of them; undefined while exports succeed. */
  private run: { dropped: number; pendingSpans: number; pendingBatches: number; lastError: unknown } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly write: WriteLine,
    private readonly intervalMs = 60_000,
  ) {}

  /** The outcome of one export of `spans` spans: `error` undefined when the collector took them. */
  async exported(spans: number, error: unknown): Promise<void> {
    if (error === undefined) return this.recovered();
    if (!this.run) {
      this.run = { dropped: spans, pendingSpans: 0, pendingBatches: 0, lastError: error };
      this.timer = setInterval(() => void this.summarize(), this.intervalMs).unref();
      await this.write('warn', 'trace export failed: spans dropped', { spans, ...describe(error) });
      return;
    }
    this.run.dropped += spans;
    this.run.pendingSpans += spans;
    this.run.pendingBatches++;
    this.run.lastError = error;
  }

  /** Writes what was dropped since the last line, if anything: at shutdown, nothing goes unsaid. */
  async summarize(): Promise<void> {
    const run = this.run;
    if (!run || run.pendingBatches === 0) return;
    const fields = { spans: run.pendingSpans, batches: run.pendingBatches, ...describe(run.lastError) };
    run.pendingSpans = 0;
    run.pendingBatches = 0;
    await this.write('warn', 'trace export still failing: spans dropped', fields);
  }

  private async recovered(): Promise<void> {
    const run = this.run;
    if (!run) return;
    await this.summarize();
    clearInterval(this.timer);
    this.timer = undefined;
    this.run = undefined;
    await this.write('info', 'trace export recovered', { dropped_spans: run.dropped });
  }
}

/**
 * The error as fields. For an HTTP answer (the OTLP exporter puts its status in `code`): the
 * status and its standard text, never the collector's own reason phrase or response body (kept
 * in `data`), which are the collector's words and may echo what it was sent, request headers (the
 * API key in OTEL_EXPORTER_OTLP_HEADERS) among them. Otherwise the error's message, bounded: a
 * socket error (`connect ECONNREFUSED 10.0.0.5:4318`), a timeout, the exporter's own limit.
 */
function describe(error: unknown): { error: string; status?: number } {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return { error: STATUS_CODES[code] ?? 'HTTP error', status: code };
  const message = error instanceof Error ? error.message || error.name : 'unknown error';
  return { error: message.length > MAX_ERROR_LENGTH ? `${message.slice(0, MAX_ERROR_LENGTH)}…` : message };
}
