import { BATCH_VARIABLES, DEFAULT_SERVICE_NAME, tracingSettings } from '../telemetry/tracing-settings.ts';
import { Collector, type Checked, type Source } from './collector.ts';
import { parseHttpUrl, readInteger } from './parse.ts';
import type { TelemetryConfig } from './types.ts';

const SUPPORTED_PROTOCOL = 'http/protobuf';
/** RFC 9110 §5.6.2 token: what a header name may be. */
const TOKEN = /^[!#$%&'*+\-.^_`|~\w]+$/;

/**
 * The standard OpenTelemetry variables, read the way the OpenTelemetry SDK specification reads
 * them, limited to what this proxy exports: traces over OTLP/HTTP with protobuf bodies.
 */
export function checkTelemetry(source: Source): Checked<TelemetryConfig> {
  const c = new Collector(source);
  checkDisabled(c);
  const tracesEndpoint = readTracesEndpoint(c);
  checkProtocol(c);
  const headers = readHeaders(c);
  const serviceName = c.read('OTEL_SERVICE_NAME') ?? DEFAULT_SERVICE_NAME;
  checkBatching(c);
  return c.done({
    // Whether tracing runs is the preload's decision (it starts before configuration loads): one
    // rule, so what the configuration reports cannot drift from what the process does.
    enabled: tracingSettings(source.env).enabled,
    tracesEndpoint,
    headers,
    serviceName,
  });
}

/** `true` in any case turns tracing off, as in the Heroku proxy and the SDK specification. */
function checkDisabled(c: Collector): void {
  const raw = c.read('OTEL_SDK_DISABLED')?.toLowerCase();
  if (raw !== undefined && raw !== 'true' && raw !== 'false') c.report('OTEL_SDK_DISABLED', 'must be true or false');
}

/**
 * The signal-specific URL is used as given; the base URL gets `v1/traces` appended (OTLP
 * exporter specification, "Endpoint URLs for OTLP/HTTP").
 */
function readTracesEndpoint(c: Collector): string | undefined {
  let endpoint: string | undefined;
  const rawBase = c.read('OTEL_EXPORTER_OTLP_ENDPOINT');
  if (rawBase !== undefined) {
    const base = parseHttpUrl(c, 'OTEL_EXPORTER_OTLP_ENDPOINT', rawBase);
    if (base) endpoint = base.href.replace(/\/*$/, '/v1/traces');
  }
  const rawTraces = c.read('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  if (rawTraces !== undefined) {
    const traces = parseHttpUrl(c, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', rawTraces);
    endpoint = traces?.href;
  }
  return endpoint;
}

function checkProtocol(c: Collector): void {
  const raw = c.read('OTEL_EXPORTER_OTLP_PROTOCOL');
  if (raw !== undefined && raw !== SUPPORTED_PROTOCOL) {
    c.report(
      'OTEL_EXPORTER_OTLP_PROTOCOL',
      `only ${SUPPORTED_PROTOCOL} is supported (traces are sent over OTLP/HTTP with protobuf bodies; grpc and http/json are not)`,
    );
  }
}

/**
 * OTEL_EXPORTER_OTLP_HEADERS is `name=value,name2=value2` with percent-encoded values (W3C
 * Baggage style). The values are usually API keys: no message quotes any part of an entry.
 */
function readHeaders(c: Collector): Readonly<Record<string, string>> {
  const name = 'OTEL_EXPORTER_OTLP_HEADERS';
  const raw = c.read(name, { json: true });
  const headers: Record<string, string> = {};
  if (raw === undefined) return headers;
  raw.split(',').forEach((entry, index) => {
    if (entry.trim() === '') return;
    const equals = entry.indexOf('=');
    const key = equals < 0 ? '' : entry.slice(0, equals).trim();
    let value: string | undefined;
    try {
      value = decodeURIComponent(entry.slice(equals + 1).trim());
    } catch {
      value = undefined;
    }
    if (equals < 0 || !TOKEN.test(key)) {
      c.report(name, `entry ${index + 1} is not name=value with a valid header name`);
    } else if (value === undefined || /[\0\r\n]/.test(value)) {
      c.report(name, `entry ${index + 1} has a value that is not valid percent-encoding or holds a line break`);
    } else {
      headers[key.toLowerCase()] = value;
    }
  });
  return headers;
}

/**
 * The batch variables the span pipeline reads (lib/telemetry/span-pipeline.ts, which falls back to
 * their defaults on its own: it runs before configuration loads). Checked here so that a typo
 * stops the start with the other problems instead of batching by the default unnoticed.
 */
function checkBatching(c: Collector): void {
  for (const variable of Object.values(BATCH_VARIABLES)) readInteger(c, variable.name, variable);
}
