import { createRequire } from 'node:module';
import { diag, DiagConsoleLogger, trace } from '@opentelemetry/api';
import { diagLogLevelFromString, getStringFromEnv } from '@opentelemetry/core';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { NodeSDK, resources, tracing } from '@opentelemetry/sdk-node';
// Not in the package's index: the function NodeSDK itself calls to read OTEL_TRACES_SAMPLER, used
// here so that the lean tracer's spans and the SDK's are sampled by the one sampler it builds.
import { createSamplerFromEnv } from '@opentelemetry/sdk-node/build/src/create-from-env.js';
import { RequestContextManager } from './context-manager.ts';
import { ExportFailures, type WriteLine } from './export-failures.ts';
import { LeanTracer } from './lean-tracer.ts';
import { EncodingSpanProcessor, spanPipelineSettings, type EncodedBatch } from './span-pipeline.ts';
import { installTracing } from './tracing-handle.ts';
import type { TracingSettings } from './tracing-settings.ts';

/** The instrumentation scope our own spans are reported under. */
export const TRACER_NAME = 'mcp-remote-auth-proxy';

/**
 * Starts the SDK for traces only. Loaded by the preload when tracing is on, never otherwise.
 *
 * - Traces only: metrics and logs readers are given empty lists, or the SDK would start OTLP
 *   metric and log exporters of its own from the same endpoint.
 * - Spans are written as OTLP protobuf when they end and sent in batches by the OTLP/HTTP
 *   exporter's transport (span-pipeline.ts), not queued as objects in the SDK's batch processor:
 *   with every request sampled, holding the span objects was the larger part of tracing's cost.
 * - No HTTP auto-instrumentation: the request span and the MCP call span are made by hand (see
 *   spans.ts). instrumentation-http wraps every request and response, parses headers into
 *   attributes (URLs with their query strings among them) and spans every outbound call, the
 *   identity provider's token requests included; on `/mcp`, where the proxy's own work is small,
 *   that is most of the cost, for less information than the manual spans carry.
 * - Redis commands are spanned (ioredis), under a request only (`requireParentSpan`): the
 *   subscriber's and health checks' commands would otherwise be traces of their own.
 * - Resource: service name, the host (the dyno) and OTEL_RESOURCE_ATTRIBUTES. Not the process
 *   detector: it exports the command line, which is the operator's, not ours to publish.
 * - Each request's two spans (its own and its MCP call's) come from the lean tracer
 *   (lean-tracer.ts), given the sampler, resource and scope the SDK has: the SDK's tracer makes
 *   the rest.
 * - The context manager falls back to the request being served (context-manager.ts): a request's
 *   span is the parent of the spans made for it without a context of OpenTelemetry's per request.
 * - A failed export is logged (export-failures.ts): the SDK tells only its diagnostic logger,
 *   silent unless OTEL_LOG_LEVEL is set, and spans would stop arriving with nothing saying why.
 */
export function startTracing(settings: Extract<TracingSettings, { enabled: true }>): void {
  const processor = new EncodingSpanProcessor(
    otlpHttpExporter(),
    spanPipelineSettings(process.env),
    new ExportFailures(writeLogLine),
  );
  // The SDK's diagnostic logger (OTEL_LOG_LEVEL), as NodeSDK's constructor installs it, for what the
  // sampler and the detectors below say of a bad OTEL_TRACES_SAMPLER or OTEL_RESOURCE_ATTRIBUTES;
  // removed before the constructor installs it again, which would warn of one already there.
  const logLevel = getStringFromEnv('OTEL_LOG_LEVEL');
  if (logLevel) diag.setLogger(new DiagConsoleLogger(), { logLevel: diagLogLevelFromString(logLevel) });
  // What NodeSDK would build from these detectors and the service name, built here because the lean
  // tracer's spans need the very objects the SDK's spans carry.
  let resource = resources
    .defaultResource()
    .merge(resources.detectResources({ detectors: [resources.envDetector, resources.hostDetector] }));
  if (settings.serviceName) {
    resource = resource.merge(resources.resourceFromAttributes({ 'service.name': settings.serviceName }));
  }
  // The TracerProvider's own default when OTEL_TRACES_SAMPLER is unset.
  const sampler = createSamplerFromEnv() ?? new tracing.ParentBasedSampler({ root: new tracing.AlwaysOnSampler() });
  diag.disable();
  const sdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    sampler,
    contextManager: new RequestContextManager(),
    spanProcessors: [processor],
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [
      new IORedisInstrumentation({
        requireParentSpan: true,
        // Command name only. The default serializer keeps arguments of many commands (all of
        // EVAL's, SET's key, and so on): values are sealed tokens and grant records, and keys
        // embed hashed token ids — neither belongs in a tracing backend (R23).
        dbStatementSerializer: (command) => command,
      }),
    ],
  });
  sdk.start();
  // The store imports ioredis as an ES module; the instrumentation patches it through require.
  // Requiring it here, after the patch is in place, loads the one shared copy patched, and the
  // store's import then finds it in the module cache.
  createRequire(import.meta.url)('ioredis');
  const tracer = trace.getTracer(TRACER_NAME);
  // The SDK's tracer names its scope in a public field; the same object for the lean tracer's spans.
  const scope = (tracer as { instrumentationScope?: tracing.ReadableSpan['instrumentationScope'] })
    .instrumentationScope ?? { name: TRACER_NAME };
  installTracing({
    tracer,
    startSpan: new LeanTracer(sampler, resource, scope, processor).startSpan,
    shutdown: async (deadlineMs) => {
      const started = performance.now();
      await loadLogger();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(
          () => {
            processor.abandon();
            resolve();
          },
          Math.max(0, deadlineMs - (performance.now() - started)),
        );
        timer.unref();
        sdk
          .shutdown()
          .then(resolve, resolve)
          .finally(() => clearTimeout(timer));
      });
    },
  });
}

/**
 * The logger, loaded when the first line is written, not with this module: log.ts loads spans.ts,
 * which decides once, as it loads, whether tracing is on. Loaded here, in the preload, it would
 * decide before `installTracing` ran, and the application would never make a span. A failed export
 * comes after the application has made spans, so after it has loaded both; so does shutdown, which
 * loads it first, so that its last lines are written before the process exits. Neither throws
 * nor rejects: a line that cannot be written has nowhere else to go.
 */
let logWrite: WriteLine | undefined;

async function loadLogger(): Promise<void> {
  logWrite ??= (await import('./log.ts').catch(() => undefined))?.write;
}

const writeLogLine: WriteLine = (level, msg, fields) => {
  if (!logWrite) return loadLogger().then(() => logWrite && writeLogLine(level, msg, fields));
  try {
    logWrite(level, msg, fields);
  } catch {
    // See above: nowhere else to go.
  }
  return undefined;
};

/**
 * The OTLP/HTTP trace exporter's delivery, as `@opentelemetry/exporter-trace-otlp-proto` builds it
 * (the same option conversion, so the same OTEL_EXPORTER_OTLP_[TRACES_]* variables: endpoint and
 * `/v1/traces`, headers, timeout, compression; the same retrying HTTP transport and limit of
 * exports in flight), given batches already encoded by the span pipeline instead of span objects.
 * The collector's answer (partial success) is read by the exporter's own deserializer.
 */
function otlpHttpExporter() {
  return createOtlpHttpExportDelegate<EncodedBatch, ReturnType<typeof ProtobufTraceSerializer.deserializeResponse>>(
    convertLegacyHttpOptions({}, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' }),
    {
      serializeRequest: (batch) => batch.bytes,
      deserializeResponse: (data) => ProtobufTraceSerializer.deserializeResponse(data),
    },
    'otlp_http_span_exporter',
    { name: 'span', countItems: (batch) => batch.spans },
    undefined,
  );
}
