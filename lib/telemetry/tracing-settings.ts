/** The default `service.name`, the one the Heroku MCP auth proxy reports under. */
export const DEFAULT_SERVICE_NAME = 'unnamed_mcp_remote_auth_proxy';

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
