import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { sha256Hex } from '../lib/dev/example-mcp-server.ts';
import { createBrowser } from './helpers/browser.ts';
import { authorizationUrl } from './helpers/oauth.ts';
import {
  authorizeInBrowser,
  connectClient,
  freePort,
  freePortPair,
  startStack,
  TestOAuthClient,
  type Stack,
  useStack,
} from './helpers/stack.ts';

interface WhoAmI {
  tokenSha256?: string;
  userId?: string;
  dynamicClientId?: string;
}

async function whoami(client: Client): Promise<WhoAmI> {
  const result = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
  return JSON.parse(result.content[0]!.text) as WhoAmI;
}

async function register(baseUrl: string, metadata: Record<string, unknown>): Promise<Response> {
  return fetch(`${baseUrl}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(metadata),
  });
}

describe('end to end: an MCP client logs in through the proxy and calls tools', function () {
  let stack: Stack;
  let alice: TestOAuthClient;
  let aliceClient: Client;

  before(async function () {
    stack = await startStack();
    alice = new TestOAuthClient({ user: 'alice' });
    aliceClient = await connectClient(stack.mcpUrl, alice);
  });
  after(async function () {
    await aliceClient?.close();
    await stack?.close();
  });

  it('registers, logs in upstream, and lists and calls tools', async function () {
    expect(alice.info?.client_id, 'dynamic client registration').to.be.a('string');
    expect(alice.lastRedirect?.searchParams.get('iss'), 'RFC 9207 iss').to.equal(stack.baseUrl);
    const { tools } = await aliceClient.listTools();
    expect(tools.map((t) => t.name)).to.include.members(['echo', 'whoami', 'add']);
    const sum = (await aliceClient.callTool({ name: 'add', arguments: { a: 2, b: 3 } })) as {
      content: { text: string }[];
    };
    expect(sum.content[0]!.text).to.contain('5');
  });

  it('R4: the MCP server sees the upstream token and identity headers, never our token', async function () {
    const seen = await whoami(aliceClient);
    const ours = sha256Hex(alice.savedTokens!.access_token);
    expect(seen.tokenSha256).to.match(/^[0-9a-f]{64}$/);
    expect(seen.tokenSha256).to.not.equal(ours);
    expect(stack.mcp.locals.seenTokenHashes.has(ours)).to.equal(false);
    expect(seen.userId).to.equal('alice');
    expect(seen.dynamicClientId).to.equal(alice.info?.client_id);
  });

  it('R22: two users of one client get their own upstream tokens', async function () {
    const bob = new TestOAuthClient({ user: 'bob' });
    bob.info = alice.info;
    const bobClient = await connectClient(stack.mcpUrl, bob);
    try {
      const [a, b] = [await whoami(aliceClient), await whoami(bobClient)];
      expect(b.userId).to.equal('bob');
      expect(a.userId).to.equal('alice');
      expect(b.tokenSha256).to.not.equal(a.tokenSha256);
    } finally {
      await bobClient.close();
    }
  });

  it('an account id a header cannot carry reaches the MCP server percent-encoded, not as a 502', async function () {
    const user = new TestOAuthClient({ user: '李雷 100%' });
    user.info = alice.info;
    const client = await connectClient(stack.mcpUrl, user);
    try {
      const seen = await whoami(client);
      expect(seen.userId).to.equal(`UTF-8''${encodeURIComponent('李雷 100%')}`);
      expect(decodeURIComponent(seen.userId!.slice("UTF-8''".length))).to.equal('李雷 100%');
    } finally {
      await client.close();
    }
  });

  it('refreshes an expired upstream token once and retries the call', async function () {
    const before = await whoami(aliceClient);
    const refreshes = stack.idp.stats.refreshes;
    await stack.idp.expireAccessTokens();
    const after = await whoami(aliceClient);
    expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
    expect(after.tokenSha256).to.not.equal(before.tokenSha256);
    // The new token is kept: the next call needs no refresh.
    await whoami(aliceClient);
    expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
  });

  it('loses no client and no grant when the proxy restarts (Redis)', async function () {
    const loginsBefore = stack.idp.stats.codeExchanges;
    await stack.restart();
    const again = await connectClient(stack.mcpUrl, alice);
    try {
      expect((await whoami(again)).userId).to.equal('alice');
      expect(stack.idp.stats.codeExchanges, 'no new login').to.equal(loginsBefore);
    } finally {
      await again.close();
    }
  });

  describe('R2: bad tokens get 401 with the challenge, never 500', function () {
    const cases: [string, Record<string, string>, string, string | undefined][] = [
      ['no token', {}, '', undefined],
      ['an unknown token', { authorization: 'Bearer not-a-real-token' }, '', 'invalid_token'],
      ['a malformed header', { authorization: 'Basic Zm9vOmJhcg==' }, '', 'invalid_request'],
      ['a token in the query string (R3)', {}, '?access_token=abc', 'invalid_request'],
    ];
    for (const [name, headers, query, error] of cases) {
      it(name, async function () {
        const res = await fetch(`${stack.mcpUrl}${query}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
          body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
        });
        expect(res.status).to.equal(401);
        const challenge = res.headers.get('www-authenticate') ?? '';
        expect(challenge).to.match(/^Bearer /);
        expect(challenge).to.contain(`resource_metadata="${stack.baseUrl}/.well-known/oauth-protected-resource/mcp"`);
        if (error) expect(challenge).to.contain(`error="${error}"`);
        else expect(challenge).to.not.contain('error=');
      });
    }

    it('an upstream token sent to us is not accepted as ours (R4)', async function () {
      const upstreamLike = await fetch(`${stack.idp.issuer}/me`).then(() => 'x'.repeat(43));
      const res = await fetch(stack.mcpUrl, { headers: { authorization: `Bearer ${upstreamLike}` } });
      expect(res.status).to.equal(401);
    });
  });

  describe('the upstream callback', function () {
    it('refuses a callback without state, as a page and not a redirect', async function () {
      const res = await fetch(`${stack.baseUrl}/interaction/identity/callback?code=abc`, { redirect: 'manual' });
      expect(res.status).to.equal(400);
      expect(res.headers.get('location')).to.equal(null);
      expect(await res.text()).to.contain('no state');
    });

    it('refuses a callback with an unknown state', async function () {
      const res = await fetch(`${stack.baseUrl}/interaction/identity/callback?code=abc&state=forged`, {
        redirect: 'manual',
      });
      expect(res.status).to.equal(400);
      expect(res.headers.get('location')).to.equal(null);
      expect(await res.text()).to.contain('unknown, expired or was already used');
    });
  });

  it('R20: the upstream state exists only after consent, server-side, for at most 10 minutes', async function () {
    const redis = new Redis(process.env.TEST_REDIS_URL!);
    try {
      const pendingKeys = () => redis.keys(`${stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX}upstream-state:*`);
      const existing = new Set(await pendingKeys());
      const oauth = new TestOAuthClient();
      const { client_id } = (await (await register(stack.baseUrl, oauth.clientMetadata)).json()) as {
        client_id: string;
      };
      const browser = createBrowser();
      const page = await browser.follow(authorizationUrl(stack.baseUrl, client_id, oauth.redirectUrl));
      expect(page.body).to.contain('Allow and sign in');
      expect(
        (await pendingKeys()).filter((key) => !existing.has(key)),
        'no state before consent',
      ).to.deep.equal([]);

      const toIdp = await browser.submitForm(
        page.body,
        page.url,
        {},
        { form: 0, stopAt: (url) => url.startsWith(stack.idp.issuer) },
      );
      const upstream = new URL(toIdp.location!);
      expect(upstream.searchParams.get('code_challenge_method'), 'R21').to.equal('S256');
      expect(upstream.searchParams.get('state')).to.have.length.greaterThanOrEqual(43);
      const added = (await pendingKeys()).filter((key) => !existing.has(key));
      expect(added).to.have.length(1);
      // Stored under a hash: the state itself is nowhere in the store.
      expect(added[0]).to.not.contain(upstream.searchParams.get('state')!);
      const ttl = await redis.ttl(added[0]!);
      expect(ttl).to.be.greaterThan(0).and.at.most(600);
    } finally {
      redis.disconnect();
    }
  });

  it('cancel on the consent page returns access_denied to the client', async function () {
    const oauth = new TestOAuthClient();
    const reg = await register(stack.baseUrl, oauth.clientMetadata);
    const { client_id } = (await reg.json()) as { client_id: string };
    const url = authorizationUrl(stack.baseUrl, client_id, oauth.redirectUrl, undefined, { state: 'client-state' });
    const back = await authorizeInBrowser(createBrowser(), url, oauth.redirectUrl, { decision: 'cancel' });
    expect(back.searchParams.get('error')).to.equal('access_denied');
    expect(back.searchParams.get('state')).to.equal('client-state');
  });

  it('nothing sent at registration marks a client as consented', async function () {
    const oauth = new TestOAuthClient();
    const reg = await register(stack.baseUrl, {
      ...oauth.clientMetadata,
      consented: true,
      skip_consent: true,
      trusted: true,
    });
    expect(reg.status).to.equal(201);
    const { client_id } = (await reg.json()) as { client_id: string };
    const url = authorizationUrl(stack.baseUrl, client_id, oauth.redirectUrl);
    const page = await createBrowser().follow(url);
    expect(page.status).to.equal(200);
    expect(page.body).to.contain('Allow and sign in');
  });
});

describe('registration of native clients', function () {
  let stack: Stack;
  useStack((started) => (stack = started), { redis: false });

  it('accepts loopback redirects and private-use schemes', async function () {
    const res = await register(stack.baseUrl, {
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: [
        'http://127.0.0.1/callback',
        'http://localhost:8787/callback',
        'cursor://anysphere.cursor-mcp/oauth/callback',
      ],
    });
    expect(res.status).to.equal(201);
  });

  it('refuses javascript: redirect URIs', async function () {
    const res = await register(stack.baseUrl, { application_type: 'native', redirect_uris: ['javascript:alert(1)'] });
    expect(res.status).to.equal(400);
    expect(((await res.json()) as { error: string }).error).to.equal('invalid_redirect_uri');
  });

  it('serves one issuer in PRM, RFC 8414 and OIDC discovery (R1, R9)', async function () {
    const prm = (await (await fetch(`${stack.baseUrl}/.well-known/oauth-protected-resource/mcp`)).json()) as Record<
      string,
      unknown
    >;
    const root = (await (await fetch(`${stack.baseUrl}/.well-known/oauth-protected-resource`)).json()) as Record<
      string,
      unknown
    >;
    const as = await fetch(`${stack.baseUrl}/.well-known/oauth-authorization-server`);
    const oidc = (await (await fetch(`${stack.baseUrl}/.well-known/openid-configuration`)).json()) as Record<
      string,
      unknown
    >;
    expect(as.headers.get('content-type')).to.match(/^application\/json/);
    const asBody = (await as.json()) as Record<string, unknown>;
    expect(prm.resource).to.equal(`${stack.baseUrl}/mcp`);
    expect(root).to.deep.equal(prm);
    expect(prm.authorization_servers).to.deep.equal([asBody.issuer]);
    expect(prm.scopes_supported).to.not.include('offline_access');
    expect(asBody).to.deep.equal(oidc);
    expect(asBody.code_challenge_methods_supported).to.deep.equal(['S256']);
  });
});

describe('OIDC_PROVIDER_VIEWS_PATH', function () {
  it('replaces views file by file: a custom layout around the built-in consent page', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'views-'));
    writeFileSync(
      join(dir, '_layout.ejs'),
      '<!doctype html><html><head><title><%= title %></title></head><body class="acme-brand"><%- body %></body></html>',
    );
    const stack = await startStack({ redis: false, env: { OIDC_PROVIDER_VIEWS_PATH: dir } });
    try {
      const oauth = new TestOAuthClient();
      const reg = await register(stack.baseUrl, oauth.clientMetadata);
      const { client_id } = (await reg.json()) as { client_id: string };
      const page = await createBrowser().follow(authorizationUrl(stack.baseUrl, client_id, oauth.redirectUrl));
      expect(page.status).to.equal(200);
      expect(page.body).to.contain('class="acme-brand"');
      expect(page.body).to.contain('Allow and sign in');
      expect(page.headers.get('content-security-policy')).to.contain("frame-ancestors 'none'");
    } finally {
      await stack.close();
    }
  });
});

describe('start-up failures name what and where', function () {
  it('an unreachable Redis', async function () {
    const stack = await startStack({ redis: false });
    await stack.proxy.close();
    const { start } = await import('../lib/start.ts');
    const error = await start({ ...stack.env, MCP_AUTH_PROXY_REDIS_URL: 'redis://:hunter2@127.0.0.1:1' }).then(
      () => undefined,
      (e: Error) => e,
    );
    await stack.close().catch(() => undefined);
    expect(error?.message).to.contain('127.0.0.1:1');
    expect(error?.message).to.not.contain('hunter2');
  });

  it('an unreachable identity provider', async function () {
    const port = await freePort();
    const { start } = await import('../lib/start.ts');
    const error = await start({
      PORT: String(port),
      LOCAL_INSECURE: 'true',
      IDENTITY_SERVER_URL: 'http://127.0.0.1:1',
      IDENTITY_CLIENT_ID: 'x',
      MCP_SERVER_URL: 'http://127.0.0.1:2/mcp',
    }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).to.contain('identity provider at http://127.0.0.1:1/');
  });
});

describe('the web process (lib/main.ts)', function () {
  function run(
    env: NodeJS.ProcessEnv,
    until?: RegExp,
  ): Promise<{ code: number | null; stdout: string; stderr: string; kill: () => void }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'lib/main.ts'], {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
        cwd: new URL('..', import.meta.url).pathname,
      });
      let stdout = '';
      let stderr = '';
      const kill = () => child.kill('SIGTERM');
      child.stdout.on('data', (chunk) => {
        stdout += chunk;
        if (until?.test(stdout)) resolve({ code: null, stdout, stderr, kill });
      });
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('exit', (code) => resolve({ code, stdout, stderr, kill }));
    });
  }

  it('with invalid production configuration lists every problem and exits 1, no stack trace', async function () {
    const result = await run({ NODE_ENV: 'production', PORT: 'eighty', MCP_SERVER_URL: 'not a url' });
    expect(result.code).to.equal(1);
    for (const variable of [
      'PORT',
      'BASE_URL',
      'MCP_SERVER_URL',
      'MCP_AUTH_PROXY_REDIS_URL',
      'OIDC_PROVIDER_JWKS',
      'IDENTITY_SERVER_URL',
    ]) {
      expect(result.stderr).to.contain(variable);
    }
    expect(result.stderr).to.not.match(/\n\s+at /);
  });

  it('an unreachable Redis or identity provider: one line naming which and where, exit 1', async function () {
    const port = await freePort();
    const redis = await run({
      PORT: String(port),
      MCP_SERVER_URL: 'http://127.0.0.1:9/mcp',
      MCP_AUTH_PROXY_REDIS_URL: 'redis://:hunter2@127.0.0.1:1',
    });
    expect(redis.code).to.equal(1);
    const redisLine = redis.stderr.trim().split('\n').at(-1)!;
    expect(redisLine).to.match(/^Redis at redis:\/\/.*127\.0\.0\.1:1.* is unreachable/);
    expect(redis.stderr).to.not.contain('hunter2');
    expect(redis.stderr).to.not.match(/\n\s+at /);

    const idp = await run({
      PORT: String(port),
      LOCAL_INSECURE: 'true',
      MCP_SERVER_URL: 'http://127.0.0.1:9/mcp',
      IDENTITY_SERVER_URL: 'http://127.0.0.1:1',
      IDENTITY_CLIENT_ID: 'x',
    });
    expect(idp.code).to.equal(1);
    expect(idp.stderr.trim().split('\n').at(-1)).to.match(
      /^identity provider at http:\/\/127\.0\.0\.1:1\/ could not be discovered/,
    );
    expect(idp.stderr).to.not.match(/\n\s+at /);
  });

  it('exits non-zero when the MCP server exits', async function () {
    this.timeout(60_000);
    const [port, mcpPort] = [await freePort(), await freePort()];
    const script = `require('http').createServer((q,s)=>s.end()).listen(${mcpPort},'127.0.0.1',()=>setTimeout(()=>process.exit(3),1500))`;
    const result = await run({
      PORT: String(port),
      MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
      MCP_SERVER_RUN_COMMAND: process.execPath,
      MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['-e', script]),
    });
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain('MCP server exited');
  });

  it('a SIGTERM while the MCP server is still starting stops the MCP server too', async function () {
    this.timeout(60_000);
    const [port, mcpPort] = [await freePort(), await freePort()];
    // Prints its pid, then never listens: the proxy is still waiting for it when told to stop.
    const script = 'console.log("child-pid=" + process.pid); setInterval(() => {}, 1000)';
    const child = spawn(process.execPath, ['--import', 'tsx', 'lib/main.ts'], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        PORT: String(port),
        MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
        MCP_SERVER_RUN_COMMAND: process.execPath,
        MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['-e', script]),
      },
      cwd: new URL('..', import.meta.url).pathname,
    });
    let output = '';
    const childPid = await new Promise<number>((resolve) => {
      child.stdout.on('data', (chunk) => {
        output += chunk;
        const match = /child-pid=(\d+)/.exec(output);
        if (match) resolve(Number(match[1]));
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).to.equal(0);
    const alive = () => {
      try {
        process.kill(childPid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 50 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(alive(), 'the MCP server child is gone').to.equal(false);
  });

  it('npm start with no configuration runs everything locally and prints how to connect', async function () {
    this.timeout(60_000);
    const port = await freePortPair();
    const started = await run({ PORT: String(port) }, /--server-url.*\n.*Other clients.*\n/);
    try {
      expect(started.code).to.equal(null);
      const mcpUrl = `http://localhost:${port}/mcp`;
      expect(started.stdout).to.contain(`npm run inspector -- --transport http --server-url ${mcpUrl}`);
      const client = await connectClient(mcpUrl, new TestOAuthClient({ user: 'dev' }));
      const result = (await client.callTool({ name: 'echo', arguments: { text: 'local' } })) as {
        content: { text: string }[];
      };
      expect(result.content[0]!.text).to.contain('local');
      await client.close();
    } finally {
      started.kill();
    }
  });
});
