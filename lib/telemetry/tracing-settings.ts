/** The default `service.name`, the one the Heroku MCP auth proxy reports under. */
export const DEFAULT_SERVICE_NAME = 'unnamed_mcp_remote_auth_proxy';

/**
 * The batch variables the span pipeline reads (span-pipeline.ts), each with its least value and the
 * default the OpenTelemetry specification gives it: declared once for the pipeline, which reads
 * them before configuration loads, and for the configuration, which refuses a bad value.
 */
export const BATCH_VARIABLES = {
  batchSize: { name: 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', min: 1, fallback: 512, unit: 'spans per export' },
  delayMs: { name: 'OTEL_BSP_SCHEDULE_DELAY', min: 0, fallback: 5000, unit: 'milliseconds' },
} as const;

export type TracingSettings = { enabled: true; serviceName: string | undefined } | { enabled: false; warning?: string };

/**
 * Whether to trace, from the standard variables. `serviceName` is undefined when
 * OTEL_RESOURCE_ATTRIBUTES names the service itself (the specification lets it, and
 * OTEL_SERVICE_NAME wins over it); otherwise OTEL_SERVICE_NAME or our default.
 */
export function tracingSettings(env: NodeJS.ProcessEnv): TracingSettings {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return { enabled: false };
  if (!env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() && !env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim()) {
    return { enabled: false };
  }
  if (env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === 'none') return { enabled: false };
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL)?.trim();
  if (protocol && protocol !== 'http/protobuf') {
    return {
      enabled: false,
      warning: `tracing is off: OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported, only http/protobuf`,
    };
  }
  const named = env.OTEL_SERVICE_NAME?.trim();
  if (named) return { enabled: true, serviceName: named };
  const fromResource = /(^|,)\s*service\.name\s*=/.test(env.OTEL_RESOURCE_ATTRIBUTES ?? '');
  return { enabled: true, serviceName: fromResource ? undefined : DEFAULT_SERVICE_NAME };
}
