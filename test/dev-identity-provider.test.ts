import { expect } from 'chai';
import * as client from 'openid-client';

import {
  startDevIdentityProvider,
  type DevIdentityProvider,
  type DevIdentityProviderOptions,
} from '../lib/dev/identity-provider.ts';
import { createBrowser, parseForms, type Browser } from './helpers/browser.ts';

// Nothing listens here: the flow stops at the redirect and reads the code from its Location.
const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const SCOPE = 'openid profile email offline_access';

interface Session {
  idp: DevIdentityProvider;
  config: client.Configuration;
  browser: Browser;
}

async function start(options: Partial<DevIdentityProviderOptions> = {}): Promise<DevIdentityProvider> {
  return startDevIdentityProvider({ redirectUris: [REDIRECT_URI], ...options });
}

async function discover(idp: DevIdentityProvider, auth: client.ClientAuth): Promise<client.Configuration> {
  return client.discovery(new URL(idp.issuer), idp.clientId, undefined, auth, {
    execute: [client.allowInsecureRequests],
  });
}

/** Authorization request as the proxy makes it: PKCE S256 and state. */
async function authorizationRequest(config: client.Configuration) {
  const pkceCodeVerifier = client.randomPKCECodeVerifier();
  const expectedState = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: SCOPE,
    state: expectedState,
    code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
    code_challenge_method: 'S256',
  });
  return { url: url.href, checks: { pkceCodeVerifier, expectedState } };
}

const atRedirectUri = (url: string) => url.startsWith(REDIRECT_URI);

/** Log in through the form as `login` and exchange the code. */
async function signIn(session: Session, login: string) {
  const request = await authorizationRequest(session.config);
  const form = await session.browser.follow(request.url, { stopAt: atRedirectUri });
  expect(form.status, form.body).to.equal(200);
  const callback = await session.browser.submitForm(form.body, form.url, { login }, { stopAt: atRedirectUri });
  expect(callback.location, callback.body).to.be.a('string');
  return client.authorizationCodeGrant(session.config, new URL(callback.location!), request.checks);
}

async function userinfoStatus(idp: DevIdentityProvider, accessToken: string): Promise<number> {
  const response = await fetch(`${idp.issuer}/me`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  await response.arrayBuffer();
  return response.status;
}

async function refreshError(config: client.Configuration, refreshToken: string): Promise<client.ResponseBodyError> {
  try {
    await client.refreshTokenGrant(config, refreshToken);
  } catch (err) {
    if (err instanceof client.ResponseBodyError) return err;
    throw err;
  }
  throw new Error('the refresh succeeded');
}

describe('development identity provider', () => {
  let idp: DevIdentityProvider;
  let session: Session;

  beforeEach(async () => {
    idp = await start();
    session = {
      idp,
      config: await discover(idp, client.ClientSecretBasic(idp.clientSecret)),
      browser: createBrowser(),
    };
  });

  afterEach(async () => {
    await idp.close();
  });

  it('listens on loopback only, with an http issuer carrying the port', () => {
    expect(idp.issuer).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(session.config.serverMetadata().issuer).to.equal(idp.issuer);
    expect(idp.clientId).to.equal('mcp-auth-proxy-dev');
    expect(idp.clientSecret).to.have.length.greaterThan(30);
  });

  it('serves a login form with a login field defaulting to dev-user', async () => {
    const request = await authorizationRequest(session.config);
    const page = await session.browser.follow(request.url, { stopAt: atRedirectUri });

    expect(page.status).to.equal(200);
    expect(page.url).to.match(/\/interaction\/[^/]+$/);
    const [form] = parseForms(page.body, page.url);
    expect(form?.method).to.equal('POST');
    expect(form?.action).to.equal(`${page.url}/login`);
    expect(form?.fields).to.deep.equal([['login', 'dev-user']]);
  });

  it('completes authorization code + PKCE: tokens, ID token and userinfo for the account typed in', async () => {
    const tokens = await signIn(session, 'alice');

    expect(tokens.access_token).to.be.a('string');
    expect(tokens.refresh_token).to.be.a('string');
    expect(tokens.claims()?.sub).to.equal('alice');
    expect(idp.stats).to.deep.equal({ authorizations: 1, codeExchanges: 1, refreshes: 0 });

    const userinfo = await client.fetchUserInfo(session.config, tokens.access_token, 'alice');
    expect(userinfo).to.include({ sub: 'alice', name: 'alice', email: 'alice@example.test' });
    // The bearer check the example MCP server makes: a plain GET to userinfo.
    expect(await userinfoStatus(idp, tokens.access_token)).to.equal(200);
  });

  it('requires PKCE even from a confidential client (RFC 9700 §2.1.1)', async () => {
    const url = client.buildAuthorizationUrl(session.config, {
      redirect_uri: REDIRECT_URI,
      scope: SCOPE,
      state: client.randomState(),
    });
    const page = await session.browser.follow(url.href, { stopAt: atRedirectUri });

    const params = new URL(page.location!).searchParams;
    expect(params.get('error')).to.equal('invalid_request');
    expect(params.get('error_description')).to.match(/PKCE/);
  });

  it('re-renders the form for an empty login', async () => {
    const request = await authorizationRequest(session.config);
    const form = await session.browser.follow(request.url);
    const page = await session.browser.submitForm(form.body, form.url, { login: '  ' });

    expect(page.status).to.equal(400);
    expect(parseForms(page.body, page.url)[0]?.fields).to.deep.equal([['login', '']]);
  });

  it('remembers the session: a second authorization needs no form', async () => {
    await signIn(session, 'alice');
    const request = await authorizationRequest(session.config);
    const callback = await session.browser.follow(request.url, { stopAt: atRedirectUri });
    const tokens = await client.authorizationCodeGrant(session.config, new URL(callback.location!), request.checks);

    expect(tokens.claims()?.sub).to.equal('alice');
    expect(idp.stats.authorizations).to.equal(2);
  });

  it('refreshes with rotation: new tokens, and the rotated refresh token is spent', async () => {
    const first = await signIn(session, 'alice');
    const second = await client.refreshTokenGrant(session.config, first.refresh_token!);

    expect(second.access_token).to.be.a('string').and.not.equal(first.access_token);
    expect(second.refresh_token).to.be.a('string').and.not.equal(first.refresh_token);
    expect(idp.stats.refreshes).to.equal(1);
    expect(await userinfoStatus(idp, second.access_token)).to.equal(200);

    const reuse = await refreshError(session.config, first.refresh_token!);
    expect(reuse.error).to.equal('invalid_grant');
  });

  it('expireAccessTokens(): userinfo answers 401 and a refresh recovers', async () => {
    const tokens = await signIn(session, 'alice');
    await idp.expireAccessTokens();

    const response = await fetch(`${idp.issuer}/me`, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    expect(response.status).to.equal(401);
    expect(response.headers.get('www-authenticate')).to.match(/error="invalid_token"/);
    await response.arrayBuffer();

    const refreshed = await client.refreshTokenGrant(session.config, tokens.refresh_token!);
    expect(await userinfoStatus(idp, refreshed.access_token)).to.equal(200);
  });

  it('revokeRefreshTokens(): the refresh fails with invalid_grant', async () => {
    const tokens = await signIn(session, 'alice');
    await idp.revokeRefreshTokens();

    const err = await refreshError(session.config, tokens.refresh_token!);
    expect(err.error).to.equal('invalid_grant');
    expect(err.status).to.equal(400);
    expect(idp.stats.refreshes).to.equal(0);
  });

  it('setTokenEndpointFailure(503): refreshes fail without spending the refresh token', async () => {
    const tokens = await signIn(session, 'alice');
    idp.setTokenEndpointFailure(503);

    // openid-client reads OAuth error bodies of 4xx answers only; a 5xx surfaces as a
    // ClientError whose cause is the Response.
    let failure: unknown;
    await client.refreshTokenGrant(session.config, tokens.refresh_token!).catch((err: unknown) => {
      failure = err;
    });
    expect(failure).to.be.instanceOf(client.ClientError);
    expect((failure as client.ClientError).code).to.equal('OAUTH_RESPONSE_IS_NOT_CONFORM');
    const response = (failure as client.ClientError).cause as Response;
    expect(response.status).to.equal(503);
    expect(response.headers.get('retry-after')).to.equal('1');
    expect(idp.stats.refreshes).to.equal(0);

    idp.setTokenEndpointFailure(undefined);
    const refreshed = await client.refreshTokenGrant(session.config, tokens.refresh_token!);
    expect(refreshed.access_token).to.be.a('string');
    expect(idp.stats.refreshes).to.equal(1);
  });

  it('setTokenEndpointFailure(429): refresh answers 429', async () => {
    const tokens = await signIn(session, 'alice');
    idp.setTokenEndpointFailure(429);

    const err = await refreshError(session.config, tokens.refresh_token!);
    expect(err.status).to.equal(429);
    expect(err.error).to.equal('temporarily_unavailable');
    expect(err.response.headers.get('retry-after')).to.equal('1');
  });

  it('setTokenEndpointFailure only affects refresh_token grants: codes still exchange', async () => {
    idp.setTokenEndpointFailure(503);
    const tokens = await signIn(session, 'alice');

    expect(tokens.claims()?.sub).to.equal('alice');
    expect(idp.stats.codeExchanges).to.equal(1);
  });

  it('refuses a status that is not an HTTP error', () => {
    expect(() => idp.setTokenEndpointFailure(200)).to.throw(/not an HTTP error status/);
  });
});

describe('development identity provider options', () => {
  let idp: DevIdentityProvider | undefined;

  afterEach(async () => {
    await idp?.close();
    idp = undefined;
  });

  it('autoLogin: the authorization redirects straight back, logged in as that account', async () => {
    idp = await start({ autoLogin: 'robot' });
    const config = await discover(idp, client.ClientSecretBasic(idp.clientSecret));
    const request = await authorizationRequest(config);

    const callback = await createBrowser().follow(request.url, { stopAt: atRedirectUri });
    const tokens = await client.authorizationCodeGrant(config, new URL(callback.location!), request.checks);

    expect(tokens.claims()?.sub).to.equal('robot');
  });

  for (const [method, auth] of [
    ['client_secret_post', (secret: string) => client.ClientSecretPost(secret)],
    ['none', () => client.None()],
  ] as const) {
    it(`token endpoint auth method ${method}, with given client id and secret`, async () => {
      idp = await start({
        tokenEndpointAuthMethod: method,
        clientId: 'custom-client',
        clientSecret: 'custom-secret-0123456789abcdef',
        accessTokenTtl: 120,
      });
      const config = await discover(idp, auth(idp.clientSecret));
      const tokens = await signIn({ idp, config, browser: createBrowser() }, 'bob');

      expect(idp.clientId).to.equal('custom-client');
      expect(tokens.expires_in).to.equal(120);
      const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!);
      expect(refreshed.access_token).to.be.a('string');
    });
  }

  it('a client presenting the wrong secret is refused with invalid_client', async () => {
    idp = await start();
    const config = await discover(idp, client.ClientSecretBasic('not-the-secret'));
    const request = await authorizationRequest(config);
    const browser = createBrowser();
    const form = await browser.follow(request.url);
    const callback = await browser.submitForm(form.body, form.url, {}, { stopAt: atRedirectUri });

    let failure: unknown;
    await client.authorizationCodeGrant(config, new URL(callback.location!), request.checks).catch((err: unknown) => {
      failure = err;
    });

    // A 401 with a WWW-Authenticate challenge, which openid-client reports as such, not as a body error.
    expect(failure).to.be.instanceOf(client.WWWAuthenticateChallengeError);
    const challenge = failure as client.WWWAuthenticateChallengeError;
    expect(challenge.status).to.equal(401);
    expect(challenge.cause[0]?.parameters.error).to.equal('invalid_client');
    expect(idp.stats.codeExchanges).to.equal(0);
  });

  it('is refused in production', async () => {
    const previous = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      let refused: unknown;
      await start().then(
        (started) => {
          idp = started;
        },
        (err: unknown) => {
          refused = err;
        },
      );
      expect(refused).to.be.instanceOf(Error);
      expect((refused as Error).message).to.equal('the development identity provider is refused in production');
    } finally {
      if (previous === undefined) delete process.env.NODE_ENV;
      else process.env.NODE_ENV = previous;
    }
  });

  it("keeps separate instances apart: one provider does not accept the other's tokens", async () => {
    idp = await start();
    const other = await start();
    try {
      const config = await discover(other, client.ClientSecretBasic(other.clientSecret));
      const tokens = await signIn({ idp: other, config, browser: createBrowser() }, 'carol');

      expect(await userinfoStatus(other, tokens.access_token)).to.equal(200);
      expect(await userinfoStatus(idp, tokens.access_token)).to.equal(401);
    } finally {
      await other.close();
    }
  });
});

describe('browser helper', () => {
  it('parses forms as a browser submits them: entities decoded, unchecked and button controls left out', () => {
    const html = `
      <form method="POST" action="/consent?a=1&amp;b=2">
        <input type="hidden" name="return_to" value="https://x.test/?q=1&amp;r=&quot;2&quot;">
        <input type="checkbox" name="remember">
        <input type="checkbox" name="scopes" value="mcp" checked>
        <textarea name="note">a &lt; b</textarea>
        <select name="org"><option value="one">One</option><option value="two" selected>Two</option></select>
        <button type="submit" name="decision" value="approve">Approve</button>
        <input type="submit" name="decision" value="deny">
      </form>
      <form action='https://other.test/search'><input name=q value=mcp></form>`;

    const [consent, search] = parseForms(html, 'http://127.0.0.1:1234/authorize/abc');

    expect(consent).to.deep.equal({
      action: 'http://127.0.0.1:1234/consent?a=1&b=2',
      method: 'POST',
      fields: [
        ['return_to', 'https://x.test/?q=1&r="2"'],
        ['scopes', 'mcp'],
        ['note', 'a < b'],
        ['org', 'two'],
      ],
    });
    expect(search).to.deep.equal({
      action: 'https://other.test/search',
      method: 'GET',
      fields: [['q', 'mcp']],
    });
  });

  it('scopes cookies by path and host but not port, and drops expired ones', () => {
    const browser = createBrowser();
    browser.cookies.store('http://127.0.0.1:1000/interaction/abc', [
      'a=1; path=/interaction/abc; httponly',
      'b=2; path=/',
      'gone=x; path=/; max-age=0',
      'wide=3; Domain=example.test',
    ]);

    expect(browser.cookies.header('http://127.0.0.1:2000/interaction/abc/login')).to.equal('a=1; b=2');
    expect(browser.cookies.header('http://127.0.0.1:1000/interaction/abcd')).to.equal('b=2');
    expect(browser.cookies.header('http://localhost:1000/')).to.equal('');

    browser.cookies.store('http://127.0.0.1:1000/', ['b=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT']);
    expect(browser.cookies.header('http://127.0.0.1:1000/')).to.equal('');
  });
});
