import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { McpRunConfig } from '../config/types.ts';
import { ProxyError } from '../http/errors.ts';
import { logChildLine } from '../telemetry/child-log.ts';
import { log as defaultLog, type Logger } from '../telemetry/log.ts';

/**
 * Supervision of the MCP server child process: spawn it with a scrubbed environment, relay its
 * output line by line, report it ready only once its port accepts connections, and stop it.
 * Deciding what to do when it dies (restart it, or give up) is `supervisor.ts`'s job.
 */

export interface McpServerExit {
  readonly code: number | null;
  readonly signal: string | null;
}

export interface McpServerProcess {
  readonly pid: number;
  /** Resolves (never rejects) once the child has exited, for whatever reason. */
  readonly exited: Promise<McpServerExit>;
  /** Sends `signal` (SIGTERM), then SIGKILL after `graceMs`; resolves once the child has exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<McpServerExit>;
}

export interface StartMcpServerOptions {
  readonly run: McpRunConfig;
  /** Where the child must listen; its port becomes the child's PORT unless `run.env` sets one. */
  readonly url: URL;
  /** The environment to inherit, before scrubbing. Defaults to `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  readonly readyTimeoutMs?: number;
  readonly log?: Logger;
  /** Aborted (the proxy is told to stop while still starting): the child is stopped too. */
  readonly signal?: AbortSignal;
}

export type McpServerStartErrorCode =
  'MCP_SERVER_SPAWN_FAILED' | 'MCP_SERVER_PORT_IN_USE' | 'MCP_SERVER_EXITED' | 'MCP_SERVER_READY_TIMEOUT';

export class McpServerStartError extends ProxyError {
  declare readonly code: McpServerStartErrorCode;
  constructor(
    code: McpServerStartErrorCode,
    message: string,
    readonly exit?: McpServerExit,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

const DEFAULT_READY_TIMEOUT_MS = 30_000;
const DEFAULT_STOP_GRACE_MS = 5_000;
const READY_POLL_INTERVAL_MS = 100;
const CONNECT_ATTEMPT_TIMEOUT_MS = 1_000;
// A child that never prints a newline must not make us buffer without bound.
const MAX_LINE_CHARS = 16 * 1024;

/**
 * The MCP server is third-party code: it gets none of the proxy's own credentials (upstream
 * client secret, signing keys, the Redis URL with its password). Whatever it needs must be given
 * to it explicitly through `run.env` (MCP_SERVER_RUN_ENV_JSON).
 */
const SECRET_PREFIXES = ['IDENTITY_', 'OIDC_PROVIDER_', 'MCP_AUTH_PROXY_'];
// The OTLP headers hold the tracing backend's API key (Honeycomb's `x-honeycomb-team`, …). An
// MCP server that traces itself is given its own key through MCP_SERVER_RUN_ENV_JSON.
const SECRET_NAMES = new Set(['REDIS_URL', 'OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS']);

export function childEnvironment(parent: NodeJS.ProcessEnv, run: McpRunConfig, url: URL): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value === undefined) continue;
    if (SECRET_NAMES.has(name) || SECRET_PREFIXES.some((prefix) => name.startsWith(prefix))) continue;
    env[name] = value;
  }
  Object.assign(env, run.env);
  if (run.env.PORT === undefined) env.PORT = String(portOf(url));
  return env;
}

function portOf(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

export async function startMcpServer(opts: StartMcpServerOptions): Promise<McpServerProcess> {
  const { run, url } = opts;
  const logger = (opts.log ?? defaultLog).child({ source: 'mcp-server' });
  const readyTimeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  // URL keeps IPv6 literals bracketed (`[::1]`); net.connect wants them bare.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = portOf(url);

  // Readiness is "the port accepts"; if something else already holds it, that check would pass
  // at once and we would proxy to a stranger (typically a previous run left behind).
  if (await canConnect(host, port)) {
    throw new McpServerStartError(
      'MCP_SERVER_PORT_IN_USE',
      `Cannot start the MCP server: ${host}:${port} already accepts connections (another process is listening there)`,
    );
  }

  let child: ChildProcess;
  try {
    child = spawn(run.command, [...run.args], {
      cwd: run.cwd,
      env: childEnvironment(opts.env ?? process.env, run, url),
      stdio: ['ignore', 'pipe', 'pipe'],
      // A shell command line gets a process group of its own, so that stop() can reach the server
      // the shell started (see `signalChild`).
      detached: run.shell === true,
    });
  } catch (error) {
    // Synchronous throws are argument problems (e.g. a NUL byte in the command).
    throw spawnFailed(run.command, error);
  }

  let running = false;
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', () => {
      running = true;
      resolve();
    });
    // After spawning, 'error' means a failed kill or similar; without a listener it would crash
    // the proxy.
    child.on('error', (error) => {
      if (running) logger.error('mcp server process error', { error });
      else reject(spawnFailed(run.command, error));
    });
  });

  // Its output becomes our lines (its JSON or logfmt fields merged, not quoted), scrubbed.
  relayLines(child.stdout!, (line) => logChildLine('stdout', line));
  relayLines(child.stderr!, (line) => logChildLine('stderr', line));

  const exited = new Promise<McpServerExit>((resolve) => {
    child.once('exit', (code, signal) => {
      const exit = { code, signal };
      logger.info('mcp server exited', { exit_code: code, signal });
      resolve(exit);
    });
  });

  await spawned;
  const pid = child.pid!;
  logger.info('mcp server started', { pid, command: run.command, port });

  // `/bin/sh -c 'cd /app && npm start'` does not pass SIGTERM on to npm: signalling the shell
  // alone would leave the server running on its port. The whole group is signalled instead.
  const signalChild = (signal: NodeJS.Signals) => {
    if (run.shell) {
      try {
        process.kill(-pid, signal);
        return;
      } catch {
        // The group is already gone; fall through to the child itself.
      }
    }
    child.kill(signal);
  };

  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = DEFAULT_STOP_GRACE_MS): Promise<McpServerExit> => {
    if (child.exitCode !== null || child.signalCode !== null) return exited;
    signalChild(signal);
    const timer = setTimeout(() => {
      logger.warn('mcp server did not exit in time; killing it', {
        pid,
        grace_ms: graceMs,
      });
      signalChild('SIGKILL');
    }, graceMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };

  // A SIGTERM to the proxy during the readiness wait must not orphan the child on its port.
  opts.signal?.addEventListener('abort', () => void stop(), { once: true });
  if (opts.signal?.aborted) void stop();

  const ready = await waitUntilReady(host, port, exited, readyTimeoutMs);
  if (ready !== 'ready') {
    if (ready === 'timeout') {
      await stop('SIGTERM', 2_000);
      throw new McpServerStartError(
        'MCP_SERVER_READY_TIMEOUT',
        `MCP server "${run.command}" did not accept connections on ${host}:${port} within ${readyTimeoutMs} ms; it was stopped`,
      );
    }
    throw new McpServerStartError(
      'MCP_SERVER_EXITED',
      `MCP server "${run.command}" exited before accepting connections on ${host}:${port} ` +
        `(exit code ${ready.code ?? 'none'}${ready.signal ? `, signal ${ready.signal}` : ''})`,
      ready,
    );
  }
  logger.info('mcp server ready', { pid, port });
  return { pid, exited, stop };
}

function spawnFailed(command: string, error: unknown): McpServerStartError {
  const reason = error instanceof Error ? error.message : String(error);
  return new McpServerStartError(
    'MCP_SERVER_SPAWN_FAILED',
    `Could not start the MCP server command "${command}": ${reason}`,
    undefined,
    { cause: error },
  );
}

async function waitUntilReady(
  host: string,
  port: number,
  exited: Promise<McpServerExit>,
  timeoutMs: number,
): Promise<'ready' | 'timeout' | McpServerExit> {
  let exit: McpServerExit | undefined;
  void exited.then((value) => (exit = value));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exit) return exit;
    if (await canConnect(host, port, Math.max(1, Math.min(CONNECT_ATTEMPT_TIMEOUT_MS, deadline - Date.now())))) {
      // Something accepted, but if our child died meanwhile it was not our child.
      return exit ?? 'ready';
    }
    if (exit) return exit;
    const remaining = deadline - Date.now();
    if (remaining <= 0) return 'timeout';
    await Promise.race([sleep(Math.min(READY_POLL_INTERVAL_MS, remaining)), exited]);
  }
}

/** Whether something accepts TCP connections at `url`'s host and port (the MCP server's readiness). */
export function acceptsConnections(url: URL, timeoutMs = CONNECT_ATTEMPT_TIMEOUT_MS): Promise<boolean> {
  return canConnect(url.hostname.replace(/^\[(.*)\]$/, '$1'), portOf(url), timeoutMs);
}

function canConnect(host: string, port: number, timeoutMs = CONNECT_ATTEMPT_TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Calls `emit` once per complete line, so two streams never interleave inside one log line. */
function relayLines(stream: NodeJS.ReadableStream, emit: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    pending += chunk;
    let newline: number;
    while ((newline = pending.indexOf('\n')) !== -1) {
      emitLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
    while (pending.length > MAX_LINE_CHARS) {
      emitLine(pending.slice(0, MAX_LINE_CHARS));
      pending = pending.slice(MAX_LINE_CHARS);
    }
  });
  stream.on('end', () => {
    if (pending) emitLine(pending);
    pending = '';
  });
  function emitLine(line: string): void {
    const trimmed = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (trimmed.trim() !== '') emit(trimmed);
  }
}
