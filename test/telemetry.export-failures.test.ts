import { setTimeout as sleep } from 'node:timers/promises';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPExporterError } from '@opentelemetry/otlp-exporter-base';
import { tracing } from '@opentelemetry/sdk-node';
import { expect } from 'chai';
import type { Level } from '../lib/telemetry/log.ts';
import { ExportFailures } from '../lib/telemetry/export-failures.ts';
import { EncodingSpanProcessor, type EncodedBatch, type ExportOutcomes } from '../lib/telemetry/span-pipeline.ts';

/**
 * What the operator is told when spans cannot be delivered (lib/telemetry/export-failures.ts): a
 * line at the first failure, a summary at most once an interval while failures go on, a line when
 * exports succeed again; and the span pipeline telling it every export's outcome. The same report
 * from a real process, against a collector that refuses the API key, is in telemetry.tracing.
 */

type Line = { level: Level; msg: string; fields: Record<string, unknown> };

function recorder(intervalMs = 60_000) {
  const lines: Line[] = [];
  const failures = new ExportFailures((level, msg, fields) => lines.push({ level, msg, fields }), intervalMs);
  return { lines, failures };
}

const refused = () => new OTLPExporterError('Unauthorized', 401, '{"error":"unknown API key"}');

describe('export failures: what the operator is told when spans are dropped', () => {
  it('says nothing while exports succeed', async () => {
    const { lines, failures } = recorder();
    await failures.exported(512, undefined);
    await failures.exported(3, undefined);
    await failures.summarize();
    expect(lines).to.deep.equal([]);
  });

  it('writes one line at the first failure, then sums up the rest once an interval', async () => {
    const { lines, failures } = recorder(60);
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
    await sleep(100);
    expect(lines.slice(1)).to.deep.equal([
      {
        level: 'warn',
        msg: 'trace export still failing: spans dropped',
        fields: { spans: 552, batches: 2, error: 'connect ECONNREFUSED 127.0.0.1:4318' },
      },
    ]);
    // Nothing more to say until another export fails.
    await sleep(100);
    expect(lines).to.have.length(2);
    await failures.exported(1, undefined); // stops the interval's timer
  });

  it('says when exports succeed again, with what was dropped meanwhile', async () => {
    const { lines, failures } = recorder();
    await failures.exported(512, refused());
    await failures.exported(100, refused());
    await failures.exported(7, undefined);
    expect(lines.map((line) => [line.level, line.msg, line.fields])).to.deep.equal([
      ['warn', 'trace export failed: spans dropped', { spans: 512, error: 'Unauthorized', status: 401 }],
      [
        'warn',
        'trace export still failing: spans dropped',
        { spans: 100, batches: 1, error: 'Unauthorized', status: 401 },
      ],
      ['info', 'trace export recovered', { dropped_spans: 612 }],
    ]);
    // A later failure is a new run of them: told at once again.
    await failures.exported(9, refused());
    expect(lines).to.have.length(4);
    expect(lines[3]!.fields).to.include({ spans: 9 });
  });

  it('sums up what is still unsaid when asked (at shutdown)', async () => {
    const { lines, failures } = recorder();
    await failures.exported(10, refused());
    await failures.exported(20, refused());
    await failures.summarize();
    expect(lines[1]).to.deep.include({ msg: 'trace export still failing: spans dropped' });
    expect(lines[1]!.fields).to.include({ spans: 20, batches: 1 });
    await failures.summarize();
    expect(lines).to.have.length(2);
  });

  it('names an HTTP refusal by its status, never by the collector’s words', async () => {
    const { lines, failures } = recorder();
    const apiKey = 'key-0123456789abcdef';
    // A collector that echoes the request, headers and all, in its reason phrase and its body.
    await failures.exported(
      1,
      new OTLPExporterError(`Forbidden for x-honeycomb-team=${apiKey}`, 403, `team ${apiKey}`),
    );
    expect(lines[0]!.fields).to.deep.equal({ spans: 1, error: 'Forbidden', status: 403 });
  });

  it('bounds a long error message', async () => {
    const { lines, failures } = recorder();
    await failures.exported(1, new Error('x'.repeat(5000)));
    expect((lines[0]!.fields.error as string).length).to.equal(201);
  });
});

describe('span pipeline: every export’s outcome told', () => {
  function pipelineWith(results: Array<{ code: ExportResultCode; error?: Error }>) {
    const told: Array<[number, unknown]> = [];
    let summaries = 0;
    const outcomes: ExportOutcomes = {
      exported: (spans, error) => told.push([spans, error]),
      summarize: () => summaries++,
    };
    const pipeline = new EncodingSpanProcessor(
      {
        export: (_batch: EncodedBatch, done) => done(results.shift() ?? { code: ExportResultCode.SUCCESS }),
        forceFlush: async () => {},
        shutdown: async () => {},
      },
      { batchSize: 2, delayMs: 60_000 },
      outcomes,
    );
    const provider = new tracing.BasicTracerProvider({ spanProcessors: [pipeline] });
    return { told, summaries: () => summaries, pipeline, provider, tracer: provider.getTracer('t') };
  }

  it('tells the spans of each export, and its error when it failed', async () => {
    const error = refused();
    const { told, pipeline, tracer } = pipelineWith([{ code: ExportResultCode.FAILED, error }]);
    for (let i = 0; i < 5; i++) tracer.startSpan(`span ${i}`).end();
    await pipeline.forceFlush();
    expect(told).to.deep.equal([
      [2, error],
      [2, undefined],
      [1, undefined],
    ]);
  });

  it('counts an exporter that throws as a failed export', async () => {
    const told: Array<[number, unknown]> = [];
    const pipeline = new EncodingSpanProcessor(
      {
        export: () => {
          throw new Error('export threw');
        },
        forceFlush: async () => {},
        shutdown: async () => {},
      },
      { batchSize: 1, delayMs: 60_000 },
      { exported: (spans, error) => told.push([spans, error]), summarize: () => {} },
    );
    new tracing.BasicTracerProvider({ spanProcessors: [pipeline] }).getTracer('t').startSpan('sent').end();
    await pipeline.forceFlush();
    expect(told).to.have.length(1);
    expect(told[0]![0]).to.equal(1);
    expect((told[0]![1] as Error).message).to.equal('export threw');
  });

  it('asks for the summary at shutdown, after the last export', async () => {
    const { told, summaries, provider, tracer } = pipelineWith([]);
    tracer.startSpan('last').end();
    await provider.shutdown();
    expect(told).to.deep.equal([[1, undefined]]);
    expect(summaries()).to.equal(1);
  });

  it('rejects nothing when the report itself throws', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const pipeline = new EncodingSpanProcessor(
        {
          export: (_batch, done) => done({ code: ExportResultCode.SUCCESS }),
          forceFlush: async () => {},
          shutdown: async () => {},
        },
        { batchSize: 1, delayMs: 60_000 },
        {
          exported: () => {
            throw new Error('report threw');
          },
          summarize: () => {},
        },
      );
      new tracing.BasicTracerProvider({ spanProcessors: [pipeline] }).getTracer('t').startSpan('sent').end();
      await pipeline.forceFlush();
      await sleep(10);
      expect(rejections).to.deep.equal([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
