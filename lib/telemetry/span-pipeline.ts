import { AsyncLocalStorage } from 'node:async_hooks';
import { context, ROOT_CONTEXT, TraceFlags, type Context } from '@opentelemetry/api';
import { ExportResultCode, globalErrorHandler, suppressTracing } from '@opentelemetry/core';
import type { IOtlpExportDelegate } from '@opentelemetry/otlp-exporter-base';
import type { tracing } from '@opentelemetry/sdk-node';
import {
  WireWriter,
  writeExportRequest,
  writeSpan,
  type EncodableResource,
  type EncodableScope,
  type EncodableSpan,
  type EncodedScopeSpans,
} from './otlp-wire.ts';
import { BATCH_VARIABLES } from './tracing-settings.ts';
import { parseInteger } from '../config/parse.ts';

/** What the pipeline takes, from the SDK or the lean tracer: a span it can write, and its origin. */
export interface PipelineSpan extends EncodableSpan {
  readonly resource: EncodableResource;
  readonly instrumentationScope: EncodableScope;
}

/** An export: an ExportTraceServiceRequest already encoded, and how many spans it holds. */
export interface EncodedBatch {
  readonly bytes: Uint8Array;
  readonly spans: number;
}

const SUPPRESSED = suppressTracing(ROOT_CONTEXT);

/** What the pipeline needs of the OTLP exporter's delivery (its export delegate). */
export type BatchExporter = Pick<IOtlpExportDelegate<EncodedBatch>, 'export' | 'forceFlush' | 'shutdown'>;

export type SpanPipelineSettings = { -readonly [K in keyof typeof BATCH_VARIABLES]: number };

/**
 * Told the outcome of every export (export-failures.ts turns failures into log lines). A promise
 * either returns is waited for, so that shutdown waits for the last report.
 */
export interface ExportOutcomes {
  exported(spans: number, error: unknown): unknown;
  /** At shutdown, after the last export: anything not yet reported is reported now. */
  summarize(): unknown;
}

/**
 * The batch variables (`batchSize`: OTEL_BSP_MAX_EXPORT_BATCH_SIZE, `delayMs`:
 * OTEL_BSP_SCHEDULE_DELAY), read as the configuration reads them; their default where a value is
 * not one the configuration would accept (it then refuses to start, reporting it).
 */
export function spanPipelineSettings(env: NodeJS.ProcessEnv): SpanPipelineSettings {
  const read = ({ name, min, fallback }: (typeof BATCH_VARIABLES)[keyof typeof BATCH_VARIABLES]) => {
    const value = parseInteger(env[name]?.trim() ?? '');
    return value !== undefined && value >= min ? value : fallback;
  };
  return { batchSize: read(BATCH_VARIABLES.batchSize), delayMs: read(BATCH_VARIABLES.delayMs) };
}

interface Pending {
  resource: EncodableResource;
  scope: EncodableScope;
  writer: WireWriter;
}

/**
 * The span processor: each sampled span is written as OTLP protobuf the moment it ends, and the
 * bytes, not the span, wait for the batch to fill or the delay to pass; the batch then goes to the
 * OTLP/HTTP exporter's own transport (endpoint, headers, timeout, retries and compression from the
 * standard OTEL_EXPORTER_OTLP_* variables).
 *
 * Why not the SDK's BatchSpanProcessor with OTLPTraceExporter, which send the same bytes: that
 * pair keeps every span object (with its attributes, context, times, status and events) alive
 * until its batch is exported, 512 spans, about 70 ms at the load `npm run bench` applies. Long
 * enough for most of them to survive a young-generation collection and be copied, and for many
 * to be promoted to the old generation, whose collection then costs every request. Measured with
 * `npm run bench:tracing`, keeping spans that way cost more than making them, and tracing every
 * request cost the proxy a fifth of its throughput (issue 10). Written at their end, spans die as
 * young as the request's other garbage; what waits is a few hundred bytes each, in one buffer per
 * instrumentation scope that is reused from batch to batch.
 *
 * What differs from the batch processor: nothing waits in a queue of span objects, so
 * OTEL_BSP_MAX_QUEUE_SIZE has nothing to bound; a batch is sent as soon as it is full, and the
 * exporter refuses more than its limit of exports in flight (a collector that is down loses spans,
 * as with the batch processor, and never grows this process's memory past that limit).
 */
export class EncodingSpanProcessor implements tracing.SpanProcessor {
  private readonly pending = new Map<EncodableScope, Pending>();
  private count = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly scratch = new WireWriter(64 * 1024);
  /** Deliveries not yet settled, each with the number of spans in its batch. */
  private readonly inFlight = new Map<Promise<void>, number>();
  private stopped = false;
  /**
   * The async context the processor was made in (start-up, outside any request). Batches are sent
   * and timed from it, not from the request whose span happened to fill one: the exporter's HTTP
   * request, its keep-alive socket and the delay's timer would otherwise carry that request's
   * context (its id in log lines, its objects kept alive) for as long as they live.
   */
  private readonly detached = AsyncLocalStorage.snapshot();

  constructor(
    private readonly exporter: BatchExporter,
    private readonly settings: SpanPipelineSettings,
    private readonly outcomes?: ExportOutcomes,
  ) {}

  onStart(_span: tracing.Span, _parentContext: Context): void {}

  onEnd(span: tracing.ReadableSpan): void {
    this.write(span);
  }

  /** A span that has ended: the SDK's (through `onEnd`), or one of the lean tracer's. */
  write(span: PipelineSpan): void {
    if (this.stopped || (span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    const scope = span.instrumentationScope;
    let pending = this.pending.get(scope);
    if (!pending) {
      pending = { resource: span.resource, scope, writer: new WireWriter() };
      this.pending.set(scope, pending);
    }
    const { writer } = pending;
    const start = writer.pos;
    try {
      // ScopeSpans.spans is field 2.
      writeSpan(writer, 2, span);
    } catch (error) {
      // A span the encoder cannot write is dropped, never the request that made it.
      writer.pos = start;
      globalErrorHandler(error as Error);
      return;
    }
    if (++this.count >= this.settings.batchSize) this.send();
    else this.timer ??= this.detached(() => setTimeout(() => this.send(), this.settings.delayMs).unref());
  }

  forceFlush(): Promise<void> {
    this.send();
    return this.settle();
  }

  async shutdown(): Promise<void> {
    this.send();
    this.stopped = true;
    await this.settle();
    await this.outcomes?.summarize();
    await this.exporter.shutdown();
  }

  /**
   * The shutdown deadline has passed with batches still in flight (a collector that does not
   * answer, an export retrying): the process exits without learning how they end, so they are
   * reported now as not delivered, with whatever was not yet reported.
   */
  abandon(): void {
    let undelivered = 0;
    for (const spans of this.inFlight.values()) undelivered += spans;
    if (undelivered > 0) {
      void this.outcomes?.exported(undelivered, new Error('not delivered before the shutdown deadline'));
    }
    void this.outcomes?.summarize();
  }

  /** Everything sent so far delivered, or given up on by the exporter. */
  private async settle(): Promise<void> {
    await Promise.all(this.inFlight.keys());
    await this.exporter.forceFlush();
  }

  /** Frames and hands the pending spans to the exporter. */
  private send(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.count === 0) return;
    const spans = this.count;
    this.count = 0;
    const groups: EncodedScopeSpans[] = [];
    for (const { resource, scope, writer } of this.pending.values()) {
      if (writer.pos > 0) groups.push({ resource, scope, spans: writer.take() });
    }
    // Tracing suppressed, as the SDK's batch processor does: an instrumented HTTP client (should one
    // be added) must not trace the export's own request, whose span would be exported in turn.
    const delivery = this.detached(() => context.with(SUPPRESSED, () => this.deliver(groups, spans)));
    this.inFlight.set(delivery, spans);
    void delivery.finally(() => this.inFlight.delete(delivery));
  }

  /**
   * Never rejects: what goes wrong goes to the SDK's error handler, as the batch processor's does
   * (its diagnostic logger, silent unless OTEL_LOG_LEVEL is set), and to `outcomes`.
   */
  private async deliver(groups: EncodedScopeSpans[], spans: number): Promise<void> {
    let failure: unknown;
    try {
      // Framed on a later turn, not inside the `end()` of the request whose span filled the batch.
      await new Promise(setImmediate);
      // Resource detectors may still be settling (the first batch, at start-up): their attributes
      // belong in the export, so it waits for them.
      for (const { resource } of groups) {
        const settling = resource as { asyncAttributesPending?: boolean; waitForAsyncAttributes?: () => Promise<void> };
        if (settling.asyncAttributesPending) await settling.waitForAsyncAttributes?.();
      }
      const bytes = writeExportRequest(this.scratch, groups);
      await new Promise<void>((resolve) =>
        this.exporter.export({ bytes, spans }, (result) => {
          if (result.code !== ExportResultCode.SUCCESS) failure = result.error ?? new Error('export failed');
          resolve();
        }),
      );
    } catch (error) {
      failure = error;
    }
    if (failure !== undefined) globalErrorHandler(failure as Error);
    try {
      await this.outcomes?.exported(spans, failure);
    } catch (error) {
      globalErrorHandler(error as Error);
    }
  }
}
