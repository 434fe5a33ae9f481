import {
  context,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Context,
  type Span,
} from '@opentelemetry/api';
import { ExportResultCode, suppressTracing, TraceState } from '@opentelemetry/core';
import { resources, tracing } from '@opentelemetry/sdk-node';
import { expect } from 'chai';
import { LeanTracer, type StartSpan } from '../lib/telemetry/lean-tracer.ts';
import { EncodingSpanProcessor, type EncodedBatch } from '../lib/telemetry/span-pipeline.ts';
import { decodeExport, type ReceivedSpan } from './helpers/otlp-receiver.ts';

/**
 * The lean tracer (lib/telemetry/lean-tracer.ts): the proxy's two spans per request, made without
 * the SDK's tracer but sampled by the SDK's sampler and written by the same pipeline. What it
 * writes is checked against what the SDK's tracer writes for the same calls.
 */

const RESOURCE = resources.resourceFromAttributes({ 'service.name': 'lean-test' });
const SCOPE = { name: 'mcp-remote-auth-proxy' };

/** A pipeline whose batches are kept, decoded on `spans()`. */
function pipeline() {
  const batches: EncodedBatch[] = [];
  const processor = new EncodingSpanProcessor(
    {
      export(batch: EncodedBatch, done: (result: { code: ExportResultCode }) => void) {
        batches.push(batch);
        done({ code: ExportResultCode.SUCCESS });
      },
      forceFlush: async () => {},
      shutdown: async () => {},
    },
    { batchSize: 512, delayMs: 60_000 },
  );
  return {
    processor,
    spans: async (): Promise<ReceivedSpan[]> => {
      await processor.forceFlush();
      return batches.flatMap((batch) => decodeExport(Buffer.from(batch.bytes)));
    },
    bytes: async (): Promise<Buffer> => {
      await processor.forceFlush();
      return Buffer.concat(batches.map((batch) => Buffer.from(batch.bytes)));
    },
  };
}

function lean(sampler: tracing.Sampler = new tracing.AlwaysOnSampler()) {
  const sink = pipeline();
  return { ...sink, startSpan: new LeanTracer(sampler, RESOURCE, SCOPE, sink.processor).startSpan };
}

/** What spans.ts does for a warm tool call, through either tracer. */
function toolCall(startSpan: StartSpan): void {
  const request = startSpan(
    'POST',
    SpanKind.SERVER,
    { 'http.request.method': 'POST', 'request.id': 'r-1' },
    ROOT_CONTEXT,
  );
  const call = startSpan(
    'mcp tools/call echo',
    SpanKind.CLIENT,
    { 'mcp.method.name': 'tools/call', 'gen_ai.tool.name': 'echo' },
    trace.setSpan(ROOT_CONTEXT, request),
  );
  call.setAttribute('mcp.proxy.outcome', 'unreachable');
  call.setStatus({ code: SpanStatusCode.ERROR });
  call.end();
  request.updateName('POST /mcp');
  request.setAttributes({ 'http.route': '/mcp', 'http.response.status_code': 502 });
  request.end();
}

/** A span's fields without its ids and times, its parent as the name of the span it points to. */
function shape(spans: ReceivedSpan[]) {
  return spans.map(({ traceId: _traceId, spanId: _spanId, parentSpanId, ...rest }) => ({
    ...rest,
    parent: spans.find((s) => s.spanId === parentSpanId)?.name ?? null,
  }));
}

describe('lean tracer: the proxy’s own spans', () => {
  it('carries what the SDK’s spans carry for the same calls: names, kinds, parents, attributes, status, resource, scope', async () => {
    const sdkSink = pipeline();
    const provider = new tracing.BasicTracerProvider({ resource: RESOURCE, spanProcessors: [sdkSink.processor] });
    const sdkTracer = provider.getTracer(SCOPE.name);
    toolCall((name, kind, attributes, parent) => sdkTracer.startSpan(name, { kind, attributes }, parent));
    const own = lean();
    toolCall(own.startSpan);

    const [fromSdk, fromLean] = [await sdkSink.spans(), await own.spans()];
    expect(fromLean).to.have.length(2);
    expect(shape(fromLean)).to.deep.equal(shape(fromSdk));
    const [call, request] = fromLean as [ReceivedSpan, ReceivedSpan];
    expect(call.traceId).to.equal(request.traceId);
    expect(call.parentSpanId).to.equal(request.spanId);
    expect(request.parentSpanId).to.equal('');
  });

  it('makes W3C ids: random and of the right length', () => {
    const { startSpan } = lean();
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const { traceId, spanId, traceFlags } = startSpan('s', SpanKind.SERVER, {}, ROOT_CONTEXT).spanContext();
      expect(traceId)
        .to.match(/^[0-9a-f]{32}$/)
        .and.not.match(/^0+$/);
      expect(spanId)
        .to.match(/^[0-9a-f]{16}$/)
        .and.not.match(/^0+$/);
      expect(traceFlags).to.equal(TraceFlags.SAMPLED);
      seen.add(traceId).add(spanId);
    }
    expect(seen.size).to.equal(4000);
  });

  it('keeps the times of its start and end, as nanoseconds since the epoch', async () => {
    const own = lean();
    const before = Date.now();
    const span = own.startSpan('timed', SpanKind.SERVER, {}, ROOT_CONTEXT) as Span & {
      startTime: [number, number];
      endTime: [number, number];
    };
    await new Promise((resolve) => setTimeout(resolve, 20));
    span.end();
    const after = Date.now();
    const ms = ([seconds, nanos]: [number, number]) => seconds * 1000 + nanos / 1e6;
    expect(ms(span.startTime)).to.be.within(before - 1, after + 1);
    expect(ms(span.endTime) - ms(span.startTime)).to.be.within(15, after - before + 2);

    const given = own.startSpan('given', SpanKind.SERVER, {}, ROOT_CONTEXT) as typeof span;
    given.end([5_000_000_000, 7]);
    expect(given.endTime).to.deep.equal([5_000_000_000, 7]);
  });

  it('is sampled by the SDK’s sampler: a span not recorded still carries a context to pass on', async () => {
    const off = lean(new tracing.AlwaysOffSampler());
    const request = off.startSpan('POST', SpanKind.SERVER, {}, ROOT_CONTEXT);
    expect(request.isRecording()).to.equal(false);
    expect(trace.isSpanContextValid(request.spanContext())).to.equal(true);
    expect(request.spanContext().traceFlags).to.equal(TraceFlags.NONE);
    request.end();
    expect(await off.spans()).to.deep.equal([]);

    // Parent-based (the default): the call follows its request, sampled or not.
    const parentBased = lean(new tracing.ParentBasedSampler({ root: new tracing.AlwaysOnSampler() }));
    const unsampledParent = trace.setSpan(ROOT_CONTEXT, request);
    const call = parentBased.startSpan('mcp', SpanKind.CLIENT, {}, unsampledParent);
    expect(call.isRecording()).to.equal(false);
    expect(call.spanContext().traceId).to.equal(request.spanContext().traceId);

    const none = lean(new tracing.TraceIdRatioBasedSampler(0));
    none.startSpan('POST', SpanKind.SERVER, {}, ROOT_CONTEXT).end();
    expect(await none.spans()).to.deep.equal([]);
  });

  it('takes the sampler’s attributes and trace state; a span recorded but not sampled is not exported', async () => {
    const traceState = new TraceState('vendor=1');
    const rules: tracing.Sampler = {
      shouldSample: (_context: Context, _traceId: string, name: string) =>
        name === 'kept'
          ? { decision: tracing.SamplingDecision.RECORD_AND_SAMPLED, attributes: { 'sampler.rule': 'a' }, traceState }
          : { decision: tracing.SamplingDecision.RECORD },
      toString: () => 'rules',
    };
    const own = lean(rules);
    const kept = own.startSpan('kept', SpanKind.SERVER, { own: 1 }, ROOT_CONTEXT);
    expect(kept.spanContext().traceState).to.equal(traceState);
    kept.end();
    const recorded = own.startSpan('recorded', SpanKind.SERVER, {}, ROOT_CONTEXT);
    expect(recorded.isRecording()).to.equal(true);
    expect(recorded.spanContext().traceFlags).to.equal(TraceFlags.NONE);
    recorded.end();
    const spans = await own.spans();
    expect(spans.map((s) => s.name)).to.deep.equal(['kept']);
    expect(spans[0]!.attributes).to.deep.equal({ own: 1, 'sampler.rule': 'a' });
  });

  it('makes no span where tracing is suppressed', async () => {
    const own = lean();
    const span = own.startSpan('export', SpanKind.CLIENT, {}, suppressTracing(context.active()));
    expect(span.isRecording()).to.equal(false);
    expect(trace.isSpanContextValid(span.spanContext())).to.equal(false);
    span.end();
    expect(await own.spans()).to.deep.equal([]);
  });

  it('is written once, at its first end; what is set after it is ignored', async () => {
    const written: Span[] = [];
    const startSpan = new LeanTracer(new tracing.AlwaysOnSampler(), RESOURCE, SCOPE, {
      write: (span) => written.push(span as unknown as Span),
    }).startSpan;
    const span = startSpan('first', SpanKind.SERVER, { a: 1 }, ROOT_CONTEXT);
    span.end();
    expect(span.isRecording()).to.equal(false);
    span.setAttribute('late', true).updateName('renamed').setStatus({ code: SpanStatusCode.ERROR });
    span.addEvent('late');
    span.end();
    expect(written).to.have.length(1);
    expect(written[0]).to.include({ name: 'first' });
    expect(written[0]).to.deep.include({ attributes: { a: 1 }, status: { code: 0 }, events: [] });
  });

  it('passes its trace state on to its children, as the SDK does', () => {
    const { startSpan } = lean(new tracing.ParentBasedSampler({ root: new tracing.AlwaysOnSampler() }));
    const traceState = new TraceState('vendor=1');
    const parent = trace.wrapSpanContext({
      traceId: 'a'.repeat(32),
      spanId: 'b'.repeat(16),
      traceFlags: TraceFlags.SAMPLED,
      traceState,
    });
    const child = startSpan('child', SpanKind.CLIENT, {}, trace.setSpan(ROOT_CONTEXT, parent));
    expect(child.spanContext().traceState).to.equal(traceState);
    expect(child.spanContext().traceId).to.equal('a'.repeat(32));
  });

  it('starts on the wall clock, as the SDK’s spans, and never ends before it starts', () => {
    const { startSpan } = lean();
    const before = Date.now();
    const span = startSpan('clock', SpanKind.SERVER, {}, ROOT_CONTEXT) as Span & {
      startTime: [number, number];
      endTime: [number, number];
    };
    const after = Date.now();
    span.end([1, 0]);
    const startMs = span.startTime[0] * 1000 + span.startTime[1] / 1e6;
    expect(startMs).to.be.within(before, after + 1);
    expect(span.endTime).to.deep.equal(span.startTime);
  });

  it('records an exception by its code or name only, never its message', async () => {
    const own = lean();
    const span = own.startSpan('failing', SpanKind.SERVER, {}, ROOT_CONTEXT);
    const secret = 'refresh_token=rt-very-secret';
    span.recordException(new TypeError(`bad answer: ${secret}`));
    span.recordException(Object.assign(new Error(`connect ECONNREFUSED ${secret}`), { code: 'ECONNREFUSED' }));
    span.recordException(Object.assign(new Error('x'), { code: 'A'.repeat(300) }));
    span.recordException(secret);
    span.recordException(null as unknown as Error);
    span.addEvent('retried', { attempt: 2 });
    span.end();
    const events = (span as unknown as { events: Array<{ name: string; attributes: Record<string, unknown> }> }).events;
    expect(events.map((e) => [e.name, e.attributes['exception.type'] ?? e.attributes.attempt])).to.deep.equal([
      ['exception', 'TypeError'],
      ['exception', 'ECONNREFUSED'],
      ['exception', 'Error'],
      ['exception', 'unknown'],
      ['retried', 2],
    ]);
    const bytes = await own.bytes();
    expect(bytes.includes('ECONNREFUSED')).to.equal(true);
    expect(bytes.includes('rt-very-secret'), 'an exception message was written').to.equal(false);
  });
});
