import { expect } from 'chai';
import { exportJWK, generateKeyPair } from 'jose';
import { createBrowser } from './helpers/browser.ts';
import { codeFlow, mcpInitialize, pkce, registerClient, tokenRequest } from './helpers/oauth.ts';
import { authorizeInBrowser, startStack, type Stack, useStack } from './helpers/stack.ts';

/** Authorization-server clauses of SPEC.md, each proven against a running proxy. */
describe('authorization server', function () {
  let stack: Stack;
  let webClient: string;
  let nativeClient: string;
  const webRedirect = 'https://client.example/cb';
  const nativeRedirect = 'http://127.0.0.1/cb';

  before(async function () {
    stack = await startStack();
    webClient = (
      await registerClient(stack.baseUrl, { redirect_uris: [webRedirect], token_endpoint_auth_method: 'none' })
    ).body.client_id!;
    nativeClient = (
      await registerClient(stack.baseUrl, {
        application_type: 'native',
        redirect_uris: [nativeRedirect],
        token_endpoint_auth_method: 'none',
      })
    ).body.client_id!;
  });
  after(async function () {
    await stack?.close();
  });

  function authorizeUrl(params: Record<string, string>): string {
    const { challenge } = pkce();
    return `${stack.baseUrl}/auth?${new URLSearchParams({
      response_type: 'code',
      scope: 'openid',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      ...params,
    })}`;
  }

  describe('R12/R16: redirect URIs are matched exactly and errors before that are pages', function () {
    it('refuses javascript:, data: and other dangerous schemes at registration', async function () {
      for (const uri of [
        'javascript:alert(1)',
        'data:text/html,hi',
        'vbscript:x',
        'file:///etc/passwd',
        'blob:https://x/y',
      ]) {
        for (const application_type of ['web', 'native']) {
          const res = await registerClient(stack.baseUrl, { application_type, redirect_uris: [uri] });
          expect(res.status, `${application_type} ${uri}`).to.equal(400);
          expect(res.body.error).to.equal('invalid_redirect_uri');
        }
      }
    });

    it('refuses plain http off loopback at registration', async function () {
      const res = await registerClient(stack.baseUrl, { redirect_uris: ['http://client.example/cb', 'cursor://x/cb'] });
      expect(res.status).to.equal(400);
    });

    const webCorpus = [
      'https://client.example/cb/../evil',
      'https://client.example/cb/',
      'https://client.example/CB',
      'https://client.example/cb?next=https://evil.example',
      'https://client.example/cb#x',
      'https://client.example.evil.example/cb',
      'https://client.example@evil.example/cb',
      'https://evil.example\\@client.example/cb',
      'https://evil.example/cb',
      'http://client.example/cb',
      'https://client.example:8443/cb',
      '//evil.example/cb',
      'https://client.example/cb%2F..%2Fevil',
      'https://client.example%2F@evil.example/cb',
      'javascript://client.example/cb%0aalert(1)',
    ];
    for (const redirectUri of webCorpus) {
      it(`open redirect refused: ${JSON.stringify(redirectUri)}`, async function () {
        const res = await fetch(authorizeUrl({ client_id: webClient, redirect_uri: redirectUri }), {
          redirect: 'manual',
        });
        expect(res.status).to.equal(400);
        expect(res.headers.get('location')).to.equal(null);
        expect(res.headers.get('content-type')).to.match(/text\/html/);
      });
    }

    const nativeCorpus = [
      'http://127.0.0.1.evil.example:8080/cb',
      'http://localhost.evil.example/cb',
      'http://127.0.0.1:8080/other',
      'https://127.0.0.1:8080/cb',
      'http://[::1]:8080/cb',
      'http://127.0.0.2:8080/cb',
      'http://127.0.0.1:8080@evil.example/cb',
    ];
    for (const redirectUri of nativeCorpus) {
      it(`native loopback lookalike refused: ${redirectUri}`, async function () {
        const res = await fetch(authorizeUrl({ client_id: nativeClient, redirect_uri: redirectUri }), {
          redirect: 'manual',
        });
        expect(res.status).to.equal(400);
        expect(res.headers.get('location')).to.equal(null);
      });
    }

    it('an omitted redirect_uri means the single registered one (OAuth 2.1 §4.1.1), never another', async function () {
      const url = new URL(authorizeUrl({ client_id: webClient, redirect_uri: '' }));
      url.searchParams.delete('redirect_uri');
      const page = await createBrowser().follow(url.href);
      expect(page.body).to.contain('Allow and sign in');
      expect(page.body).to.contain('client.example');
    });

    it('an unknown client is a page, not a redirect', async function () {
      const res = await fetch(authorizeUrl({ client_id: 'no-such-client', redirect_uri: webRedirect }), {
        redirect: 'manual',
      });
      expect(res.status).to.equal(400);
      expect(res.headers.get('location')).to.equal(null);
    });
  });

  describe('R10: PKCE S256 for every code', function () {
    it('refuses code_challenge_method=plain', async function () {
      const res = await fetch(
        authorizeUrl({
          client_id: webClient,
          redirect_uri: webRedirect,
          code_challenge_method: 'plain',
          code_challenge: 'a'.repeat(43),
        }),
        { redirect: 'manual' },
      );
      const location = new URL(res.headers.get('location')!);
      expect(location.searchParams.get('error')).to.equal('invalid_request');
    });

    it('refuses an authorization request without a code challenge', async function () {
      const url = new URL(authorizeUrl({ client_id: webClient, redirect_uri: webRedirect }));
      url.searchParams.delete('code_challenge');
      url.searchParams.delete('code_challenge_method');
      const res = await fetch(url, { redirect: 'manual' });
      expect(new URL(res.headers.get('location')!).searchParams.get('error')).to.equal('invalid_request');
    });

    it('refuses a code with the wrong verifier, and a code replay', async function () {
      const { challenge, verifier } = pkce();
      const redirect = await authorizeInBrowser(
        createBrowser(),
        `${stack.baseUrl}/auth?${new URLSearchParams({
          client_id: nativeClient,
          response_type: 'code',
          redirect_uri: 'http://127.0.0.1:5555/cb',
          scope: 'openid',
          code_challenge: challenge,
          code_challenge_method: 'S256',
        })}`,
        'http://127.0.0.1:5555/cb',
      );
      const code = redirect.searchParams.get('code')!;
      const base = {
        grant_type: 'authorization_code',
        code,
        redirect_uri: 'http://127.0.0.1:5555/cb',
        client_id: nativeClient,
      };
      const wrong = await tokenRequest(stack.baseUrl, { ...base, code_verifier: pkce().verifier });
      expect(wrong.body.error).to.equal('invalid_grant');
      // A wrong verifier burns nothing an attacker can use, but the code itself is now spent or
      // still single-use: either way, only one exchange may ever succeed.
      const first = await tokenRequest(stack.baseUrl, { ...base, code_verifier: verifier });
      const second = await tokenRequest(stack.baseUrl, { ...base, code_verifier: verifier });
      const successes = [first, second].filter((r) => r.status === 200);
      expect(successes.length).to.be.at.most(1);
      expect(second.body.error).to.equal('invalid_grant');
      if (first.status === 200) {
        // RFC 6749 §4.1.2: tokens issued from a replayed code should be revoked.
        const res = await mcpInitialize(stack.mcpUrl, first.body.access_token);
        expect(res.status).to.equal(401);
      }
    });
  });

  describe('R13: resource indicators', function () {
    it('refuses another resource with invalid_target', async function () {
      const res = await fetch(
        authorizeUrl({ client_id: webClient, redirect_uri: webRedirect, resource: 'https://evil.example/mcp' }),
        { redirect: 'manual' },
      );
      expect(new URL(res.headers.get('location')!).searchParams.get('error')).to.equal('invalid_target');
    });

    it('tolerates uppercase scheme and host and a trailing slash, and defaults a missing resource', async function () {
      const upper = stack.mcpUrl.replace('http://localhost', 'HTTP://LOCALHOST');
      for (const resource of [upper, `${stack.mcpUrl}/`, undefined]) {
        const { token } = await codeFlow({
          baseUrl: stack.baseUrl,
          clientId: nativeClient,
          redirectUri: 'http://127.0.0.1:5556/cb',
          scope: 'openid',
          resource,
        });
        expect(token.status, `${resource}: ${JSON.stringify(token.body)}`).to.equal(200);
        expect((await mcpInitialize(stack.mcpUrl, token.body.access_token)).status).to.equal(200);
      }
    });

    it('refresh requests honour resource too: ours (loosely spelled) passes, another is invalid_target', async function () {
      const { token } = await codeFlow({
        baseUrl: stack.baseUrl,
        clientId: nativeClient,
        redirectUri: 'http://127.0.0.1:5559/cb',
        scope: 'openid',
      });
      const refresh = (refreshToken: string, resource: string) =>
        tokenRequest(stack.baseUrl, {
          grant_type: 'refresh_token',
          refresh_token: refreshToken,
          client_id: nativeClient,
          resource,
        });
      // Refused before oidc-provider rotates anything: the refresh token still works afterwards.
      const other = await refresh(token.body.refresh_token!, 'https://evil.example/mcp');
      expect(other.status).to.equal(400);
      expect(other.body.error).to.equal('invalid_target');
      const ours = await refresh(token.body.refresh_token!, `${stack.mcpUrl}/`);
      expect(ours.status, JSON.stringify(ours.body)).to.equal(200);
      expect((await mcpInitialize(stack.mcpUrl, ours.body.access_token)).status).to.equal(200);
    });

    it('R3: a token issued for another resource sharing our store is refused on /mcp', async function () {
      // Same store and keys: one deployment's token offered to another. Refused here whether by the
      // audience or later (its upstream credentials are not ours); test/authenticate.test.ts
      // isolates the audience check itself.
      const other = await startStack({
        env: {
          MCP_AUTH_PROXY_REDIS_KEY_PREFIX: stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX,
          OIDC_PROVIDER_JWKS: stack.env.OIDC_PROVIDER_JWKS,
        },
      });
      try {
        const client = (
          await registerClient(other.baseUrl, { application_type: 'native', redirect_uris: [nativeRedirect] })
        ).body.client_id!;
        const { token } = await codeFlow({
          baseUrl: other.baseUrl,
          clientId: client,
          redirectUri: 'http://127.0.0.1:5557/cb',
          scope: 'openid',
        });
        expect((await mcpInitialize(other.mcpUrl, token.body.access_token)).status).to.equal(200);
        const res = await mcpInitialize(stack.mcpUrl, token.body.access_token);
        expect(res.status).to.equal(401);
        expect(res.headers.get('www-authenticate')).to.contain('error="invalid_token"');
      } finally {
        await other.close();
      }
    });
  });

  describe('bodies a client got wrong are answered in JSON, never as a 500', function () {
    it('malformed JSON at registration: 400 invalid_client_metadata', async function () {
      const res = await fetch(`${stack.baseUrl}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"redirect_uris": [',
      });
      expect(res.status).to.equal(400);
      expect(((await res.json()) as { error: string }).error).to.equal('invalid_client_metadata');
    });

    it('an oversized registration: 413 in JSON', async function () {
      const res = await fetch(`${stack.baseUrl}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ redirect_uris: ['https://client.example/cb'], client_name: 'x'.repeat(40_000) }),
      });
      expect(res.status).to.equal(413);
      expect(((await res.json()) as { error: string }).error).to.equal('invalid_client_metadata');
    });

    it('an oversized token request: 413 invalid_request in JSON', async function () {
      const res = await tokenRequest(stack.baseUrl, { grant_type: 'refresh_token', refresh_token: 'x'.repeat(70_000) });
      expect(res.status).to.equal(413);
      expect(res.body.error).to.equal('invalid_request');
    });

    it('an oversized consent form: a 413 page', async function () {
      const res = await fetch(`${stack.baseUrl}/interaction/abc/confirm`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `csrf=${'x'.repeat(10_000)}`,
      });
      expect(res.status).to.equal(413);
      expect(res.headers.get('content-type')).to.match(/text\/html/);
    });
  });

  it('R15/R17: iss in the authorization response, no-store on token responses', async function () {
    const { redirect, token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: nativeClient,
      redirectUri: 'http://127.0.0.1:5558/cb',
      scope: 'openid',
      state: 's',
    });
    expect(redirect.searchParams.get('iss')).to.equal(stack.baseUrl);
    expect(token.headers.get('cache-control')).to.equal('no-store');
    const metadata = (await (await fetch(`${stack.baseUrl}/.well-known/oauth-authorization-server`)).json()) as Record<
      string,
      unknown
    >;
    expect(metadata.authorization_response_iss_parameter_supported).to.equal(true);
  });
});

describe('R5: insufficient scope', function () {
  let stack: Stack;
  useStack((started) => (stack = started), {
    redis: false,
    env: { PROVIDER_SCOPE: 'openid offline_access mcp:tools' },
  });

  it('answers 403 insufficient_scope naming every scope needed, and a token with it works', async function () {
    const client = (
      await registerClient(stack.baseUrl, { application_type: 'native', redirect_uris: ['http://127.0.0.1/cb'] })
    ).body.client_id!;
    const narrow = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: client,
      redirectUri: 'http://127.0.0.1:5601/cb',
      scope: 'openid',
    });
    const res = await mcpInitialize(stack.mcpUrl, narrow.token.body.access_token);
    expect(res.status).to.equal(403);
    const challenge = res.headers.get('www-authenticate')!;
    expect(challenge).to.contain('error="insufficient_scope"');
    expect(challenge).to.contain('scope="openid mcp:tools"');
    expect(challenge).to.contain('resource_metadata="');
    expect(challenge).to.not.contain('offline_access');

    const wide = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: client,
      redirectUri: 'http://127.0.0.1:5602/cb',
      scope: 'openid mcp:tools',
    });
    expect((await mcpInitialize(stack.mcpUrl, wide.token.body.access_token)).status).to.equal(200);
  });

  it('every 401 carries the scope and no offline_access (R2)', async function () {
    const res = await fetch(stack.mcpUrl, { method: 'POST' });
    expect(res.headers.get('www-authenticate')).to.contain('scope="openid mcp:tools"');
    const prm = (await (await fetch(`${stack.baseUrl}/.well-known/oauth-protected-resource`)).json()) as {
      scopes_supported: string[];
    };
    expect(prm.scopes_supported).to.deep.equal(['openid', 'mcp:tools']);
  });
});

describe('signing keys other than RSA', function () {
  for (const [name, alg, options] of [
    ['EC P-256', 'ES256', { crv: 'P-256' }],
    ['Ed25519', 'Ed25519', { crv: 'Ed25519' }],
  ] as const) {
    it(`an ${name}-only OIDC_PROVIDER_JWKS registers clients and signs ID tokens with ${alg}`, async function () {
      const { privateKey } = await generateKeyPair(alg === 'ES256' ? 'ES256' : 'EdDSA', {
        extractable: true,
        ...options,
      });
      const jwks = { keys: [{ ...(await exportJWK(privateKey)), kid: 'k1' }] };
      const stack = await startStack({ redis: false, env: { OIDC_PROVIDER_JWKS: JSON.stringify(jwks) } });
      try {
        const reg = await registerClient(stack.baseUrl, {
          application_type: 'native',
          redirect_uris: ['http://127.0.0.1/cb'],
        });
        expect(reg.status, JSON.stringify(reg.body)).to.equal(201);
        expect(reg.body.id_token_signed_response_alg).to.equal(alg);
        const { token } = await codeFlow({
          baseUrl: stack.baseUrl,
          clientId: reg.body.client_id!,
          redirectUri: 'http://127.0.0.1:5701/cb',
          scope: 'openid',
        });
        expect(token.status).to.equal(200);
        const idToken = (token.body as unknown as { id_token: string }).id_token;
        expect(JSON.parse(Buffer.from(idToken.split('.')[0]!, 'base64url').toString()).alg).to.equal(alg);
      } finally {
        await stack.close();
      }
    });
  }
});
