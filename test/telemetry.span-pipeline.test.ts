import { AsyncLocalStorage } from 'node:async_hooks';
import {
  context,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode, isTracingSuppressed } from '@opentelemetry/core';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { core, resources, tracing } from '@opentelemetry/sdk-node';
import { expect } from 'chai';
import { WireWriter } from '../lib/telemetry/otlp-wire.ts';
import {
  EncodingSpanProcessor,
  spanPipelineSettings,
  type EncodedBatch,
  type SpanPipelineSettings,
} from '../lib/telemetry/span-pipeline.ts';
import { decodeExport, fields, type Field } from './helpers/otlp-receiver.ts';

/**
 * The span pipeline (lib/telemetry/span-pipeline.ts): spans written as OTLP protobuf when they
 * end, batched as bytes. Its bytes are checked against the SDK's own serializer, the one
 * OTLPTraceExporter sends, field by field, for spans that use every part of the format; its
 * batching against the batch processor's rules. The delivery (HTTP, headers, endpoint) is the
 * exporter's, tested end to end in telemetry.tracing and telemetry.e2e.
 */

/** Message fields of ExportTraceServiceRequest and everything under it (trace/v1, common/v1). */
const MESSAGES: Record<string, Record<number, string>> = {
  request: { 1: 'resourceSpans' },
  resourceSpans: { 1: 'resource', 2: 'scopeSpans' },
  resource: { 1: 'keyValue' },
  scopeSpans: { 1: 'scope', 2: 'span' },
  scope: { 3: 'keyValue' },
  span: { 9: 'keyValue', 11: 'event', 13: 'link', 15: 'status' },
  event: { 3: 'keyValue' },
  link: { 4: 'keyValue' },
  status: {},
  keyValue: { 2: 'anyValue' },
  anyValue: { 5: 'arrayValue', 6: 'keyValueList' },
  arrayValue: { 1: 'anyValue' },
  keyValueList: { 1: 'keyValue' },
};

/**
 * A message as a plain tree, every field by number in wire order, embedded messages decoded,
 * other bytes as hex, and proto3's defaults (a zero number, an empty message or string) left out
 * as the format says a reader must treat an absent field: two encoders may differ in whether
 * they write those, and mean the same.
 */
function canonical(bytes: Buffer, type = 'request'): Record<number, unknown[]> {
  const tree: Record<number, unknown[]> = {};
  for (const field of fields(bytes)) {
    const value = decodeValue(field, MESSAGES[type]![field.number]);
    if (value === undefined) continue;
    (tree[field.number] ??= []).push(value);
  }
  return tree;
}

function decodeValue(field: Field, messageType: string | undefined): unknown {
  if (Buffer.isBuffer(field.value)) {
    if (messageType) return canonical(field.value, messageType);
    return field.value.length ? field.value.toString('hex') : undefined;
  }
  return field.value === 0n || field.value === 0 ? undefined : String(field.value);
}

/** Stands in for a request's context (lib/telemetry/request-context.ts keeps one like it). */
const requestContext = new AsyncLocalStorage<string>();

function capture() {
  const batches: EncodedBatch[] = [];
  const sentFrom: Array<string | undefined> = [];
  const suppressed: boolean[] = [];
  let shutdowns = 0;
  return {
    batches,
    sentFrom,
    suppressed,
    shutdowns: () => shutdowns,
    exporter: {
      export(batch: EncodedBatch, done: (result: { code: ExportResultCode }) => void) {
        batches.push(batch);
        sentFrom.push(requestContext.getStore());
        suppressed.push(isTracingSuppressed(context.active()));
        done({ code: ExportResultCode.SUCCESS });
      },
      forceFlush: async () => {},
      shutdown: async () => {
        shutdowns++;
      },
    },
  };
}

const RESOURCE = resources.resourceFromAttributes({ 'service.name': 'pipeline-test', 'host.name': 'dyno.1' });

function setUp(settings: Partial<SpanPipelineSettings> = {}, resource = RESOURCE, sampler?: tracing.Sampler) {
  const sink = capture();
  const pipeline = new EncodingSpanProcessor(sink.exporter, { batchSize: 512, delayMs: 60_000, ...settings });
  const memory = new tracing.InMemorySpanExporter();
  const provider = new tracing.BasicTracerProvider({
    resource,
    ...(sampler ? { sampler } : {}),
    spanProcessors: [pipeline, new tracing.SimpleSpanProcessor(memory)],
  });
  return { sink, pipeline, memory, provider };
}

const LONG = 'x'.repeat(300);
const HUGE = 'y'.repeat(20_000); // past 16 KiB: a span whose length takes three bytes

/** Spans that use every part of the format the API can reach. */
function makeSpans(provider: tracing.BasicTracerProvider): void {
  const tracer = provider.getTracer('scope-a', '1.2.3');
  const other = provider.getTracer('scope-b');
  const attributes: Attributes = {
    ascii: 'POST',
    empty: '',
    accented: 'café', // two bytes in UTF-8
    emoji: 'tool 🔧 call', // a surrogate pair: four bytes
    'almost-short': `${'a'.repeat(41)}é`, // at the one-byte-length boundary, not ASCII
    long: LONG,
    zero: 0,
    int: 200,
    negative: -42,
    big: 2 ** 60,
    double: 3.25,
    negativeDouble: -0.5,
    yes: true,
    no: false,
    strings: ['a', 'béta', ''],
    numbers: [1, 2.5, -3],
    flags: [true, false],
  };
  const remote = trace.setSpanContext(ROOT_CONTEXT, {
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
    traceState: new core.TraceState('vendor=value,other=1'),
  });
  const root = tracer.startSpan('GET /mcp', { kind: SpanKind.SERVER, attributes, root: true });
  const child = tracer.startSpan(
    'mcp tools/call echo',
    {
      kind: SpanKind.CLIENT,
      links: [
        { context: root.spanContext(), attributes: { reason: 'retry' } },
        { context: trace.getSpanContext(remote)! },
      ],
    },
    trace.setSpan(ROOT_CONTEXT, root),
  );
  child.addEvent('retried', { attempt: 2 });
  child.addEvent('plain');
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'upstream said no' });
  child.end();
  const fromRemote = other.startSpan('continued', { kind: SpanKind.CONSUMER }, remote);
  fromRemote.setAttribute('huge', HUGE);
  fromRemote.setStatus({ code: SpanStatusCode.OK });
  fromRemote.end();
  // Enums the SDK passes through unchecked, negative: int32 on the wire, ten bytes.
  const odd = tracer.startSpan('odd', { kind: -2 as SpanKind });
  odd.setStatus({ code: -1 as SpanStatusCode });
  odd.end();
  // Times far from now, to the nanosecond: seconds past 2^32, and the last nanosecond of one.
  const timed = tracer.startSpan('timed', { startTime: [5_000_000_000, 999_999_999] });
  timed.end([5_000_000_001, 1]);
  root.end();
}

describe('span pipeline: spans written as OTLP protobuf at their end', () => {
  // The SDK's own context manager (the proxy's, context-manager.ts, adds the request being served,
  // which these tests have none of): without one, no context follows an await.
  before(() => context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable()));
  after(() => context.disable());

  it('writes what the OTLP exporter’s own serializer writes, field for field', async () => {
    const { sink, memory, provider } = setUp();
    makeSpans(provider);
    await provider.forceFlush();
    expect(sink.batches).to.have.length(1);
    expect(sink.batches[0]!.spans).to.equal(5);
    const ours = Buffer.from(sink.batches[0]!.bytes);
    const reference = Buffer.from(ProtobufTraceSerializer.serializeRequest(memory.getFinishedSpans())!);
    expect(canonical(ours)).to.deep.equal(canonical(reference));
    // And read the way a collector reads them: the names, parents and attributes above.
    const spans = decodeExport(ours);
    expect(spans.map((s) => `${s.scope} ${s.name}`)).to.have.members([
      'scope-a mcp tools/call echo',
      'scope-a odd',
      'scope-a timed',
      'scope-a GET /mcp',
      'scope-b continued',
    ]);
    const root = spans.find((s) => s.name === 'GET /mcp')!;
    expect(root.attributes).to.include({ emoji: 'tool 🔧 call', negative: -42, double: 3.25, big: 2 ** 60 });
    expect(spans.find((s) => s.name === 'mcp tools/call echo')!.parentSpanId).to.equal(root.spanId);
    expect(spans.find((s) => s.name === 'continued')!.attributes.huge).to.equal(HUGE);
    expect(root.resource).to.deep.equal({ 'service.name': 'pipeline-test', 'host.name': 'dyno.1' });
  });

  it('writes times as nanoseconds since the epoch, exactly, past 2^53', () => {
    const writer = new WireWriter(4);
    const times: Array<[number, number]> = [
      [0, 0],
      [1_765_000_000, 123_456_789],
      [4_294_967_296, 999_999_999],
      [18_000_000_000, 1],
    ];
    for (const time of times) writer.hrTime(time);
    const bytes = writer.take();
    times.forEach(([seconds, nanos], i) => {
      expect(bytes.readBigUInt64LE(i * 8)).to.equal(BigInt(seconds) * 1_000_000_000n + BigInt(nanos));
    });
  });

  it('sends a batch as soon as it holds OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans', async () => {
    const { sink, provider } = setUp({ batchSize: 3 });
    const tracer = provider.getTracer('t');
    for (let i = 0; i < 7; i++) tracer.startSpan(`s${i}`).end();
    // On the next turn, not after the (one minute) delay.
    await new Promise(setImmediate);
    expect(sink.batches.map((b) => b.spans)).to.deep.equal([3, 3]);
    expect(sink.batches.flatMap((b) => decodeExport(Buffer.from(b.bytes)).map((s) => s.name))).to.deep.equal([
      's0',
      's1',
      's2',
      's3',
      's4',
      's5',
    ]);
  });

  it('sends what waits once OTEL_BSP_SCHEDULE_DELAY has passed', async () => {
    const { sink, provider } = setUp({ delayMs: 30 });
    provider.getTracer('t').startSpan('alone').end();
    expect(sink.batches).to.have.length(0);
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(sink.batches.map((b) => b.spans)).to.deep.equal([1]);
  });

  it('sends from its own context, never from the request whose span filled the batch or started the delay', async () => {
    const full = setUp({ batchSize: 1 });
    requestContext.run('request-1', () => full.provider.getTracer('t').startSpan('fills').end());
    const timed = setUp({ delayMs: 20 });
    requestContext.run('request-2', () => timed.provider.getTracer('t').startSpan('waits').end());
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(full.sink.sentFrom).to.deep.equal([undefined]);
    expect(timed.sink.sentFrom).to.deep.equal([undefined]);
    // And with tracing suppressed, as the SDK's batch processor exports: an instrumented HTTP
    // client must not trace the export itself.
    expect([...full.sink.suppressed, ...timed.sink.suppressed]).to.deep.equal([true, true]);
  });

  it('sends nothing for spans that are not sampled', async () => {
    const { sink, provider } = setUp({}, RESOURCE, new tracing.AlwaysOffSampler());
    provider.getTracer('t').startSpan('dropped').end();
    await provider.forceFlush();
    expect(sink.batches).to.have.length(0);
  });

  it('waits for resource attributes still being detected before the first export', async () => {
    let settle!: (value: string) => void;
    const detected = new Promise<string>((resolve) => (settle = resolve));
    const resource = resources.resourceFromAttributes({ 'service.name': 'late', 'cloud.region': detected });
    const { sink, pipeline, provider } = setUp({}, resource);
    provider.getTracer('t').startSpan('early').end();
    const flushed = pipeline.forceFlush();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sink.batches).to.have.length(0);
    settle('eu-west-1');
    await flushed;
    expect(decodeExport(Buffer.from(sink.batches[0]!.bytes))[0]!.resource).to.deep.equal({
      'service.name': 'late',
      'cloud.region': 'eu-west-1',
    });
  });

  it('on shutdown sends what waits, stops the exporter, and takes no more spans', async () => {
    const { sink, provider } = setUp();
    const tracer = provider.getTracer('t');
    tracer.startSpan('before').end();
    await provider.shutdown();
    expect(sink.batches.map((b) => b.spans)).to.deep.equal([1]);
    expect(sink.shutdowns()).to.equal(1);
    tracer.startSpan('after').end();
    expect(sink.batches).to.have.length(1);
  });

  it('drops a span it cannot write, not the spans around it and never the caller', async () => {
    const { sink, pipeline, provider } = setUp();
    const tracer = provider.getTracer('t');
    tracer.startSpan('first').end();
    const broken = tracer.startSpan('broken') as unknown as tracing.ReadableSpan;
    const throwing = Object.create(broken, {
      attributes: {
        get() {
          throw new Error('unreadable');
        },
      },
    }) as tracing.ReadableSpan;
    expect(() => pipeline.onEnd(throwing)).not.to.throw();
    tracer.startSpan('last').end();
    await pipeline.forceFlush();
    expect(decodeExport(Buffer.from(sink.batches[0]!.bytes)).map((s) => s.name)).to.deep.equal(['first', 'last']);
    expect(sink.batches[0]!.spans).to.equal(2);
  });

  it('reports an exporter that throws, rejecting nothing', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const pipeline = new EncodingSpanProcessor(
        {
          export: () => {
            throw new Error('export threw');
          },
          forceFlush: async () => {},
          shutdown: async () => {},
        },
        { batchSize: 1, delayMs: 60_000 },
      );
      const provider = new tracing.BasicTracerProvider({ spanProcessors: [pipeline] });
      provider.getTracer('t').startSpan('sent').end();
      await pipeline.forceFlush();
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(rejections).to.deep.equal([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });

  it('reads its two standard variables, falling back to their defaults on anything else', () => {
    expect(spanPipelineSettings({})).to.deep.equal({ batchSize: 512, delayMs: 5000 });
    expect(
      spanPipelineSettings({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: ' 64 ', OTEL_BSP_SCHEDULE_DELAY: '250' }),
    ).to.deep.equal({ batchSize: 64, delayMs: 250 });
    // A delay of 0 sends on the next turn; a batch of 0 spans is no batch.
    expect(spanPipelineSettings({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '0', OTEL_BSP_SCHEDULE_DELAY: '0' })).to.deep.equal({
      batchSize: 512,
      delayMs: 0,
    });
    for (const bad of ['-5', '1.5', 'many', '']) {
      expect(spanPipelineSettings({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: bad, OTEL_BSP_SCHEDULE_DELAY: bad })).to.deep.equal(
        { batchSize: 512, delayMs: 5000 },
      );
    }
  });
});
