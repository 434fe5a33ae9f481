import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { afterEach, describe, it } from 'mocha';
import type { McpRunConfig } from '../lib/config/types.ts';
import { captureLogs, type Logger } from '../lib/telemetry/log.ts';
import {
  childEnvironment,
  McpServerStartError,
  startMcpServer,
  type McpServerProcess,
} from '../lib/mcp-server/process.ts';
import { freePort } from './helpers/stack.ts';
import { canConnect, eventually, isAlive } from './helpers/web-process.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const exampleServer = fileURLToPath(new URL('../lib/dev/example-mcp-server.ts', import.meta.url));

interface Line {
  msg: string;
  fields: Record<string, unknown>;
}

function capturingLogger(lines: Line[], base: Record<string, unknown> = {}): Logger {
  const write = (msg: string, fields?: Record<string, unknown>): void => {
    lines.push({ msg, fields: { ...base, ...fields } });
  };
  return {
    debug: write,
    info: write,
    warn: write,
    error: write,
    child: (f) => capturingLogger(lines, { ...base, ...f }),
  };
}

/**
 * The MCP server's output as it reaches the log: our own lines (`logChildLine`), parsed back from
 * logfmt. Installed for one test; `restore` puts the real sink back.
 */
function relayedOutput(): { lines: Line[]; restore: () => void } {
  const lines: Line[] = [];
  const restore = captureLogs((line) => {
    const fields: Record<string, unknown> = {};
    for (const [, key, value] of line.matchAll(/([\w.@-]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
      fields[key!] = value!.startsWith('"') ? JSON.parse(value!) : value;
    }
    lines.push({ msg: String(fields.msg ?? ''), fields });
  });
  return { lines, restore };
}

function node(script: string, env: Record<string, string> = {}): McpRunConfig {
  return {
    command: process.execPath,
    args: ['-e', script],
    cwd: repoRoot,
    env,
  };
}

const LISTEN = "require('net').createServer().listen(Number(process.env.PORT), '127.0.0.1');";

async function rejection(promise: Promise<unknown>): Promise<McpServerStartError> {
  try {
    await promise;
  } catch (error) {
    expect(error).to.be.instanceOf(McpServerStartError);
    return error as McpServerStartError;
  }
  throw new Error('expected a rejection');
}

describe('MCP server process supervision', () => {
  const started: McpServerProcess[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((child) => child.stop('SIGKILL', 0)));
  });

  it('resolves only once the example MCP server accepts TCP connections, and stop() ends it', async () => {
    const port = await freePort();
    const lines: Line[] = [];
    const child = await startMcpServer({
      run: {
        command: process.execPath,
        args: ['--import', 'tsx', exampleServer],
        cwd: repoRoot,
        env: {},
      },
      url: new URL(`http://127.0.0.1:${port}/mcp`),
      log: capturingLogger(lines),
    });
    started.push(child);

    expect(await canConnect(port)).to.equal(true);
    expect(child.pid).to.be.a('number');
    expect(lines.some((l) => l.msg === 'mcp server ready' && l.fields.source === 'mcp-server')).to.equal(true);

    const exit = await child.stop();
    // The example server installs no SIGTERM handler, so the signal itself ends it.
    expect(exit).to.deep.equal({ code: null, signal: 'SIGTERM' });
    expect(await child.exited).to.deep.equal(exit);
    expect(isAlive(child.pid)).to.equal(false);
    expect(await canConnect(port)).to.equal(false);
  });

  it('does not count output as readiness: a child that prints but never listens times out and is killed', async () => {
    const port = await freePort();
    const lines: Line[] = [];
    const output = relayedOutput();
    let error: McpServerStartError;
    try {
      error = await rejection(
        startMcpServer({
          run: node("console.log('booting…'); setInterval(() => {}, 1000);"),
          url: new URL(`http://127.0.0.1:${port}/`),
          // Long enough for node to boot and print even on a loaded machine.
          readyTimeoutMs: 2_000,
          log: capturingLogger(lines),
        }),
      );
    } finally {
      output.restore();
    }
    expect(error.code).to.equal('MCP_SERVER_READY_TIMEOUT');
    expect(error.message).to.contain(`127.0.0.1:${port}`).and.contain('2000 ms');
    expect(
      output.lines.some(
        (l) => l.msg === 'booting…' && l.fields.stream === 'stdout' && l.fields.source === 'mcp-server',
      ),
    ).to.equal(true);
    const pid = lines.find((l) => l.msg === 'mcp server started')?.fields.pid as number;
    expect(isAlive(pid)).to.equal(false);
  });

  it('rejects with the exit code when the child exits before it is ready', async () => {
    const port = await freePort();
    const error = await rejection(
      startMcpServer({
        run: node("console.error('missing API key'); process.exit(3);"),
        url: new URL(`http://127.0.0.1:${port}/`),
        log: capturingLogger([]),
      }),
    );
    expect(error.code).to.equal('MCP_SERVER_EXITED');
    expect(error.message).to.contain('exit code 3');
    expect(error.exit).to.deep.equal({ code: 3, signal: null });
  });

  it('rejects naming the command when it cannot be spawned', async () => {
    const port = await freePort();
    const error = await rejection(
      startMcpServer({
        run: {
          command: 'definitely-not-an-mcp-server-xyz',
          args: [],
          cwd: repoRoot,
          env: {},
        },
        url: new URL(`http://127.0.0.1:${port}/`),
        log: capturingLogger([]),
      }),
    );
    expect(error.code).to.equal('MCP_SERVER_SPAWN_FAILED');
    expect(error.message).to.contain('"definitely-not-an-mcp-server-xyz"').and.contain('ENOENT');
  });

  it('refuses to start when something else already listens on the port', async () => {
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    const { port } = squatter.address() as net.AddressInfo;
    try {
      const lines: Line[] = [];
      const error = await rejection(
        startMcpServer({
          run: node(LISTEN),
          url: new URL(`http://127.0.0.1:${port}/`),
          log: capturingLogger(lines),
        }),
      );
      expect(error.code).to.equal('MCP_SERVER_PORT_IN_USE');
      expect(lines.some((l) => l.msg === 'mcp server started')).to.equal(false);
    } finally {
      squatter.close();
    }
  });

  it("strips the proxy's secrets from the child's environment, adds run.env and PORT", async () => {
    const port = await freePort();
    const output = relayedOutput();
    const child = await startMcpServer({
      run: node(`console.log(JSON.stringify(process.env)); ${LISTEN}`, {
        FROM_RUN: 'yes',
      }),
      url: new URL(`http://127.0.0.1:${port}/mcp`),
      env: {
        PATH: process.env.PATH,
        KEEP_ME: 'kept',
        IDENTITY_CLIENT_SECRET: 'upstream-secret',
        OIDC_PROVIDER_JWKS: '{"keys":[]}',
        MCP_AUTH_PROXY_REDIS_URL: 'redis://x',
        REDIS_URL: 'redis://:password@redis:6379',
        REDIS_TLS_REJECT_UNAUTHORIZED: 'true',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'https://api.honeycomb.io',
        OTEL_EXPORTER_OTLP_HEADERS: 'x-honeycomb-team=proxy-key',
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-honeycomb-team=proxy-key',
      },
      log: capturingLogger([]),
    });
    started.push(child);

    // The child's JSON line arrives as our line, its keys as our fields.
    let env: Record<string, unknown> | undefined;
    try {
      await eventually(() => {
        env = output.lines.find((l) => l.fields.stream === 'stdout' && l.fields.KEEP_ME !== undefined)?.fields;
        return env !== undefined;
      });
    } finally {
      output.restore();
    }
    expect(env).to.include({
      KEEP_ME: 'kept',
      FROM_RUN: 'yes',
      PORT: String(port),
      REDIS_TLS_REJECT_UNAUTHORIZED: 'true',
      // Where to send traces is no secret; the key in the headers is the proxy's.
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://api.honeycomb.io',
    });
    for (const name of [
      'IDENTITY_CLIENT_SECRET',
      'OIDC_PROVIDER_JWKS',
      'MCP_AUTH_PROXY_REDIS_URL',
      'REDIS_URL',
      'OTEL_EXPORTER_OTLP_HEADERS',
      'OTEL_EXPORTER_OTLP_TRACES_HEADERS',
    ]) {
      expect(env).to.not.have.property(name);
    }
  });

  it('lets run.env choose PORT, and defaults PORT from the URL scheme', () => {
    const run = (env: Record<string, string>): McpRunConfig => ({
      command: 'x',
      args: [],
      cwd: undefined,
      env,
    });
    expect(childEnvironment({}, run({ PORT: '9999' }), new URL('http://127.0.0.1:3000/')).PORT).to.equal('9999');
    expect(childEnvironment({ PORT: '5000' }, run({}), new URL('http://127.0.0.1:3000/')).PORT).to.equal('3000');
    expect(childEnvironment({}, run({}), new URL('http://127.0.0.1/')).PORT).to.equal('80');
  });

  it('logs output one whole line at a time, however the child chunks its writes', async () => {
    const port = await freePort();
    const lines: Line[] = [];
    const script =
      "process.stdout.write('hel'); setTimeout(() => process.stdout.write('lo\\r\\nwor'), 50);" +
      "setTimeout(() => { process.stdout.write('ld\\nno newline at end'); process.stderr.write('err line\\n'); }, 100);" +
      'setTimeout(() => process.exit(0), 150);';
    const output = relayedOutput();
    try {
      await rejection(
        startMcpServer({
          run: node(script),
          url: new URL(`http://127.0.0.1:${port}/`),
          log: capturingLogger(lines),
        }),
      );
      await eventually(() => output.lines.some((l) => l.msg === 'no newline at end'));
    } finally {
      output.restore();
    }
    const stdout = output.lines.filter((l) => l.fields.stream === 'stdout').map((l) => l.msg);
    expect(stdout).to.deep.equal(['hello', 'world', 'no newline at end']);
    expect(output.lines.filter((l) => l.fields.stream === 'stderr').map((l) => l.msg)).to.deep.equal(['err line']);
    expect([...lines, ...output.lines].every((l) => l.fields.source === 'mcp-server')).to.equal(true);
  });

  it('resolves exited when a ready child dies on its own', async () => {
    const port = await freePort();
    const child = await startMcpServer({
      run: node(`${LISTEN} setTimeout(() => process.exit(7), 300);`),
      url: new URL(`http://127.0.0.1:${port}/`),
      log: capturingLogger([]),
    });
    started.push(child);
    expect(await child.exited).to.deep.equal({ code: 7, signal: null });
  });

  it('stop() escalates to SIGKILL when the child ignores SIGTERM', async () => {
    const port = await freePort();
    const child = await startMcpServer({
      run: node(`process.on('SIGTERM', () => {}); ${LISTEN}`),
      url: new URL(`http://127.0.0.1:${port}/`),
      log: capturingLogger([]),
    });
    started.push(child);
    const begun = Date.now();
    expect(await child.stop('SIGTERM', 300)).to.deep.equal({
      code: null,
      signal: 'SIGKILL',
    });
    expect(Date.now() - begun).to.be.at.least(250);
  });
});
