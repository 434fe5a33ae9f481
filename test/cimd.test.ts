import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { adaptClientMetadata, CIMD_MAX_BYTES } from '../lib/auth-server/cimd.ts';
import { deriveKeyMaterial, ephemeralJwks } from '../lib/auth-server/keys.ts';
import { createProvider } from '../lib/auth-server/provider.ts';
import { loadConfig } from '../lib/config/index.ts';
import { createMemoryStore } from '../lib/store/index.ts';
import { captureLogs, log } from '../lib/telemetry/log.ts';
import { createViews } from '../lib/views/index.ts';
import { createBrowser } from './helpers/browser.ts';
import { startDocumentHost, type DocumentHost } from './helpers/document-host.ts';
import { authorizationUrl as sharedAuthorizationUrl, codeFlow, pkce } from './helpers/oauth.ts';
import { authorizeInBrowser, startStack, type Stack } from './helpers/stack.ts';

/** Client ID Metadata Documents (R11); the outbound fetch rules they rely on are in outbound.test.ts. */

// --- OAuth helpers -------------------------------------------------------------------------------

/** Our clients here always send a state; the shared helper does the rest. */
function authorizationUrl(
  baseUrl: string,
  clientId: string,
  redirectUri: string,
  challenge = pkce().challenge,
  extra: Record<string, string | undefined> = {},
): string {
  return sharedAuthorizationUrl(baseUrl, clientId, redirectUri, challenge, { state: 'client-state', ...extra });
}

/** What an authorization request for this client_id answers, without following it. */
async function authorizationPage(baseUrl: string, clientId: string, redirectUri: string) {
  const res = await fetch(authorizationUrl(baseUrl, clientId, redirectUri), { redirect: 'manual' });
  return { status: res.status, location: res.headers.get('location'), body: await res.text() };
}

/** R16: a refused client is told so on a page, and nothing is sent to any redirect URI. */
async function expectRefusedAsPage(baseUrl: string, clientId: string, redirectUri: string, description: RegExp) {
  const page = await authorizationPage(baseUrl, clientId, redirectUri);
  expect(page.location, 'no redirect').to.equal(null);
  expect(page.status).to.equal(400);
  expect(page.body).to.match(description);
  expect(page.body).to.not.contain('Allow and sign in');
}

async function withLogs<T>(fn: () => Promise<T>): Promise<{ result: T; lines: string[] }> {
  const lines: string[] = [];
  const restore = captureLogs((line) => lines.push(line));
  try {
    return { result: await fn(), lines };
  } finally {
    restore();
  }
}

async function exchangeCode(baseUrl: string, params: Record<string, string>): Promise<Response> {
  return fetch(`${baseUrl}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', ...params }),
  });
}

async function whoami(mcpUrl: string, accessToken: string): Promise<Record<string, unknown>> {
  const client = new Client({ name: 'cimd-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    requestInit: { headers: { authorization: `Bearer ${accessToken}` } },
  });
  await client.connect(transport);
  try {
    const result = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
    return JSON.parse(result.content[0]!.text) as Record<string, unknown>;
  } finally {
    await client.close();
  }
}

/** Claude Code's published document, re-hosted: loopback callbacks without a port, no application_type. */
function claudeCodeDocument(clientId: string): Record<string, unknown> {
  return {
    client_id: clientId,
    client_name: 'Claude Code',
    client_uri: 'https://claude.ai',
    redirect_uris: ['http://localhost/callback', 'http://127.0.0.1/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
}

// --- The document on its own --------------------------------------------------------------------

describe('CIMD: application type of a document (Claude Code quirk)', function () {
  it('makes a document with loopback redirect URIs native', function () {
    const document = claudeCodeDocument('https://claude.ai/oauth/claude-code-client-metadata');
    expect(adaptClientMetadata(document)).to.deep.equal({ ...document, application_type: 'native' });
  });

  it('leaves a document with https redirect URIs alone', function () {
    const document = { client_id: 'https://c.example/m', redirect_uris: ['https://chatgpt.com/connector/oauth/x'] };
    expect(adaptClientMetadata(document)).to.equal(document);
  });
});

// --- Without LOCAL_INSECURE: the provider on its own, on a real listener -------------------------

describe('CIMD without LOCAL_INSECURE: loopback documents are refused before connecting (R11)', function () {
  let host: DocumentHost;
  let baseUrl: string;
  let close: () => Promise<void>;

  before(async function () {
    host = await startDocumentHost();
    const config = loadConfig({ LOG_LEVEL: 'warn' });
    expect(config.localInsecure).to.equal(false);
    const store = createMemoryStore();
    const provider = createProvider({
      config,
      store,
      keys: deriveKeyMaterial(await ephemeralJwks()),
      views: createViews(undefined),
      log,
    });
    const server = createHttpServer(provider.callback());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await store.close();
    };
  });
  after(async function () {
    await close?.();
    await host?.close();
  });

  for (const origin of ['ip', 'name'] as const) {
    it(`refuses ${origin === 'ip' ? '127.0.0.1' : 'localhost (resolved to loopback)'} and opens no connection`, async function () {
      const clientId = `${host[origin]}/claude-code.json`;
      host.json('/claude-code.json', claudeCodeDocument(clientId));
      const before = host.connections;
      const { lines } = await withLogs(() =>
        expectRefusedAsPage(
          baseUrl,
          clientId,
          'http://127.0.0.1:5555/callback',
          /client_id metadata document fetch failed/,
        ),
      );
      expect(host.connections - before, 'connections to the document host').to.equal(0);
      expect(lines.join('\n')).to.match(/outbound fetch refused" .*special-use address \(loopback\)/);
    });
  }
});

// --- Through the whole proxy ----------------------------------------------------------------------

describe('CIMD through the proxy (R11, R16, R24)', function () {
  let stack: Stack;
  let host: DocumentHost;

  before(async function () {
    host = await startDocumentHost();
    stack = await startStack({ env: { LOCAL_INSECURE: 'true' } });
  });
  after(async function () {
    await stack?.close();
    await host?.close();
  });

  it('advertises client_id_metadata_document_supported in both discovery documents', async function () {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const metadata = (await (await fetch(`${stack.baseUrl}${path}`)).json()) as Record<string, unknown>;
      expect(metadata.client_id_metadata_document_supported, path).to.equal(true);
    }
  });

  it('Claude Code: a document without ports, a random loopback port, a token that works on /mcp, the document cached', async function () {
    const clientId = `${host.ip}/oauth/claude-code-client-metadata`;
    host.json('/oauth/claude-code-client-metadata', claudeCodeDocument(clientId), {
      'cache-control': 'public, max-age=300',
    });

    const login = async (port: number, extra: { scope?: string; prompt?: string } = {}) => {
      const { redirect, token } = await codeFlow({
        baseUrl: stack.baseUrl,
        clientId,
        redirectUri: `http://localhost:${port}/callback`,
        scope: 'scope' in extra ? extra.scope : 'openid',
        prompt: extra.prompt,
        state: 'client-state',
      });
      expect(redirect.searchParams.get('iss')).to.equal(stack.baseUrl);
      expect(token.status, JSON.stringify(token.body)).to.equal(200);
      return token.body;
    };

    const first = await login(50123);
    const seen = await whoami(stack.mcpUrl, first.access_token);
    expect(seen.userId).to.equal('alice');

    // A second login on another port within max-age: no new fetch of the document. Claude Code
    // then omits scope (and resource) or sends prompt=consent with offline_access.
    await login(50999, { scope: undefined });
    const forced = await login(51000, { scope: 'openid offline_access', prompt: 'consent' });
    expect((await whoami(stack.mcpUrl, forced.access_token)).userId).to.equal('alice');
    expect(host.hits.get('/oauth/claude-code-client-metadata')).to.equal(1);
  });

  it('ChatGPT: per-connector https callback, a document offering none', async function () {
    const clientId = `${host.ip}/oauth/chatgpt/public.json`;
    const redirectUri = 'https://chatgpt.com/connector/oauth/pub1ic';
    host.json('/oauth/chatgpt/public.json', {
      client_id: clientId,
      client_name: 'ChatGPT',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
    });
    const { token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId,
      redirectUri,
      scope: 'openid',
      state: 'client-state',
    });
    expect(token.status, JSON.stringify(token.body)).to.equal(200);
    const { access_token } = token.body;
    expect((await whoami(stack.mcpUrl, access_token)).userId).to.equal('alice');
  });

  it('ChatGPT: private_key_jwt with a jwks_uri fetched through the same checked fetch', async function () {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const clientId = `${host.ip}/oauth/chatgpt/client.json`;
    const redirectUri = 'https://chatgpt.com/connector/oauth/c0nnect0r';
    host.json('/oauth/chatgpt/jwks.json', { keys: [{ ...(await exportJWK(publicKey)), alg: 'RS256', use: 'sig' }] });
    host.json('/oauth/chatgpt/client.json', {
      client_id: clientId,
      client_name: 'ChatGPT',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
      token_endpoint_auth_signing_alg: 'RS256',
      jwks_uri: `${host.ip}/oauth/chatgpt/jwks.json`,
    });

    const { verifier, challenge } = pkce();
    const back = await authorizeInBrowser(
      createBrowser(),
      authorizationUrl(stack.baseUrl, clientId, redirectUri, challenge),
      redirectUri,
    );
    const code = back.searchParams.get('code');
    expect(code, back.href).to.be.a('string');

    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256' })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(stack.baseUrl)
      .setJti(randomBytes(16).toString('hex'))
      .setIssuedAt()
      .setExpirationTime('2m')
      .sign(privateKey);
    const res = await exchangeCode(stack.baseUrl, {
      code: code!,
      redirect_uri: redirectUri,
      code_verifier: verifier,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    });
    expect(res.status, await res.clone().text()).to.equal(200);
    expect(host.hits.get('/oauth/chatgpt/jwks.json'), 'jwks_uri fetched').to.be.greaterThan(0);
  });

  describe('refuses, on a page and never by redirect', function () {
    it('a document whose client_id is not its URL', async function () {
      const clientId = `${host.ip}/mismatch.json`;
      host.json('/mismatch.json', claudeCodeDocument(`${host.ip}/other.json`));
      await expectRefusedAsPage(stack.baseUrl, clientId, 'http://127.0.0.1:5555/callback', /client_id does not match/);
    });

    it('a document that is not JSON', async function () {
      const clientId = `${host.ip}/not-json.json`;
      host.serve('/not-json.json', (_req, res) =>
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"client_id": '),
      );
      await expectRefusedAsPage(
        stack.baseUrl,
        clientId,
        'http://127.0.0.1:5555/callback',
        /client_id metadata document fetch failed/,
      );
    });

    it('a document that is a JSON array', async function () {
      const clientId = `${host.ip}/array.json`;
      host.json('/array.json', [claudeCodeDocument(clientId)]);
      await expectRefusedAsPage(stack.baseUrl, clientId, 'http://127.0.0.1:5555/callback', /not a JSON object/);
    });

    it('a redirect_uri the document does not list (R16)', async function () {
      const clientId = `${host.ip}/listed.json`;
      host.json('/listed.json', claudeCodeDocument(clientId));
      for (const redirectUri of [
        'https://attacker.example/callback',
        'http://127.0.0.1:5555/other',
        'http://127.0.0.1.attacker.example/callback',
      ]) {
        await expectRefusedAsPage(stack.baseUrl, clientId, redirectUri, /redirect_uri did not match/);
      }
    });

    it(`a document larger than ${CIMD_MAX_BYTES} bytes`, async function () {
      const clientId = `${host.ip}/large.json`;
      const document = { ...claudeCodeDocument(clientId), client_name: 'x'.repeat(CIMD_MAX_BYTES) };
      host.json('/large.json', document);
      const { lines } = await withLogs(() =>
        expectRefusedAsPage(
          stack.baseUrl,
          clientId,
          'http://127.0.0.1:5555/callback',
          /client_id metadata document fetch failed/,
        ),
      );
      expect(lines.join('\n')).to.match(/outbound fetch refused" .*more than 5120/);
    });

    it('a document of exactly the limit is accepted', async function () {
      const clientId = `${host.ip}/at-limit.json`;
      const base = JSON.stringify({ ...claudeCodeDocument(clientId), client_name: '' });
      const document = { ...claudeCodeDocument(clientId), client_name: 'x'.repeat(CIMD_MAX_BYTES - base.length) };
      expect(JSON.stringify(document)).to.have.length(CIMD_MAX_BYTES);
      host.json('/at-limit.json', document);
      const page = await authorizationPage(stack.baseUrl, clientId, 'http://127.0.0.1:5555/callback');
      expect(page.status, page.body).to.equal(303);
    });

    it('a document that does not arrive in time', async function () {
      const clientId = `${host.ip}/slow.json`;
      const waiting: ServerResponse[] = [];
      host.serve('/slow.json', (_req, res) => void waiting.push(res));
      try {
        const { lines } = await withLogs(() =>
          expectRefusedAsPage(
            stack.baseUrl,
            clientId,
            'http://127.0.0.1:5555/callback',
            /client_id metadata document fetch failed/,
          ),
        );
        expect(waiting, 'the request arrived').to.have.length.greaterThan(0);
        expect(lines.join('\n')).to.match(/outbound fetch failed" .*timeout/);
      } finally {
        for (const res of waiting) res.destroy();
      }
    });

    it('a redirect, even to a valid document: redirects are not followed', async function () {
      const clientId = `${host.ip}/moved.json`;
      host.json('/target.json', claudeCodeDocument(clientId));
      host.serve('/moved.json', (_req, res) => res.writeHead(302, { location: `${host.ip}/target.json` }).end());
      const { lines } = await withLogs(() =>
        expectRefusedAsPage(
          stack.baseUrl,
          clientId,
          'http://127.0.0.1:5555/callback',
          /client_id metadata document fetch failed/,
        ),
      );
      expect(host.hits.get('/moved.json')).to.be.greaterThan(0);
      expect(host.hits.get('/target.json') ?? 0, 'redirect target fetched').to.equal(0);
      expect(lines.join('\n')).to.match(/outbound fetch not answered with 200" .*status=302/);
    });

    it('a document asking for a shared-secret client authentication', async function () {
      const clientId = `${host.ip}/secret.json`;
      host.json('/secret.json', { ...claudeCodeDocument(clientId), token_endpoint_auth_method: 'client_secret_post' });
      await expectRefusedAsPage(
        stack.baseUrl,
        clientId,
        'http://127.0.0.1:5555/callback',
        /must not use shared-secret/,
      );
    });

    it('a document with a javascript: redirect URI', async function () {
      const clientId = `${host.ip}/javascript.json`;
      host.json('/javascript.json', { ...claudeCodeDocument(clientId), redirect_uris: ['javascript:alert(1)'] });
      await expectRefusedAsPage(stack.baseUrl, clientId, 'javascript:alert(1)', /redirect_uris must/);
    });

    for (const [address, kind] of [
      ['169.254.169.254', 'link-local'],
      ['10.0.0.1', 'private'],
    ]) {
      it(`a client_id at ${address}, even with LOCAL_INSECURE, by the address policy before any request`, async function () {
        const clientId = `https://${address}/client.json`;
        const { lines } = await withLogs(() =>
          expectRefusedAsPage(
            stack.baseUrl,
            clientId,
            'http://127.0.0.1:5555/callback',
            /client_id metadata document fetch failed/,
          ),
        );
        expect(lines.join('\n')).to.contain(`reason="${address} is a special-use address (${kind})"`);
      });
    }
  });
});

describe('CIMD_ALLOWED_HOSTS', function () {
  let stack: Stack;
  let host: DocumentHost;

  before(async function () {
    host = await startDocumentHost();
    stack = await startStack({ redis: false, env: { LOCAL_INSECURE: 'true', CIMD_ALLOWED_HOSTS: 'localhost' } });
  });
  after(async function () {
    await stack?.close();
    await host?.close();
  });

  it('accepts a client_id on a listed host', async function () {
    const clientId = `${host.name}/allowed.json`;
    host.json('/allowed.json', claudeCodeDocument(clientId));
    const page = await authorizationPage(stack.baseUrl, clientId, 'http://127.0.0.1:5555/callback');
    expect(page.status, page.body).to.equal(303);
    expect(page.location).to.match(/\/interaction\//);
  });

  it('refuses a client_id on another host with a clear error, fetching nothing', async function () {
    const clientId = `${host.ip}/elsewhere.json`;
    host.json('/elsewhere.json', claudeCodeDocument(clientId));
    await expectRefusedAsPage(
      stack.baseUrl,
      clientId,
      'http://127.0.0.1:5555/callback',
      /client_id metadata documents from 127\.0\.0\.1 are not accepted by this server/,
    );
    expect(host.hits.get('/elsewhere.json') ?? 0).to.equal(0);
  });
});
