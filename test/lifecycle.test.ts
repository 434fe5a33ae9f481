import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { expect } from 'chai';
import { freePort, freePortPair } from './helpers/stack.ts';
import { canConnect, eventually, isAlive, sleep, WebProcess } from './helpers/web-process.ts';

/** Start-up as the platform sees it, through the real entry point: port first, then readiness. */

const mcpScript = (delayMs: number) =>
  `console.log("mcp-child-started"); setTimeout(() => require('http').createServer((q, s) => s.end('{}')).listen(Number(process.env.PORT), '127.0.0.1'), ${delayMs})`;

async function get(url: string): Promise<{ status: number; headers: Headers; body: string }> {
  const response = await fetch(url);
  return { status: response.status, headers: response.headers, body: await response.text() };
}

describe('start-up (lib/main.ts)', function () {
  this.timeout(60_000);
  const processes: WebProcess[] = [];
  const servers: Server[] = [];
  afterEach(async () => {
    for (const proc of processes.splice(0)) proc.kill();
    await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
  });

  it('a taken PORT is a one-line error before anything else starts', async function () {
    const squatter = createServer().listen(0, '127.0.0.1');
    servers.push(squatter);
    await once(squatter, 'listening');
    const port = (squatter.address() as { port: number }).port;
    const mcpPort = await freePort();
    const proxy = new WebProcess({
      PORT: String(port),
      MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
      MCP_SERVER_RUN_COMMAND: process.execPath,
      MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['-e', mcpScript(0)]),
      // Were the store checked first, the error would be about this unreachable Redis.
      MCP_AUTH_PROXY_REDIS_URL: 'redis://127.0.0.1:1',
    });
    processes.push(proxy);
    expect(await proxy.exited).to.equal(1);
    expect(proxy.stderr.trim().split('\n').at(-1)).to.equal(
      `cannot listen on port ${port} (PORT): another process is already listening there`,
    );
    expect(proxy.stderr).to.not.match(/\n\s+at /);
    expect(proxy.stdout + proxy.stderr).to.not.contain('mcp-child-started');
    // Nothing touched the store: no connection attempt was logged (a start-up warning may name Redis).
    expect(proxy.stdout + proxy.stderr).to.not.match(/redis connection error|ECONNREFUSED|store ready/i);
    expect(await canConnect(mcpPort)).to.equal(false);
  });

  it('answers 503 with Retry-After until ready, /healthz at once, and /readyz names each check', async function () {
    const [port, mcpPort] = [await freePort(), await freePort()];
    const proxy = new WebProcess({
      PORT: String(port),
      MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
      MCP_SERVER_RUN_COMMAND: process.execPath,
      // Slow to accept connections: the proxy is listening long before it is ready.
      MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['-e', mcpScript(4_000)]),
      MCP_AUTH_PROXY_REDIS_URL: process.env.TEST_REDIS_URL,
      MCP_AUTH_PROXY_REDIS_KEY_PREFIX: `test-lifecycle-${process.pid}:`,
    });
    processes.push(proxy);
    await proxy.waitFor(/mcp-child-started/);
    const base = `http://127.0.0.1:${port}`;

    const health = await get(`${base}/healthz`);
    expect(health.status).to.equal(200);
    expect(JSON.parse(health.body)).to.deep.equal({ status: 'up' });

    const starting = await get(`${base}/readyz`);
    expect(starting.status).to.equal(503);
    expect(starting.headers.get('retry-after')).to.match(/^\d+$/);
    expect(JSON.parse(starting.body)).to.deep.equal({
      status: 'not_ready',
      checks: { store: { state: 'ok' }, identity_provider: { state: 'ok' }, mcp_server: { state: 'starting' } },
    });

    for (const path of ['/.well-known/oauth-authorization-server', '/mcp', '/reg', '/nowhere']) {
      const gated = await get(`${base}${path}`);
      expect(gated.status, path).to.equal(503);
      expect(gated.headers.get('retry-after'), path).to.match(/^\d+$/);
      expect(gated.headers.get('content-type'), path).to.match(/^application\/json/);
      expect(JSON.parse(gated.body).error, path).to.equal('temporarily_unavailable');
    }

    await eventually(async () => (await get(`${base}/readyz`)).status === 200, 30_000);
    const ready = await get(`${base}/readyz`);
    expect(JSON.parse(ready.body)).to.deep.equal({
      status: 'ready',
      checks: { store: { state: 'ok' }, identity_provider: { state: 'ok' }, mcp_server: { state: 'ok' } },
    });
    expect((await get(`${base}/.well-known/oauth-authorization-server`)).status).to.equal(200);

    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).to.equal(0);
  });

  it('/readyz turns 503 when Redis stops answering, without showing where Redis is', async function () {
    const { spawn } = await import('node:child_process');
    const redisPort = await freePort();
    const redis = spawn('redis-server', ['--port', String(redisPort), '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    try {
      await eventually(() => canConnect(redisPort), 10_000);
      const port = await freePortPair();
      const proxy = new WebProcess({
        PORT: String(port),
        MCP_AUTH_PROXY_REDIS_URL: `redis://:unused-secret@127.0.0.1:${redisPort}`,
      });
      processes.push(proxy);
      const base = `http://127.0.0.1:${port}`;
      await eventually(async () => (await get(`${base}/readyz`).catch(() => ({ status: 0 }))).status === 200, 30_000);

      redis.kill('SIGSTOP');
      await eventually(async () => (await get(`${base}/readyz`)).status === 503, 20_000);
      const failing = await get(`${base}/readyz`);
      expect(JSON.parse(failing.body).checks.store).to.deep.equal({ state: 'failing' });
      expect(failing.body).to.not.contain('redis');
      expect(failing.body).to.not.contain(String(redisPort));
      expect(failing.body).to.not.contain('unused-secret');

      redis.kill('SIGCONT');
      await eventually(async () => (await get(`${base}/readyz`)).status === 200, 20_000);
    } finally {
      redis.kill('SIGCONT');
      redis.kill('SIGKILL');
    }
  });
});

describe('release verification (MCP_AUTH_PROXY_VERIFY_RELEASE=true)', function () {
  this.timeout(90_000);
  const processes: WebProcess[] = [];
  afterEach(() => processes.splice(0).forEach((proc) => proc.kill()));

  it('starts the MCP server until it accepts connections, stops it, prints the verdict and exits 0', async function () {
    const port = await freePortPair();
    const proxy = new WebProcess({
      PORT: String(port),
      MCP_AUTH_PROXY_VERIFY_RELEASE: 'true',
      MCP_AUTH_PROXY_REDIS_URL: process.env.TEST_REDIS_URL,
    });
    processes.push(proxy);
    expect(await proxy.exited, proxy.stderr).to.equal(0);
    expect(proxy.stdout).to.match(/Verified release launches\n$/);
    expect(proxy.stdout).to.match(/msg="mcp server ready"/);
    const mcpPid = proxy.mcpServerPid()!;
    expect(isAlive(mcpPid), 'the MCP server is stopped').to.equal(false);
    // Nothing was served: release verification never binds PORT.
    expect(proxy.stdout).to.not.contain('msg="proxy listening"');
    expect(await canConnect(port)).to.equal(false);
  });

  it('fails with one line when the MCP server does not start', async function () {
    const [port, mcpPort] = [await freePort(), await freePort()];
    const proxy = new WebProcess({
      PORT: String(port),
      MCP_AUTH_PROXY_VERIFY_RELEASE: 'true',
      MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
      MCP_SERVER_RUN_COMMAND: process.execPath,
      MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['-e', 'process.exit(7)']),
    });
    processes.push(proxy);
    expect(await proxy.exited).to.equal(1);
    expect(proxy.stderr.trim().split('\n').at(-1)).to.match(
      /^MCP server did not start: MCP server ".*" exited before accepting connections on 127\.0\.0\.1:\d+ \(exit code 7\)$/,
    );
    expect(proxy.stdout).to.not.contain('Verified release launches');
  });

  it('fails with one line when Redis is unreachable, its password not shown', async function () {
    const port = await freePortPair();
    const proxy = new WebProcess({
      PORT: String(port),
      MCP_AUTH_PROXY_VERIFY_RELEASE: 'true',
      MCP_AUTH_PROXY_REDIS_URL: 'redis://:hunter2@127.0.0.1:1',
    });
    processes.push(proxy);
    expect(await proxy.exited).to.equal(1);
    expect(proxy.stderr.trim().split('\n').at(-1)).to.match(/^Redis at redis:\/\/.*127\.0\.0\.1:1.* is unreachable/);
    expect(proxy.stdout + proxy.stderr).to.not.contain('hunter2');
    expect(proxy.stdout + proxy.stderr).to.not.contain('mcp server started');
  });

  it('with a bad value, says so', async function () {
    const proxy = new WebProcess({ PORT: String(await freePort()), MCP_AUTH_PROXY_VERIFY_RELEASE: 'yes' });
    processes.push(proxy);
    expect(await proxy.exited).to.equal(1);
    expect(proxy.stderr).to.contain('MCP_AUTH_PROXY_VERIFY_RELEASE: must be true or false');
    await sleep(0);
  });
});
