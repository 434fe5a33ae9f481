/**
 * The tracing preload: `node --import ./lib/telemetry/tracing.ts lib/main.ts` (compiled:
 * `--import ./dist/lib/telemetry/tracing.js`). It must run before the application's modules load,
 * so that ioredis is instrumented when the store imports it. Given on the command line, never in
 * NODE_OPTIONS: the MCP server child inherits NODE_OPTIONS, and its tracing is its own business.
 *
 * Configured by the standard OpenTelemetry variables only, read here from the environment because
 * configuration has not loaded yet (lib/config validates the same variables on its own). With
 * OTEL_SDK_DISABLED=true or no OTLP endpoint, nothing is started and the SDK is not even loaded:
 * the span API then costs a branch per call.
 */
import { config as loadDotenv } from 'dotenv';
import { tracingSettings } from './tracing-settings.ts';

// The same rule as main.ts, earlier: `.env` is for local work, and a local OTEL_* belongs there.
if (process.env.NODE_ENV !== 'production') loadDotenv({ quiet: true });

const settings = tracingSettings(process.env);
if (settings.enabled) {
  const { startTracing } = await import('./sdk.ts');
  startTracing(settings);
} else if (settings.warning) {
  process.stderr.write(`level=warn msg=${JSON.stringify(settings.warning)}\n`);
}
