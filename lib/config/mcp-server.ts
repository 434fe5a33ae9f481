import { fileURLToPath } from 'node:url';
import { isLoopbackHost } from '../http/loopback.ts';
import { Collector, type Checked, type Source } from './collector.ts';
import { DEFAULT_PORT } from './listener.ts';
import { readRun } from './mcp-run.ts';
import { effectivePort, parseHttpUrl } from './parse.ts';
import { reservedPrefixOf } from './routes.ts';
import type { McpConfig, McpRunConfig } from './types.ts';
import { exampleOf } from './variables.ts';

// Run from sources (tsx) or from the build (dist/): the example server is beside us either way.
const RUNNING_FROM_SOURCE = import.meta.url.endsWith('.ts');
const EXAMPLE_MCP_SERVER = fileURLToPath(
  new URL(`../dev/example-mcp-server.${RUNNING_FROM_SOURCE ? 'ts' : 'js'}`, import.meta.url),
);

const RUN_OPTIONS = ['MCP_SERVER_RUN_ARGS_JSON', 'MCP_SERVER_RUN_DIR', 'MCP_SERVER_RUN_ENV_JSON'];

/** MCP_SERVER_URL and MCP_SERVER_RUN_*: the MCP server behind `/mcp`, and how to start it. */
export function checkMcpServer(
  source: Source,
  port: number | undefined,
  baseUrl: string | undefined,
): Checked<McpConfig | undefined> {
  const c = new Collector(source);
  return c.done(readMcp(c, port, baseUrl));
}

function readMcp(c: Collector, port: number | undefined, baseUrl: string | undefined): McpConfig | undefined {
  const rawUrl = c.read('MCP_SERVER_URL');
  const command = c.read('MCP_SERVER_RUN_COMMAND');

  let run: McpRunConfig | undefined;
  if (command === undefined) {
    for (const name of RUN_OPTIONS) {
      if (c.read(name, { json: true }) !== undefined) {
        c.report(
          name,
          'is set but MCP_SERVER_RUN_COMMAND is not: it only applies to a started server',
          `MCP_SERVER_RUN_COMMAND=${exampleOf('MCP_SERVER_RUN_COMMAND')}`,
        );
      }
    }
  } else {
    run = readRun(c, command);
  }

  if (rawUrl === undefined) {
    if (command !== undefined) {
      c.report('MCP_SERVER_URL', 'is required when MCP_SERVER_RUN_COMMAND is set: where the started server listens');
      return undefined;
    }
    if (c.production) {
      c.report('MCP_SERVER_URL', 'is required in production: the example MCP server is for development only');
      c.report(
        'MCP_SERVER_RUN_COMMAND',
        'is required in production unless MCP_SERVER_URL is a server that is already running',
      );
      return undefined;
    }
    if (RUN_OPTIONS.some((name) => c.read(name, { json: true }) !== undefined)) return undefined;
    return exampleServer(c, port ?? DEFAULT_PORT, baseUrl);
  }

  const serverUrl = parseHttpUrl(c, 'MCP_SERVER_URL', rawUrl);
  if (!serverUrl) return undefined;
  const path = serverUrl.pathname.replace(/\/+$/, '');
  let valid = true;
  if (path === '') {
    c.report('MCP_SERVER_URL', 'must include the path of the MCP endpoint; / alone is not allowed');
    valid = false;
  }
  const reserved = reservedPrefixOf(path);
  if (reserved) {
    c.report('MCP_SERVER_URL', `its path ${path} collides with the proxy's own ${reserved} routes`);
    valid = false;
  }
  if (port !== undefined && isSelf(serverUrl, port)) {
    c.report(
      'MCP_SERVER_URL',
      `points at the proxy itself (loopback port ${port} is PORT): the MCP server needs a port of its own`,
    );
    valid = false;
  }
  if (baseUrl && (serverUrl.origin + serverUrl.pathname).startsWith(baseUrl + '/')) {
    c.report('MCP_SERVER_URL', 'points at the proxy’s own public URL (BASE_URL): requests would loop');
    valid = false;
  }
  if (serverUrl.protocol === 'http:' && !isLoopbackHost(serverUrl.hostname)) {
    // Not refused: Heroku Private Spaces reach other dynos over plain http on the internal
    // network. But the upstream bearer token travels with every request.
    c.warn(
      `MCP_SERVER_URL is plain http to a non-loopback host (${serverUrl.host}): upstream tokens travel unencrypted`,
    );
  }
  if (!valid || baseUrl === undefined) return undefined;
  return { serverUrl, resourceUrl: baseUrl + path, path, run, example: false };
}

function isSelf(url: URL, port: number): boolean {
  const local = isLoopbackHost(url.hostname) || url.hostname === '0.0.0.0' || url.hostname === '[::]';
  return local && effectivePort(url) === port;
}

function exampleServer(c: Collector, port: number, baseUrl: string | undefined): McpConfig | undefined {
  const examplePort = port === 0 || port + 1 > 65535 ? 3001 : port + 1;
  const serverUrl = new URL(`http://127.0.0.1:${examplePort}/mcp`);
  c.warn(
    `MCP_SERVER_URL and MCP_SERVER_RUN_COMMAND are unset: using the example MCP server at ${serverUrl.href} (development only)`,
  );
  if (baseUrl === undefined) return undefined;
  return {
    serverUrl,
    resourceUrl: `${baseUrl}/mcp`,
    path: '/mcp',
    run: {
      command: process.execPath,
      args: RUNNING_FROM_SOURCE ? ['--import', 'tsx', EXAMPLE_MCP_SERVER] : [EXAMPLE_MCP_SERVER],
      shell: false,
      cwd: undefined,
      env: { PORT: String(examplePort) },
    },
    example: true,
  };
}
