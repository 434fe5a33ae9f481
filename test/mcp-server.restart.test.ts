import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { Logger } from '../lib/telemetry/log.ts';
import { superviseMcpServer, type McpServerSupervisor } from '../lib/mcp-server/supervisor.ts';
import { connectClient, freePort, freePortPair, TestOAuthClient } from './helpers/stack.ts';
import { eventually, isAlive, sleep, WebProcess } from './helpers/web-process.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

function capturingLogger(lines: string[]): Logger {
  const write = (msg: string, fields?: Record<string, unknown>) =>
    void lines.push(`${msg} ${JSON.stringify(fields ?? {})}`);
  const logger: Logger = { debug: write, info: write, warn: write, error: write, child: () => logger };
  return logger;
}

/** Listens on PORT, then exits with 3 after `lifeMs`. */
const shortLived = (lifeMs: number) =>
  `require('net').createServer().listen(Number(process.env.PORT), '127.0.0.1', () => setTimeout(() => process.exit(3), ${lifeMs}))`;

describe('MCP server restarts (supervisor)', function () {
  this.timeout(60_000);
  const supervisors: McpServerSupervisor[] = [];
  afterEach(async () => {
    await Promise.all(supervisors.splice(0).map((s) => s.stop(0)));
  });

  it('restarts a crashed child with growing pauses, and gives up after repeated crashes with one line', async function () {
    const lines: string[] = [];
    const supervisor = await superviseMcpServer({
      run: { command: process.execPath, args: ['-e', shortLived(200)], cwd: repoRoot, env: {} },
      url: new URL(`http://127.0.0.1:${await freePort()}/mcp`),
      log: capturingLogger(lines),
      backoffMs: 100,
    });
    supervisors.push(supervisor);
    expect(supervisor.isReady()).to.equal(true);
    const reason = await supervisor.gaveUp;
    expect(reason).to.equal('MCP server exited 3 times within 60 s (last: exit code 3); stopping the proxy');
    expect(supervisor.isReady()).to.equal(false);
    const restarts = lines.filter((line) => line.startsWith('MCP server exited; restarting it'));
    expect(restarts.map((line) => JSON.parse(line.slice(line.indexOf('{'))).restart_in_ms)).to.deep.equal([100, 200]);
    expect(lines.filter((line) => line.startsWith('MCP server restarted'))).to.have.length(2);
  });

  it('crashes spread wider than the window are forgiven', async function () {
    const supervisor = await superviseMcpServer({
      run: { command: process.execPath, args: ['-e', shortLived(300)], cwd: repoRoot, env: {} },
      url: new URL(`http://127.0.0.1:${await freePort()}/mcp`),
      log: capturingLogger([]),
      backoffMs: 50,
      crashWindowMs: 250,
    });
    supervisors.push(supervisor);
    const outcome = await Promise.race([supervisor.gaveUp, sleep(3_000).then(() => 'still running')]);
    expect(outcome).to.equal('still running');
  });

  it('stop() during a restart pause starts no new child', async function () {
    const lines: string[] = [];
    const port = await freePort();
    const supervisor = await superviseMcpServer({
      run: { command: process.execPath, args: ['-e', shortLived(60_000)], cwd: repoRoot, env: {} },
      url: new URL(`http://127.0.0.1:${port}/mcp`),
      log: capturingLogger(lines),
      backoffMs: 1_000,
    });
    process.kill(supervisor.pid()!, 'SIGKILL');
    await eventually(() => !supervisor.isReady());
    await supervisor.stop();
    await sleep(1_500);
    expect(lines.filter((line) => line.startsWith('mcp server started'))).to.have.length(1);
    expect(
      await new Promise((resolve) =>
        net
          .connect(port, '127.0.0.1')
          .once('connect', () => resolve(true))
          .once('error', () => resolve(false)),
      ),
    ).to.equal(false);
  });
});

describe('MCP server restarts (lib/main.ts)', function () {
  this.timeout(90_000);
  let proxy: WebProcess | undefined;
  afterEach(() => proxy?.kill());

  it('a killed MCP server is restarted; /mcp answers 503 with Retry-After meanwhile, then works again', async function () {
    const port = await freePortPair();
    proxy = new WebProcess({ PORT: String(port) });
    await proxy.waitFor(/MCP endpoint/);
    const mcpUrl = `http://localhost:${port}/mcp`;
    const oauth = new TestOAuthClient({ user: 'dev' });
    const client = await connectClient(mcpUrl, oauth);
    await client.close();
    const firstPid = proxy.mcpServerPid()!;
    const bearer = { authorization: `Bearer ${oauth.savedTokens!.access_token}` };

    process.kill(firstPid, 'SIGKILL');
    let unavailable: Response | undefined;
    await eventually(async () => {
      const response = await fetch(mcpUrl, { headers: bearer });
      await response.body?.cancel();
      if (response.status === 503) unavailable = response;
      return unavailable !== undefined;
    });
    expect(unavailable!.headers.get('retry-after')).to.match(/^\d+$/);
    expect(unavailable!.headers.get('content-type')).to.match(/^application\/json/);

    await proxy.waitFor(/msg="MCP server restarted"/);
    const again = await connectClient(mcpUrl, oauth);
    const result = (await again.callTool({ name: 'echo', arguments: { text: 'back' } })) as {
      content: { text: string }[];
    };
    expect(result.content[0]!.text).to.equal('back');
    await again.close();
    expect(proxy.mcpServerPid()).to.not.equal(firstPid);
    expect(isAlive(firstPid)).to.equal(false);

    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).to.equal(0);
  });
});
