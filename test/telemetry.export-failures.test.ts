import { setTimeout as sleep } from 'node:timers/promises';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPExporterError } from '@opentelemetry/otlp-exporter-base';
import { tracing } from '@opentelemetry/sdk-node';
import { expect } from 'chai';
import type { Level } from '../lib/telemetry/log.ts';
import { ExportFailures } from '../lib/telemetry/export-failures.ts';
import {
  EncodingSpanProcessor,
  type BatchExporter,
  type EncodedBatch,
  type ExportOutcomes,
} from '../lib/telemetry/span-pipeline.ts';

/**
 * What the operator is told when spans cannot be delivered (lib/telemetry/export-failures.ts): a
 * line at the first failure, a summary at most once an interval while failures go on, a line when
 * exports succeed again; and the span pipeline telling it every export's outcome. The same report
 * from a real process, against a collector that refuses the API key, is in telemetry.tracing.
 */

type Line = { level: Level; msg: string; fields: Record<string, unknown> };

const INTERVAL_MS = 60;

function recorder(intervalMs = INTERVAL_MS) {
  const lines: Line[] = [];
  const failures = new ExportFailures((level, msg, fields) => lines.push({ level, msg, fields }), intervalMs);
  return { lines, failures };
}

const refused = () => new OTLPExporterError('Unauthorized', 401, '{"error":"unknown API key"}');
/** Past the next tick of the interval. */
const tick = () => sleep(INTERVAL_MS * 1.5);

describe('export failures: what the operator is told when spans are dropped', () => {
  it('says nothing while exports succeed', async () => {
    const { lines, failures } = recorder();
    await failures.exported(512, undefined);
    await failures.exported(3, undefined);
    await tick();
    await failures.summarize();
    expect(lines).to.deep.equal([]);
  });

  it('tells the first failure at once, then sums up the rest at the next tick', async () => {
    const { lines, failures } = recorder();
    await failures.exported(512, refused());
    expect(lines).to.deep.equal([
      {
        level: 'warn',
        msg: 'trace export failed: spans dropped',
        fields: { spans: 512, error: 'Unauthorized', status: 401 },
      },
    ]);
    await failures.exported(512, refused());
    await failures.exported(40, new Error('connect ECONNREFUSED 127.0.0.1:4318'));
    expect(lines, 'no line per failure').to.have.length(1);
    await tick();
    expect(lines.slice(1)).to.deep.equal([
      {
        level: 'warn',
        msg: 'trace export still failing: spans dropped',
        fields: { spans: 552, batches: 2, error: 'connect ECONNREFUSED 127.0.0.1:4318' },
      },
    ]);
    // Nothing new, nothing said.
    await tick();
    expect(lines).to.have.length(2);
    await failures.exported(1, undefined);
    await tick();
  });

  it('says exports recovered once an interval has passed with spans taken and none dropped', async () => {
    const { lines, failures } = recorder();
    await failures.exported(512, refused());
    await failures.exported(100, refused());
    await failures.exported(7, undefined);
    expect(lines, 'not at the first success').to.have.length(1);
    await tick();
    // The interval held a failure: summed up first.
    expect(lines[1]).to.deep.include({ msg: 'trace export still failing: spans dropped' });
    await failures.exported(7, undefined);
    await tick();
    expect(lines.slice(2)).to.deep.equal([
      { level: 'info', msg: 'trace export recovered', fields: { dropped_spans: 612 } },
    ]);
  });

  it('writes at most a line an interval when exports fail and succeed by turns', async () => {
    const { lines, failures } = recorder();
    const until = performance.now() + INTERVAL_MS * 3.2;
    let outcomes = 0;
    while (performance.now() < until) {
      await failures.exported(10, outcomes++ % 2 ? undefined : refused());
      await sleep(2);
    }
    await failures.summarize();
    // The first failure at once, then one line at each tick since (three or four), and the rest
    // when asked.
    expect(outcomes).to.be.above(20);
    expect(lines.length).to.be.within(3, 6);
    expect(lines[0]!.msg).to.equal('trace export failed: spans dropped');
    for (const line of lines.slice(1, -1)) expect(line.msg).to.equal('trace export still failing: spans dropped');
    const dropped = lines.reduce((sum, line) => sum + (line.level === 'warn' ? (line.fields.spans as number) : 0), 0);
    expect(dropped, 'every dropped span told').to.equal(Math.ceil(outcomes / 2) * 10);
  });

  it('holds a failure soon after recovering for the next tick, and tells it as a failure', async () => {
    const { lines, failures } = recorder();
    await failures.exported(5, refused());
    await failures.exported(1, undefined);
    await tick();
    expect(lines.map((line) => line.msg)).to.deep.equal([
      'trace export failed: spans dropped',
      'trace export recovered',
    ]);
    await failures.exported(9, refused());
    expect(lines, 'within an interval of the last line').to.have.length(2);
    await tick();
    expect(lines[2]).to.deep.equal({
      level: 'warn',
      msg: 'trace export failed: spans dropped',
      fields: { spans: 9, batches: 1, error: 'Unauthorized', status: 401 },
    });
    await failures.exported(1, undefined);
    await tick();
  });

  it('sums up what is still unsaid when asked (at shutdown), whatever the interval', async () => {
    const { lines, failures } = recorder(60_000);
    await failures.exported(10, refused());
    await failures.exported(20, refused());
    await failures.summarize();
    expect(lines[1]).to.deep.include({ msg: 'trace export still failing: spans dropped' });
    expect(lines[1]!.fields).to.include({ spans: 20, batches: 1 });
    await failures.summarize();
    expect(lines).to.have.length(2);
  });

  it('names an HTTP refusal by its status, never by the collector’s words', async () => {
    const { lines, failures } = recorder(60_000);
    const apiKey = 'key-0123456789abcdef';
    // A collector that echoes the request, headers and all, in its reason phrase and its body.
    await failures.exported(
      1,
      new OTLPExporterError(`Forbidden for x-honeycomb-team=${apiKey}`, 403, `team ${apiKey}`),
    );
    expect(lines[0]!.fields).to.deep.equal({ spans: 1, error: 'Forbidden', status: 403 });
  });

  it('bounds a long error message', async () => {
    const { lines, failures } = recorder(60_000);
    await failures.exported(1, new Error('x'.repeat(5000)));
    expect((lines[0]!.fields.error as string).length).to.equal(201);
  });
});

describe('span pipeline: every export’s outcome told', () => {
  type Result = { code: ExportResultCode; error?: Error };
  const answering = (results: Result[]): BatchExporter => ({
    export: (_batch: EncodedBatch, done) => done(results.shift() ?? { code: ExportResultCode.SUCCESS }),
    forceFlush: async () => {},
    shutdown: async () => {},
  });

  function pipelineWith(exporter: BatchExporter, outcomes: Partial<ExportOutcomes> = {}, batchSize = 2) {
    const told: Array<[number, unknown]> = [];
    let summaries = 0;
    const pipeline = new EncodingSpanProcessor(
      exporter,
      { batchSize, delayMs: 60_000 },
      {
        exported: (spans, error) => told.push([spans, error]),
        summarize: () => summaries++,
        ...outcomes,
      },
    );
    const provider = new tracing.BasicTracerProvider({ spanProcessors: [pipeline] });
    return { told, summaries: () => summaries, pipeline, provider, tracer: provider.getTracer('t') };
  }

  it('tells the spans of each export, and its error when it failed', async () => {
    const error = refused();
    const { told, pipeline, tracer } = pipelineWith(answering([{ code: ExportResultCode.FAILED, error }]));
    for (let i = 0; i < 5; i++) tracer.startSpan(`span ${i}`).end();
    await pipeline.forceFlush();
    expect(told).to.deep.equal([
      [2, error],
      [2, undefined],
      [1, undefined],
    ]);
  });

  it('counts an exporter that throws as a failed export', async () => {
    const throwing: BatchExporter = {
      ...answering([]),
      export: () => {
        throw new Error('export threw');
      },
    };
    const { told, pipeline, tracer } = pipelineWith(throwing, {}, 1);
    tracer.startSpan('sent').end();
    await pipeline.forceFlush();
    expect(told).to.have.length(1);
    expect(told[0]![0]).to.equal(1);
    expect((told[0]![1] as Error).message).to.equal('export threw');
  });

  it('asks for the summary at shutdown, after the last export, and waits for the report', async () => {
    const steps: string[] = [];
    const { summaries, provider, tracer } = pipelineWith(answering([]), {
      exported: async () => {
        await sleep(30);
        steps.push('reported');
      },
    });
    tracer.startSpan('last').end();
    await provider.shutdown();
    steps.push('shut down');
    expect(steps).to.deep.equal(['reported', 'shut down']);
    expect(summaries()).to.equal(1);
  });

  it('reports the batches still in flight as not delivered when told to give up on them', async () => {
    const stalled: BatchExporter = { ...answering([]), export: () => {} };
    const { told, summaries, pipeline, tracer } = pipelineWith(stalled);
    for (let i = 0; i < 5; i++) tracer.startSpan(`span ${i}`).end();
    void pipeline.forceFlush();
    await sleep(10);
    pipeline.abandon();
    expect(told).to.have.length(1);
    expect(told[0]![0]).to.equal(5);
    expect((told[0]![1] as Error).message).to.equal('not delivered before the shutdown deadline');
    expect(summaries()).to.equal(1);
  });

  it('rejects nothing when the report itself throws', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const { pipeline, tracer } = pipelineWith(
        answering([]),
        {
          exported: () => {
            throw new Error('report threw');
          },
        },
        1,
      );
      tracer.startSpan('sent').end();
      await pipeline.forceFlush();
      await sleep(10);
      expect(rejections).to.deep.equal([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
