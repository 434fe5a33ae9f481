import { once } from 'node:events';
import { writeFileSync, mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import express from 'express';
import { accountIdFromTokenResponse, createIdentityClient, IdentityError } from '../lib/identity/index.ts';
import { connectClient, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';
import type { DevIdentityProvider } from '../lib/dev/identity-provider.ts';

/**
 * A token endpoint in front of the development IdP's, rewriting its successful answers the way
 * a provider-specific one does (Heroku Identity adds `user_id`; some providers send no ID token).
 */
async function startTokenShim(
  issuer: () => string,
  rewrite: (body: Record<string, unknown>) => void,
): Promise<{ server: Server; url: string }> {
  const app = express();
  app.post('/token', express.raw({ type: '*/*' }), async (req, res) => {
    const upstream = await fetch(`${issuer()}/token`, {
      method: 'POST',
      headers: {
        'content-type': req.get('content-type')!,
        accept: 'application/json',
        ...(req.get('authorization') ? { authorization: req.get('authorization')! } : {}),
      },
      body: req.body as Buffer,
    });
    const body = (await upstream.json()) as Record<string, unknown>;
    if (upstream.ok) rewrite(body);
    res.status(upstream.status).json(body);
  });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('upstream identity provider client', function () {
  describe('who logged in, for providers without an ID token', function () {
    it('Heroku Identity answers with user_id', function () {
      expect(accountIdFromTokenResponse({ access_token: 'x', user_id: '01234567-89ab' })).to.equal('01234567-89ab');
    });
    it('Salesforce answers with an id URL', function () {
      const id = 'https://login.salesforce.com/id/00Dxx0000001gPL/005xx000001Sv6A';
      expect(accountIdFromTokenResponse({ access_token: 'x', id })).to.equal(id);
    });
    it('anything else is no account id', function () {
      expect(accountIdFromTokenResponse({ access_token: 'x' })).to.equal(undefined);
      expect(accountIdFromTokenResponse({ access_token: 'x', id: 'not-a-url', user_id: '' })).to.equal(undefined);
    });
  });

  describe('plain http upstreams', function () {
    const metadataFile = (endpoint: string) => {
      const dir = mkdtempSync(join(tmpdir(), 'idp-'));
      const file = join(dir, 'metadata.json');
      writeFileSync(
        file,
        JSON.stringify({
          issuer: endpoint,
          authorization_endpoint: `${endpoint}/auth`,
          token_endpoint: `${endpoint}/token`,
        }),
      );
      return file;
    };
    const config = (file: string) => ({
      serverUrl: undefined,
      metadataFile: file,
      clientId: 'c',
      clientSecret: undefined,
      scope: 'openid',
    });

    it('are refused off loopback even with LOCAL_INSECURE', async function () {
      const error = await createIdentityClient(config(metadataFile('http://idp.example')), {
        redirectUri: 'http://localhost/cb',
        allowInsecure: true,
      }).catch((e) => e);
      expect(error).to.be.instanceOf(IdentityError);
      expect((error as Error).message).to.contain('plain http');
    });

    it('are refused on loopback without LOCAL_INSECURE', async function () {
      const error = await createIdentityClient(config(metadataFile('http://127.0.0.1:9')), {
        redirectUri: 'http://localhost/cb',
        allowInsecure: false,
      }).catch((e) => e);
      expect(error).to.be.instanceOf(IdentityError);
    });

    it('are accepted on loopback with LOCAL_INSECURE', async function () {
      const client = await createIdentityClient(config(metadataFile('http://127.0.0.1:9')), {
        redirectUri: 'http://localhost/cb',
        allowInsecure: true,
      });
      expect(client.issuer).to.equal('http://127.0.0.1:9');
    });
  });

  /**
   * A provider without OpenID Connect, configured by IDENTITY_SERVER_METADATA_FILE: the
   * development IdP asked for no `openid` scope and no userinfo endpoint advertised, behind a token
   * endpoint that adds what Heroku Identity adds (`user_id`) — or adds nothing.
   */
  describe('a plain OAuth provider from a metadata file', function () {
    let shim: Server;
    let addUserId = true;
    let stack: Stack;

    before(async function () {
      let idp: DevIdentityProvider | undefined;
      const started = await startTokenShim(
        () => idp!.issuer,
        (body) => {
          if (addUserId) body.user_id = 'heroku-user-42';
        },
      );
      shim = started.server;
      const shimUrl = started.url;
      stack = await startStack({
        redis: false,
        // Tokens asked for without `openid` are no good at userinfo, the example server's check.
        checkUpstreamTokens: false,
        env: ({ idp: started }) => {
          idp = started;
          const file = join(mkdtempSync(join(tmpdir(), 'idp-')), 'metadata.json');
          writeFileSync(
            file,
            JSON.stringify({
              issuer: idp.issuer,
              authorization_endpoint: `${idp.issuer}/auth`,
              token_endpoint: `${shimUrl}/token`,
            }),
          );
          return {
            IDENTITY_SERVER_URL: undefined,
            IDENTITY_SERVER_METADATA_FILE: file,
            IDENTITY_SCOPE: 'profile offline_access',
          };
        },
      });
    });
    after(async function () {
      await stack?.close();
      shim?.close();
    });

    it('logs the user in by the provider-specific user_id', async function () {
      addUserId = true;
      const client = await connectClient(stack.mcpUrl, new TestOAuthClient());
      const result = (await client.callTool({ name: 'echo', arguments: { text: 'plain oauth' } })) as {
        content: { text: string }[];
      };
      expect(result.content[0]!.text).to.contain('plain oauth');
      const who = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
      expect(JSON.parse(who.content[0]!.text).userId).to.equal('heroku-user-42');
      await client.close();
    });

    it('shows a clear error page when nothing says who logged in', async function () {
      addUserId = false;
      const oauth = new TestOAuthClient();
      const error = await connectClient(stack.mcpUrl, oauth).catch((e: Error) => e);
      expect(error).to.be.instanceOf(Error);
      expect((error as Error).message).to.contain('login did not come back to the client: 502');
    });
  });
  describe('a provider with userinfo but no ID token', function () {
    let server: Server;
    let url: string;
    before(async function () {
      // A minimal OAuth server: a token endpoint that answers without an ID token (no `openid`
      // requested) and an OIDC-style userinfo endpoint.
      const app = express();
      app.post('/token', express.urlencoded({ extended: false }), (req, res) => {
        if (req.body.code !== 'the-code' || !req.body.code_verifier)
          return void res.status(400).json({ error: 'invalid_grant' });
        res.json({ access_token: 'at-for-uma', token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-for-uma' });
      });
      app.get('/userinfo', (req, res) => {
        if (req.get('authorization') !== 'Bearer at-for-uma') return void res.status(401).end();
        res.json({ sub: 'uma' });
      });
      server = app.listen(0, '127.0.0.1');
      await once(server, 'listening');
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(function () {
      server?.close();
    });

    it('learns who logged in from the userinfo endpoint', async function () {
      const file = join(mkdtempSync(join(tmpdir(), 'idp-')), 'metadata.json');
      writeFileSync(
        file,
        JSON.stringify({
          issuer: url,
          authorization_endpoint: `${url}/authorize`,
          token_endpoint: `${url}/token`,
          userinfo_endpoint: `${url}/userinfo`,
        }),
      );
      const client = await createIdentityClient(
        { serverUrl: undefined, metadataFile: file, clientId: 'c', clientSecret: 's', scope: 'profile' },
        { redirectUri: 'http://localhost/cb', allowInsecure: true },
      );
      const login = await client.exchange(new URL('http://localhost/cb?code=the-code&state=st'), {
        state: 'st',
        codeVerifier: 'v'.repeat(43),
        nonce: 'unused',
      });
      expect(login.accountId).to.equal('uma');
      expect(login.credentials.refreshToken).to.equal('rt-for-uma');
    });
  });
});
