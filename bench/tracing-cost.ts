/**
 * `npm run bench:tracing`: what the OpenTelemetry SDK costs per warm `/mcp` request, piece by
 * piece, without the rest of the proxy around it. `npm run bench` gives the cost of tracing as a
 * whole (its `traced` target), on a 2-core machine where identical processes differ by up to
 * ±15 % within one run; this isolates the spans so that a change to them can be judged on its own.
 *
 * Each mode runs in a fresh process, under the same paced load as the proxy sees at 10
 * connections in `npm run bench` (BENCH_RATE requests a second, default 3500), each request
 * making the spans a warm tool call makes, through the proxy's own span API (lib/telemetry/
 * spans.ts), plus some short-lived garbage, as a real request leaves. CPU time per request:
 *
 * - `off`: no SDK (the proxy's default; the span API is a branch per call);
 * - `record`: the SDK started, the spans made by the proxy's lean tracer (lib/telemetry/
 *   lean-tracer.ts), nothing written or exported;
 * - `sdk-record`: the same spans made by the SDK's tracer instead, nothing exported (a no-op span
 *   processor): what the proxy did before the lean tracer;
 * - `batch`: the SDK's tracer, and its BatchSpanProcessor keeping the span objects until their
 *   batch is full, its exporter dropping every batch (for comparison: the proxy does not use it);
 * - `export`: the proxy's own tracing set-up (lib/telemetry/sdk.ts): spans written as OTLP protobuf
 *   when they end (lib/telemetry/span-pipeline.ts) and sent over HTTP to a collector stand-in in
 *   another process (which answers 200);
 * - `one-span`: `export` with the request span only, no span for the call to the MCP server: what
 *   a design with one span per call would cost (not what the proxy does).
 *
 * `record − off` is making the spans; `sdk-record − record` what the SDK's tracer costs more;
 * `batch − sdk-record` what keeping span objects until export costs; `export − record` what the
 * proxy's pipeline adds to making them: writing, batching and sending.
 *
 * BENCH_TRACING_MODES picks modes (comma-separated, default all), BENCH_TRACING_NODE_ARGS adds Node
 * flags to every mode's process (after the production flags, so it can override them).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { IncomingMessage } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { StartSpan } from '../lib/telemetry/lean-tracer.ts';
import { RequestContext, runInRequest } from '../lib/telemetry/request-context.ts';
import { PRODUCTION_NODE_ARGS } from './production.ts';
import { median } from './summary.ts';

const MODES = ['off', 'record', 'sdk-record', 'batch', 'export', 'one-span'] as const;
type Mode = (typeof MODES)[number];
const RATE = Number(process.env.BENCH_RATE ?? 3500);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const TICK_MS = 10;

/** The collector stand-in: a child process, so its CPU is not counted with the spans'. */
async function startSink(): Promise<{ endpoint: string; stop: () => void }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `require('node:http').createServer((req, res) => { req.resume(); req.on('end', () =>
         res.writeHead(200, { 'Content-Type': 'application/x-protobuf' }).end()); })
       .listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<string>((resolve) =>
    child.stdout!.once('data', (data) => resolve(String(data).trim())),
  );
  return { endpoint: `http://127.0.0.1:${port}`, stop: () => child.kill() };
}

/** Starts tracing for `mode` the way the preload would; nothing for `off`. */
async function startMode(mode: Mode): Promise<void> {
  if (mode === 'off') return;
  process.env.OTEL_TRACES_SAMPLER = 'always_on';
  if (mode === 'export' || mode === 'one-span') {
    const { startTracing } = await import('../lib/telemetry/sdk.ts');
    return startTracing({ enabled: true, serviceName: 'bench-tracing' });
  }
  const { NodeSDK, resources, tracing } = await import('@opentelemetry/sdk-node');
  const { trace } = await import('@opentelemetry/api');
  const { installTracing } = await import('../lib/telemetry/tracing-handle.ts');
  const { TRACER_NAME } = await import('../lib/telemetry/sdk.ts');
  const { LeanTracer } = await import('../lib/telemetry/lean-tracer.ts');
  const { RequestContextManager } = await import('../lib/telemetry/context-manager.ts');
  const dropping = {
    export: (_spans: unknown, done: (result: { code: 0 }) => void) => done({ code: 0 }),
    shutdown: async () => {},
  };
  const processor = mode === 'batch' ? new tracing.BatchSpanProcessor(dropping) : new tracing.NoopSpanProcessor();
  const sdk = new NodeSDK({
    contextManager: new RequestContextManager(),
    spanProcessors: [processor],
    metricReaders: [],
    logRecordProcessors: [],
    resourceDetectors: [],
  });
  sdk.start();
  const tracer = trace.getTracer(TRACER_NAME);
  const startSpan: StartSpan =
    mode === 'record'
      ? new LeanTracer(
          new tracing.AlwaysOnSampler(),
          resources.defaultResource(),
          { name: TRACER_NAME },
          { write() {} },
        ).startSpan
      : (name, kind, attributes, parent) => tracer.startSpan(name, { kind, attributes }, parent);
  installTracing({ tracer, startSpan, shutdown: () => sdk.shutdown() });
}

/** One mode in this process: prints CPU µs per request on stdout. */
async function runMode(mode: Mode): Promise<void> {
  await startMode(mode);
  // Loaded after the SDK: the span API decides once, at load, whether tracing is on.
  const spans = await import('../lib/telemetry/spans.ts');
  const req = {
    method: 'POST',
    headers: { 'mcp-method': 'tools/call', 'mcp-name': 'echo' },
  } as unknown as IncomingMessage;
  let sink = 0;
  const request = (n: number) => {
    const context = new RequestContext(`bench-request-${n}`);
    const span = (context.span = spans.startRequestSpan(req, context.requestId));
    runInRequest(context, () => {
      const call = mode === 'one-span' ? undefined : spans.startMcpCallSpan(req);
      const headers = ['Host', 'mcp.example', 'Authorization', 'Bearer x'];
      spans.injectTraceparent(headers, call);
      spans.endMcpCallSpan(call, 'ok', 200);
      sink += headers.length;
    });
    // Garbage of the size a proxied request leaves behind, so the collector has its usual work.
    const garbage = [];
    for (let i = 0; i < 40; i++) garbage.push({ i, text: `header-${i}-${n}` });
    sink += garbage.length;
    spans.endRequestSpan(span, 'POST', 200, '/mcp', '/mcp');
  };
  const perTick = Math.max(1, Math.round((RATE * TICK_MS) / 1000));
  let n = 0;
  const paced = async (seconds: number) => {
    const until = performance.now() + seconds * 1000;
    while (performance.now() < until) {
      for (let i = 0; i < perTick; i++) request(n++);
      await new Promise((resolve) => setTimeout(resolve, TICK_MS));
    }
  };
  await paced(2); // JIT and the batch processor's first exports
  const before = process.cpuUsage();
  const first = n;
  await paced(SECONDS);
  const used = process.cpuUsage(before);
  process.stdout.write(`${((used.user + used.system) / (n - first)).toFixed(2)} ${sink > 0}\n`);
  process.exit(0);
}

async function main(): Promise<void> {
  const mode = process.env.BENCH_TRACING_MODE as Mode | undefined;
  if (mode) return runMode(mode);
  const sink = await startSink();
  const self = fileURLToPath(import.meta.url);
  const rounds = Number(process.env.BENCH_RUNS ?? 3);
  const modes = (process.env.BENCH_TRACING_MODES?.split(',') as Mode[] | undefined) ?? MODES;
  const extraArgs = process.env.BENCH_TRACING_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const results = new Map<Mode, number[]>(modes.map((m) => [m, []]));
  try {
    // Modes in turn, several rounds: outside load falls on all of them alike.
    for (let round = 0; round < rounds; round++) {
      for (const m of modes) {
        const child = spawnSync(process.execPath, [...PRODUCTION_NODE_ARGS, ...extraArgs, '--import', 'tsx', self], {
          env: { ...process.env, BENCH_TRACING_MODE: m, OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint },
          encoding: 'utf8',
        });
        const value = Number(child.stdout.trim().split(' ')[0]);
        if (child.status !== 0 || !Number.isFinite(value)) throw new Error(`${m}: ${child.stdout}${child.stderr}`);
        results.get(m)!.push(value);
      }
    }
  } finally {
    sink.stop();
  }
  const off = median(results.get('off')!);
  console.log(`\n${RATE} requests/s, ${SECONDS} s per mode, median of ${rounds} rounds; CPU µs per request`);
  console.log('mode       µs/request   added to off   runs');
  for (const m of modes) {
    const values = results.get(m)!;
    const value = median(values);
    console.log(
      `${m.padEnd(10)} ${value.toFixed(2).padStart(10)} ${(value - off).toFixed(2).padStart(14)}   ${values.map((v) => v.toFixed(1)).join(' ')}`,
    );
  }
}

await main();
