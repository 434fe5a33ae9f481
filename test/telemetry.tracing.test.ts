import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { expect } from 'chai';
import { DEFAULT_SERVICE_NAME, tracingSettings } from '../lib/telemetry/tracing-settings.ts';
import { decodeExport, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './helpers/otlp-receiver.ts';

/**
 * Tracing as an operator gets it: a real process started with the preload and the standard
 * OTEL_* variables, exporting over OTLP/HTTP (protobuf) to a loopback receiver. Its request goes
 * through the span API the proxy uses, a real ioredis command and a loopback MCP server stand-in.
 */

const CLIENT_TRACE_ID = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';

interface Run {
  child: ChildProcess;
  lines: string[];
  port: number;
}

async function startChild(env: Record<string, string>): Promise<Run> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--import', './lib/telemetry/tracing.ts', 'test/helpers/telemetry-child.ts'],
    {
      cwd: new URL('..', import.meta.url).pathname,
      env: { ...process.env, LOG_LEVEL: 'info', NODE_ENV: 'test', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const lines: string[] = [];
  let pending = '';
  const collect = (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const parts = pending.split('\n');
    pending = parts.pop()!;
    lines.push(...parts);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      const ready = lines.find((line) => line.startsWith('ready '));
      if (ready) {
        clearInterval(timer);
        resolve(Number(ready.slice(6)));
      }
    }, 20);
    child.once('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`child exited (${code}) before it was ready:\n${lines.join('\n')}`));
    });
  });
  return { child, lines, port };
}

async function stop({ child }: Run): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code] = await exited;
  expect(code, 'child exit code').to.equal(0);
}

describe('tracing (OTLP/HTTP export from a real process)', function () {
  this.timeout(30_000);
  let receiver: OtlpReceiver;
  const secret = `secret-${randomBytes(24).toString('base64url')}`;
  const sealed = `sealed-${randomBytes(24).toString('base64url')}`;
  const apiKey = `key-${randomBytes(16).toString('hex')}`;
  const prefix = `test:telemetry:${randomBytes(6).toString('hex')}`;

  beforeEach(async () => {
    receiver = await startOtlpReceiver();
  });
  afterEach(() => receiver.close());

  const request = (port: number) =>
    fetch(`http://127.0.0.1:${port}/mcp/session?code=${secret}&state=${secret}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${secret}`,
        cookie: `_session=${secret}`,
        'mcp-method': 'tools/call',
        'mcp-name': 'echo',
        'x-request-id': 'router-request-0001',
        traceparent: `00-${CLIENT_TRACE_ID}-bbbbbbbbbbbbbbbb-01`,
      },
      body: '{}',
    });

  /** The child with `env` (and the test's secrets), one traced request answered 200, then SIGTERM. */
  async function oneRequest(env: Record<string, string>): Promise<Run> {
    const run = await startChild({ ...env, TEST_KEY_PREFIX: prefix, TEST_SEALED_VALUE: sealed, TEST_SECRET: secret });
    const response = await request(run.port);
    expect(response.status).to.equal(200);
    await response.text();
    await stop(run);
    return run;
  }

  it('exports the request, its Redis command, the refresh and the MCP call as one trace, without secrets', async () => {
    const run = await oneRequest({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_HEADERS: `x-honeycomb-team=${apiKey}`,
    });
    expect(run.lines).to.include('tracing on');

    const spans = await receiver.waitFor((all) => all.length >= 4);
    const byName = (name: string) => spans.find((s) => s.name === name) as ReceivedSpan;
    const root = byName('POST /mcp');
    expect(root, 'request span').to.exist;
    expect(root.kind).to.equal(2);
    expect(root.parentSpanId).to.equal('');
    // A new trace: the client's traceparent is not adopted.
    expect(root.traceId).to.not.equal(CLIENT_TRACE_ID);
    expect(root.attributes).to.include({
      'http.request.method': 'POST',
      'http.route': '/mcp',
      'http.response.status_code': 200,
      'url.path': '/mcp/session?code&state',
      'request.id': 'router-request-0001',
    });
    expect(root.resource['service.name']).to.equal(DEFAULT_SERVICE_NAME);
    expect(root.resource['host.name'], 'the host detector').to.be.a('string');
    // Not the process detector: the command line is the operator's, not ours to publish.
    expect(Object.keys(root.resource).filter((key) => key.startsWith('process.'))).to.deep.equal([]);

    const redis = spans.find((s) => s.scope.includes('ioredis') && s.name === 'set') as ReceivedSpan;
    expect(redis, 'Redis SET span').to.exist;
    expect(redis.parentSpanId).to.equal(root.spanId);
    expect(redis.attributes['db.query.text']).to.equal('set');

    const refresh = byName('upstream.refresh');
    expect(refresh.parentSpanId).to.equal(root.spanId);
    expect(refresh.statusCode).to.equal(2);
    expect(refresh.attributes).to.include({ outcome: 'IDENTITY_TRANSIENT', 'grant.id_hash': 'abc' });
    expect(refresh.attributes).to.not.have.property('refresh_token');

    const call = byName('mcp tools/call echo');
    expect(call.kind).to.equal(3);
    expect(call.parentSpanId).to.equal(root.spanId);
    expect(call.attributes).to.include({
      'mcp.method.name': 'tools/call',
      'gen_ai.tool.name': 'echo',
      'mcp.proxy.outcome': 'ok',
    });
    for (const span of spans) expect(span.traceId, span.name).to.equal(root.traceId);

    // The MCP server got our call span's context, in place of the client's.
    expect(run.lines).to.include(`upstream-traceparent 00-${root.traceId}-${call.spanId}-01`);
    // The request's log lines name its trace.
    const logLine = run.lines.find((line) => line.includes('msg=request'));
    expect(logLine).to.include(`trace_id=${root.traceId}`).and.include('request_id=router-request-0001');
    const inside = run.lines.find((line) => line.includes('msg="calling the MCP server"'));
    expect(inside).to.include(`trace_id=${root.traceId}`).and.include('authorization=[redacted]');

    expect(receiver.exports.every((e) => e.headers['x-honeycomb-team'] === apiKey)).to.equal(true);
    expect(receiver.exports.every((e) => e.headers['content-type'] === 'application/x-protobuf')).to.equal(true);
    const exported = receiver.rawText();
    expect(exported.includes(secret), 'a request secret was exported').to.equal(false);
    expect(exported.includes(sealed), 'a Redis value was exported').to.equal(false);
    expect(exported.includes(prefix), 'a Redis key was exported').to.equal(false);
    expect(exported.includes(apiKey), 'the exporter header was exported').to.equal(false);
    expect(run.lines.filter((line) => line.includes(secret) || line.includes(sealed))).to.deep.equal([]);
  });

  it('tells the operator when the collector refuses the spans, in its status, never its words', async () => {
    // A collector that refuses the API key and echoes it back, in its status line and its body.
    receiver.answer(401, `unknown API key ${apiKey}`, `Unauthorized ${apiKey}`);
    const run = await oneRequest({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_HEADERS: `x-honeycomb-team=${apiKey}`,
    });
    // The spans went out at shutdown, and were refused: the line is written before the exit.
    expect(receiver.exports).to.have.length(1);
    const spans = decodeExport(receiver.exports[0]!.body).length;
    const failed = run.lines.filter((line) => line.includes('msg="trace export failed: spans dropped"'));
    expect(failed).to.have.length(1);
    expect(failed[0]).to.match(/^level=warn /);
    expect(failed[0]).to.include(`spans=${spans}`).and.include('status=401').and.include('error=Unauthorized');
    expect(run.lines.filter((line) => line.includes(apiKey))).to.deep.equal([]);
  });

  it('tells the operator of the spans a collector still had not taken at the shutdown deadline', async () => {
    receiver.answer('never');
    const started = performance.now();
    const run = await oneRequest({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, TEST_FLUSH_MS: '300' });
    expect(performance.now() - started, 'the deadline, not the export timeout (10 s)').to.be.below(5_000);
    expect(receiver.exports, 'the export reached the collector').to.have.length(1);
    const spans = decodeExport(receiver.exports[0]!.body).length;
    const failed = run.lines.filter((line) => line.includes('msg="trace export failed: spans dropped"'));
    expect(failed).to.have.length(1);
    expect(failed[0]).to.include(`spans=${spans}`).and.include('error="not delivered before the shutdown deadline"');
  });

  it('OTEL_SERVICE_NAME names the service', async () => {
    await oneRequest({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.endpoint}/v1/traces`,
      OTEL_SERVICE_NAME: 'weather-mcp',
    });
    const spans = await receiver.waitFor((all) => all.some((s) => s.name === 'POST /mcp'));
    expect(spans[0]!.resource['service.name']).to.equal('weather-mcp');
  });

  it('OTEL_TRACES_SAMPLER=always_off: nothing exported, and the MCP server gets our trace, unsampled', async () => {
    const run = await oneRequest({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_TRACES_SAMPLER: 'always_off' });
    expect(run.lines).to.include('tracing on');
    expect(receiver.exports).to.have.length(0);
    const traceparent = run.lines.find((line) => line.startsWith('upstream-traceparent '));
    expect(traceparent).to.match(/^upstream-traceparent 00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    expect(traceparent).to.not.include(CLIENT_TRACE_ID);
  });

  it('OTEL_LOG_LEVEL: the SDK’s diagnostics of a bad OTEL_TRACES_SAMPLER reach the log, once', async () => {
    const run = await oneRequest({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_LOG_LEVEL: 'warn',
      OTEL_TRACES_SAMPLER: 'always_onn',
    });
    expect(run.lines.filter((line) => line.includes('unknown OTEL_TRACES_SAMPLER value "always_onn"'))).to.have.length(
      1,
    );
    expect(run.lines.filter((line) => line.includes('logger will'))).to.deep.equal([]);
    // The default sampler: every request traced.
    expect(await receiver.waitFor((all) => all.some((s) => s.name === 'POST /mcp'))).to.not.be.empty;
  });

  it('OTEL_SDK_DISABLED=true: no SDK, nothing sent, the client traceparent passes untouched', async () => {
    const run = await oneRequest({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint });
    expect(run.lines).to.include('tracing off');
    expect(receiver.exports).to.have.length(0);
    expect(run.lines).to.include(`upstream-traceparent 00-${CLIENT_TRACE_ID}-bbbbbbbbbbbbbbbb-01`);
    const logLine = run.lines.find((line) => line.includes('msg=request'));
    expect(logLine).to.include('request_id=router-request-0001').and.not.include('trace_id=');
    const inside = run.lines.find((line) => line.includes('msg="calling the MCP server"'));
    expect(inside).to.include('request_id=router-request-0001').and.not.include('trace_id=');
  });
});

describe('tracing settings (the standard variables)', () => {
  const endpoint = 'https://api.honeycomb.io';

  it('is off without an endpoint, or when disabled', () => {
    expect(tracingSettings({}).enabled).to.equal(false);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' }).enabled).to.equal(false);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_SDK_DISABLED: 'TRUE' }).enabled).to.equal(
      false,
    );
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_TRACES_EXPORTER: 'none' }).enabled).to.equal(
      false,
    );
  });

  it('is on with either endpoint; the service name defaults unless named', () => {
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint })).to.deep.equal({
      enabled: true,
      serviceName: 'unnamed_mcp_remote_auth_proxy',
    });
    expect(
      tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${endpoint}/v1/traces`, OTEL_SERVICE_NAME: 'svc' }),
    ).to.deep.equal({ enabled: true, serviceName: 'svc' });
    // OTEL_RESOURCE_ATTRIBUTES may name the service; the SDK reads it, we must not override it.
    expect(
      tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_RESOURCE_ATTRIBUTES: 'team=a,service.name=x' }),
    ).to.deep.equal({ enabled: true, serviceName: undefined });
  });

  it('refuses a protocol other than http/protobuf, saying so', () => {
    const settings = tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' });
    expect(settings).to.deep.equal({
      enabled: false,
      warning: 'tracing is off: OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported, only http/protobuf',
    });
  });
});
