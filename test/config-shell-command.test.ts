import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { startMcpServer, type McpServerProcess } from '../lib/mcp-server/process.ts';
import { freePort } from './helpers/stack.ts';
import { canConnect, eventually, isAlive } from './helpers/web-process.ts';

/**
 * MCP_SERVER_RUN_COMMAND in the two forms of the Heroku proxy's documentation, run as real child
 * processes: a shell command line, and a program with JSON arguments and a JSON environment
 * holding a number.
 */

/** Listens on LISTEN_PORT (or PORT) and records its pid and working directory in state.json. */
const SERVER = `
const { writeFileSync } = require('node:fs');
const port = Number(process.env.LISTEN_PORT ?? process.env.PORT);
require('node:net').createServer().listen(port, '127.0.0.1', () => {
  writeFileSync('state.json', JSON.stringify({ pid: process.pid, cwd: process.cwd(), port: process.env.PORT }));
});
`;

/** A path quoted for /bin/sh. */
const quoted = (path: string) => `'${path.replaceAll("'", `'\\''`)}'`;

describe('configuration: MCP_SERVER_RUN_COMMAND with a real child process', () => {
  let dir: string;
  const started: McpServerProcess[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'config-shell-'));
    writeFileSync(join(dir, 'server.cjs'), SERVER);
  });

  afterEach(async () => {
    await Promise.all(started.splice(0).map((child) => child.stop('SIGKILL', 0)));
    rmSync(dir, { recursive: true, force: true });
  });

  /** What the server recorded in state.json, once it is listening (a read may catch the file half-written). */
  async function serverState(): Promise<Record<string, unknown>> {
    let state: Record<string, unknown> | undefined;
    await eventually(() => {
      try {
        state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as Record<string, unknown>;
        return typeof state.pid === 'number';
      } catch {
        return false;
      }
    });
    return state!;
  }

  it('runs a shell command line verbatim (cd, &&, NAME=value) and stop() ends the server it started', async () => {
    const port = await freePort();
    const config = loadConfig({
      MCP_SERVER_URL: `http://127.0.0.1:${port}/mcp`,
      MCP_SERVER_RUN_COMMAND: `cd ${quoted(dir)} && LISTEN_PORT=${port} ${quoted(process.execPath)} server.cjs`,
    });
    expect(config.mcp.run?.shell).to.equal(true);

    const child = await startMcpServer({ run: config.mcp.run!, url: config.mcp.serverUrl, env: process.env });
    started.push(child);
    const server = await serverState();
    expect(server.cwd).to.equal(dir);
    // The shell forked the server: without signalling the group, stop() would orphan it.
    expect(server.pid).not.to.equal(child.pid);
    expect(await canConnect(port)).to.equal(true);

    await child.stop();
    await eventually(() => !isAlive(server.pid as number));
    expect(await canConnect(port)).to.equal(false);
  });

  it('runs a program with MCP_SERVER_RUN_ARGS_JSON directly, with numbers in MCP_SERVER_RUN_ENV_JSON as text', async () => {
    const port = await freePort();
    const config = loadConfig({
      MCP_SERVER_URL: `http://127.0.0.1:${port}/mcp`,
      MCP_SERVER_RUN_COMMAND: process.execPath,
      MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['server.cjs']),
      MCP_SERVER_RUN_DIR: dir,
      MCP_SERVER_RUN_ENV_JSON: `{"PORT":${port}}`,
    });
    expect(config.mcp.run).to.deep.include({ shell: false, env: { PORT: String(port) } });

    const child = await startMcpServer({ run: config.mcp.run!, url: config.mcp.serverUrl, env: process.env });
    started.push(child);
    expect(await serverState()).to.deep.equal({ pid: child.pid, cwd: dir, port: String(port) });
    await child.stop();
    expect(await canConnect(port)).to.equal(false);
  });
});
