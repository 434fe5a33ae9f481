import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { createExampleMcpServer } from '../lib/dev/example-mcp-server.ts';
import { DEV_STORE_FILE, developmentJwks, devStoreFile } from '../lib/store/dev-file.ts';
import { createMemoryStore } from '../lib/store/index.ts';
import { captureLogs } from '../lib/telemetry/log.ts';
import { createBrowser } from './helpers/browser.ts';
import { authorizationUrl, codeFlow, registerNativeClient } from './helpers/oauth.ts';
import { freePort } from './helpers/stack.ts';

const MAIN = new URL('../lib/main.ts', import.meta.url).pathname;
// The working directory is a temporary one, where `tsx` would not resolve by name.
const TSX = import.meta.resolve('tsx');
const REDIRECT = 'http://127.0.0.1:33418/callback';

/**
 * `npm start` with no Redis, keys or identity provider configured, in `cwd`: the development store
 * file lands there. The MCP server is the example one, already running (the one `npm start` would
 * spawn resolves `tsx` from the working directory).
 */
async function startProxy(cwd: string, port: number, mcpUrl: string): Promise<ChildProcessWithoutNullStreams> {
  const child = spawn(process.execPath, ['--import', TSX, MAIN], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      PORT: String(port),
      MCP_SERVER_URL: mcpUrl,
      LOG_LEVEL: 'warn',
    },
    cwd,
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => output.includes('MCP endpoint:') && resolve());
    child.on('exit', (code) => reject(new Error(`proxy exited (${code}) before it was ready:\n${output}`)));
  });
  await ready;
  return child;
}

async function stop(child: ChildProcessWithoutNullStreams): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}

describe('development store: a restart of the zero-config proxy strands no client', function () {
  this.timeout(60_000);
  let cwd: string;
  let mcpServer: Server;
  let mcpUrl: string;

  before(async function () {
    mcpServer = createExampleMcpServer({}).listen(0, '127.0.0.1');
    await once(mcpServer, 'listening');
    mcpUrl = `http://127.0.0.1:${(mcpServer.address() as AddressInfo).port}/mcp`;
  });
  after(function () {
    mcpServer?.closeAllConnections();
    mcpServer?.close();
  });

  beforeEach(function () {
    cwd = mkdtempSync(join(tmpdir(), 'dev-store-'));
  });
  afterEach(function () {
    rmSync(cwd, { recursive: true, force: true });
  });

  it('a client registered before a restart still logs in after it', async function () {
    const port = await freePort();
    const baseUrl = `http://localhost:${port}`;
    let proxy = await startProxy(cwd, port, mcpUrl);
    try {
      const clientId = await registerNativeClient(baseUrl, 'Inspector', REDIRECT);
      const browser = createBrowser();
      const before = await codeFlow({ baseUrl, clientId, redirectUri: REDIRECT, browser });
      expect(before.token.status, JSON.stringify(before.token.body)).to.equal(200);

      await stop(proxy);
      const file = join(cwd, DEV_STORE_FILE);
      expect(statSync(file).mode & 0o777, 'file mode').to.equal(0o600);
      proxy = await startProxy(cwd, port, mcpUrl);

      // Same client_id, same browser: its session (cookie signed with the kept key) and remembered
      // consent survived too, so the consent page is skipped...
      const skipped = await browser.follow(authorizationUrl(baseUrl, clientId, REDIRECT));
      expect(skipped.body).to.contain('Development identity provider: any user name is accepted');
      // ...and a login asking for it again completes.
      const after = await codeFlow({ baseUrl, clientId, redirectUri: REDIRECT, browser, prompt: 'consent' });
      expect(after.token.status, JSON.stringify(after.token.body)).to.equal(200);
      // A brand-new browser logs in too.
      const fresh = await codeFlow({ baseUrl, clientId, redirectUri: REDIRECT });
      expect(fresh.token.status, JSON.stringify(fresh.token.body)).to.equal(200);
    } finally {
      await stop(proxy);
    }
  });

  it('a client the proxy does not know is told to register again, not just "invalid_client"', async function () {
    const port = await freePort();
    const proxy = await startProxy(cwd, port, mcpUrl);
    try {
      const page = await createBrowser().get(authorizationUrl(`http://localhost:${port}`, 'forgotten', REDIRECT));
      expect(page.status).to.equal(400);
      expect(page.location).to.equal(undefined);
      expect(page.body).to.contain('<h1>Unknown application</h1>');
      expect(page.body).to.contain('add it again: it will register anew');
      expect(page.body).to.contain(page.headers.get('x-request-id')!);
    } finally {
      await stop(proxy);
    }
  });
});

describe('development store file', function () {
  let dir: string;
  beforeEach(function () {
    dir = mkdtempSync(join(tmpdir(), 'dev-store-file-'));
  });
  afterEach(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it('is used only with neither Redis nor a configured JWKS', function () {
    expect(devStoreFile({ redis: undefined, provider: { jwks: undefined } }, dir)).to.equal(join(dir, DEV_STORE_FILE));
    expect(devStoreFile({ redis: { url: 'redis://x' }, provider: { jwks: undefined } }, dir)).to.equal(undefined);
    expect(devStoreFile({ redis: undefined, provider: { jwks: { keys: [] } } }, dir)).to.equal(undefined);
  });

  it('keeps values, sets, records and the signing key; drops what expired', async function () {
    const file = join(dir, 'store.json');
    const first = createMemoryStore({ file });
    await first.set('kept', 'v');
    await first.set('short', 'gone', 1);
    const jwks = await developmentJwks(first);
    const Model = new first.Adapter('Grant');
    await Model.upsert('g1', { accountId: 'ada', exp: 0 } as never, 3600);
    await first.close();

    // Age `short` past its expiry without waiting: rewrite its expiry in the file.
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { entries: Array<[string, unknown, number | null]> };
    for (const entry of saved.entries) if (entry[0] === 'short') entry[2] = Date.now() - 1;
    writeFileSync(file, JSON.stringify(saved));

    const second = createMemoryStore({ file });
    expect(await second.get('kept')).to.equal('v');
    expect(await second.get('short')).to.equal(undefined);
    expect(await developmentJwks(second)).to.deep.equal(jwks);
    expect(await new second.Adapter('Grant').find('g1')).to.include({ accountId: 'ada' });
    await second.close();
    expect(readFileSync(file, 'utf8')).to.not.contain('"short"');
    expect(statSync(file).mode & 0o777).to.equal(0o600);
  });

  it('a damaged file costs the stored data, not the start', async function () {
    const file = join(dir, 'store.json');
    writeFileSync(file, '{"version":1,"entr');
    const lines: string[] = [];
    const restore = captureLogs((line) => lines.push(line));
    let store;
    try {
      store = createMemoryStore({ file });
    } finally {
      restore();
    }
    expect(lines.join('\n')).to.contain('development store file unreadable; starting empty');
    expect(await store.get('anything')).to.equal(undefined);
    await store.set('k', 'v');
    await store.close();
    expect(await createMemoryStore({ file }).get('k')).to.equal('v');
  });
});
