import { randomFillSync } from 'node:crypto';
import {
  INVALID_SPAN_CONTEXT,
  trace,
  TraceFlags,
  type Attributes,
  type AttributeValue,
  type Context,
  type Exception,
  type HrTime,
  type Link,
  type Span,
  type SpanContext,
  type SpanKind,
  type SpanStatus,
  type TimeInput,
} from '@opentelemetry/api';
import { hrTime, isTracingSuppressed, isTimeInputHrTime, timeInputToHrTime } from '@opentelemetry/core';
import { tracing } from '@opentelemetry/sdk-node';
import type { EncodableResource, EncodableScope, EncodableSpan } from './otlp-wire.ts';
import { errorType } from './scrub.ts';
import type { PipelineSpan } from './span-pipeline.ts';

/** Starts one of the proxy's own spans under `parent` (ROOT_CONTEXT for a new trace). */
export type StartSpan = (name: string, kind: SpanKind, attributes: Attributes, parent: Context) => Span;

/**
 * The tracer of the two spans every traced request makes: its SERVER span and the CLIENT span of
 * its call to the MCP server (spans.ts). Every other span (ioredis's, the upstream token calls')
 * comes from the SDK's tracer, and all of them leave through the same span pipeline. Only these two
 * spans are made here: addEvent, addLink and recordException work but the proxy calls none of them.
 *
 * Why not the SDK's tracer for these two: on `/mcp` they are most of what tracing costs, and the
 * SDK's general path is made for any caller. Per span it copies the attributes twice and checks
 * them three times, counts the span in metrics the proxy never reads, makes ids as hex from
 * Math.random and the times as arrays at the start, and builds an object of some thirty fields:
 * 6.6 KB allocated per traced request against 4.0 KB with this tracer (1.0 KB untraced). Measured
 * in `npm run bench` side by side (`BENCH_B_TRACED=1`, nine runs), the build before this tracer and
 * the request's light context (context-manager.ts) used 1.11× (1.02–1.17) the CPU per request.
 *
 * What it keeps of the SDK, so that the operator's settings mean the same for every span: the
 * sampler the SDK was given (OTEL_TRACES_SAMPLER and its argument), the resource and the
 * instrumentation scope, tracing suppressed by a context, and W3C ids. What it leaves out, because
 * the proxy's own spans never need it: span limits (their attributes are a handful, each bounded
 * by spans.ts) and span processors other than the pipeline.
 */
export class LeanTracer {
  constructor(
    private readonly sampler: tracing.Sampler,
    /** The SDK's own objects, so that the pipeline groups these spans with the SDK's. */
    readonly resource: EncodableResource,
    readonly scope: EncodableScope,
    private readonly pipeline: { write(span: PipelineSpan): void },
  ) {}

  readonly startSpan: StartSpan = (name, kind, attributes, parent) => {
    // As the SDK's tracer: a suppressed context (an export's own request) gets no span at all.
    if (isTracingSuppressed(parent)) return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
    const parentSpanContext = trace.getSpanContext(parent);
    const validParent =
      parentSpanContext && trace.isSpanContextValid(parentSpanContext) ? parentSpanContext : undefined;
    const traceId = validParent ? validParent.traceId : randomId(16);
    const result = this.sampler.shouldSample(parent, traceId, name, kind, attributes, []);
    const spanContext: SpanContext = {
      traceId,
      spanId: randomId(8),
      traceFlags: result.decision === RECORD_AND_SAMPLED ? TraceFlags.SAMPLED : TraceFlags.NONE,
      traceState: result.traceState ?? validParent?.traceState,
    };
    // Not recorded: a span that only carries its context, so that `traceparent` still goes on.
    if (result.decision === NOT_RECORD) return trace.wrapSpanContext(spanContext);
    if (result.attributes) Object.assign(attributes, result.attributes);
    return new LeanSpan(this, name, kind, spanContext, validParent, attributes);
  };

  /** Called once, by the span's `end()`. */
  ended(span: LeanSpan): void {
    this.pipeline.write(span);
  }
}

const { NOT_RECORD, RECORD_AND_SAMPLED } = tracing.SamplingDecision;

const NO_EVENTS: EncodableSpan['events'] = Object.freeze([]);
const NO_LINKS: EncodableSpan['links'] = Object.freeze([]);

/**
 * A span of the proxy's own, recording until it ends. Its start is the wall clock's (`Date.now()`)
 * and its duration the monotonic clock's, as the SDK's spans, so that it lines up with the SDK's
 * spans and the MCP server's however long the process has run (the two clocks drift apart over
 * days); both are turned into the HrTime the wire format wants only at the end. Attributes are
 * taken as given: the callers are spans.ts's, which give strings, numbers and booleans. What is set
 * after the end is ignored, as the SDK ignores it.
 */
export class LeanSpan implements Span, PipelineSpan {
  readonly resource: EncodableResource;
  readonly instrumentationScope: EncodableScope;
  status: SpanStatus = { code: 0 };
  events: EncodableSpan['events'] = NO_EVENTS;
  links: EncodableSpan['links'] = NO_LINKS;
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;
  startTime: HrTime = [0, 0];
  endTime: HrTime = [0, 0];
  /** `performance.now()` at the start, and what to add to it to read the wall clock then. */
  private readonly startedAt = performance.now();
  private readonly toWallClock = Date.now() - (performance.timeOrigin + this.startedAt);
  private ended = false;

  constructor(
    private readonly tracer: LeanTracer,
    public name: string,
    readonly kind: SpanKind,
    private readonly context: SpanContext,
    readonly parentSpanContext: SpanContext | undefined,
    readonly attributes: Attributes,
  ) {
    this.resource = tracer.resource;
    this.instrumentationScope = tracer.scope;
  }

  spanContext(): SpanContext {
    return this.context;
  }

  setAttribute(key: string, value: AttributeValue): this {
    if (!this.ended) this.attributes[key] = value;
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const key in attributes) this.setAttribute(key, attributes[key]!);
    return this;
  }

  addEvent(name: string, attributesOrTime?: Attributes | TimeInput, time?: TimeInput): this {
    if (this.ended) return this;
    const timeGiven = isTimeInput(attributesOrTime);
    const attributes = timeGiven ? undefined : attributesOrTime;
    const at = timeGiven ? attributesOrTime : time;
    this.events = [
      ...this.events,
      { name, time: at === undefined ? hrTime() : timeInputToHrTime(at), attributes: attributes ?? {} },
    ];
    return this;
  }

  addLink(link: Link): this {
    if (!this.ended) this.links = [...this.links, link];
    return this;
  }

  addLinks(links: Link[]): this {
    if (!this.ended) this.links = [...this.links, ...links];
    return this;
  }

  setStatus(status: SpanStatus): this {
    if (!this.ended) this.status = status;
    return this;
  }

  updateName(name: string): this {
    if (!this.ended) this.name = name;
    return this;
  }

  end(endTime?: TimeInput): void {
    if (this.ended) return;
    this.ended = true;
    this.startTime = hrTime(this.startedAt + this.toWallClock);
    this.endTime = endTime === undefined ? hrTime(performance.now() + this.toWallClock) : timeInputToHrTime(endTime);
    // An end given before the start: a span of no duration, as the SDK makes it.
    if (
      this.endTime[0] < this.startTime[0] ||
      (this.endTime[0] === this.startTime[0] && this.endTime[1] < this.startTime[1])
    ) {
      this.endTime = this.startTime;
    }
    this.tracer.ended(this);
  }

  isRecording(): boolean {
    return !this.ended;
  }

  /**
   * The exception's type only (its code or name, bounded, as spans.ts's `withSpan` records one).
   * The SDK would add its message and stack too, and an error's message may quote what was sent (a
   * token endpoint's answer, say), which never goes into a trace.
   */
  recordException(exception: Exception, time?: TimeInput): void {
    if (exception === undefined || exception === null) return;
    this.addEvent('exception', { 'exception.type': errorType(exception) }, time);
  }
}

function isTimeInput(value: Attributes | TimeInput | undefined): value is TimeInput {
  return typeof value === 'number' || value instanceof Date || isTimeInputHrTime(value);
}

/**
 * Random W3C ids from the operating system's generator, drawn from a pool so that a request costs
 * a slice of one buffer, not a call per id. An id of all zeros is invalid (W3C Trace Context):
 * such a draw, one in 2^64 at worst, is drawn again.
 */
const pool = Buffer.allocUnsafeSlow(4096);
let poolAt = pool.length;
const ZERO_IDS: Record<number, string> = { 8: '0'.repeat(16), 16: '0'.repeat(32) };

function randomId(bytes: 8 | 16): string {
  for (;;) {
    if (poolAt + bytes > pool.length) {
      randomFillSync(pool);
      poolAt = 0;
    }
    const id = pool.toString('hex', poolAt, poolAt + bytes);
    poolAt += bytes;
    if (id !== ZERO_IDS[bytes]) return id;
  }
}
