import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { JWK } from 'jose';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { deriveKeyMaterial } from '../lib/auth-server/keys.ts';
import { createBrowser } from './helpers/browser.ts';
import { captureOutput } from './helpers/capture.ts';
import { authorizationUrl, mcpInitialize, pkce, tokenRequest, type TokenResponse } from './helpers/oauth.ts';
import { recordCookies, recordTokens, Secrets } from './helpers/secrets.ts';
import { connectClient, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';

/**
 * R23: tokens, codes, secrets and cookies never reach a log line. Log drains (Heroku's, and
 * whatever the operator forwards them to) are read by more people, kept longer and protected
 * less than the store, so one token in a line is a stolen session.
 *
 * The whole system runs once with every log line captured — the logger at debug level, and
 * anything else written to stdout or stderr — through a confidential client's login, tool calls,
 * a refresh (and its replay), an upstream token refresh, refused requests and two failed upstream
 * logins. Every secret value seen along the way, on either side of the proxy, is then looked for
 * in every line.
 */

const random = () => randomBytes(32).toString('base64url');

describe('R23: no token, code, secret or cookie reaches a log line', function () {
  this.timeout(60_000);
  const lines: string[] = [];
  const secrets = new Secrets();
  const statuses: Record<string, number> = {};

  before(async function () {
    const restore = captureOutput(lines);
    let stack: Stack | undefined;
    try {
      stack = await startStack({ env: { LOG_LEVEL: 'debug' } });
      await runScenario(stack);
    } finally {
      await stack?.close().catch(() => undefined);
      restore();
    }
  });

  async function runScenario(stack: Stack): Promise<void> {
    const { env, idp, baseUrl, mcpUrl } = stack;
    secrets.add('configuration IDENTITY_CLIENT_SECRET', env.IDENTITY_CLIENT_SECRET);
    const jwks = JSON.parse(env.OIDC_PROVIDER_JWKS!) as { keys: JWK[] };
    for (const key of jwks.keys) {
      for (const param of ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const) {
        secrets.add(`configuration OIDC_PROVIDER_JWKS private "${param}"`, key[param]);
      }
    }
    const derived = deriveKeyMaterial(jwks);
    for (const [name, ring] of Object.entries({
      csrfKeys: derived.csrfKeys,
      vaultKeys: derived.vaultKeys,
      grantSecretCookieKeys: derived.grantSecretCookieKeys,
    })) {
      for (const key of ring) {
        for (const encoding of ['base64url', 'base64', 'hex'] as const) {
          secrets.add(`configuration derived ${name}`, key.toString(encoding));
        }
      }
    }
    derived.cookieKeys.forEach((key) => secrets.add('configuration derived cookie key', key));

    // The upstream side: what the identity provider hands the proxy, seen from the provider.
    // oidc-provider passes the authorization response as a second argument its types leave out.
    idp.provider.on('authorization.success', (ctx: KoaContextWithOIDC, out?: Record<string, unknown>) => {
      secrets.add('upstream authorization code', out?.code);
      secrets.add('upstream state', out?.state);
      secrets.add('upstream nonce', ctx.oidc.params?.nonce);
    });
    idp.provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
      secrets.add('upstream code_verifier', ctx.oidc.params?.code_verifier);
      recordTokens(secrets, 'upstream', ctx.body as TokenResponse);
    });

    // A confidential client (client_secret_post) logs in through the SDK's whole OAuth flow.
    const oauth = new TestOAuthClient({
      user: 'alice',
      metadata: { token_endpoint_auth_method: 'client_secret_post' },
    });
    recordCookies(oauth.browser, secrets);
    const client = await connectClient(mcpUrl, oauth);
    const clientId = oauth.info!.client_id;
    const clientSecret = oauth.info!.client_secret;
    expect(clientSecret, 'registered client_secret').to.be.a('string');
    secrets.add('client_secret', clientSecret);
    secrets.addToken('authorization code', oauth.lastRedirect?.searchParams.get('code'));
    secrets.add('PKCE code_verifier', oauth.verifier);
    recordTokens(secrets, 'login', oauth.savedTokens!);

    await client.callTool({ name: 'whoami', arguments: {} });
    await client.callTool({ name: 'echo', arguments: { message: 'hello' } });
    await client.close();

    // A refresh, and its replay inside the grace window (lib/auth-server/refresh-grace.ts).
    const refreshParams = {
      grant_type: 'refresh_token',
      refresh_token: oauth.savedTokens!.refresh_token!,
      client_id: clientId,
      client_secret: clientSecret!,
    };
    const refreshed = await tokenRequest(baseUrl, refreshParams);
    statuses.refresh = refreshed.status;
    recordTokens(secrets, 'refresh', refreshed.body);
    const replayed = await tokenRequest(baseUrl, refreshParams);
    recordTokens(secrets, 'refresh replay', replayed.body);

    statuses.mcp = (await mcpInitialize(mcpUrl, refreshed.body.access_token)).status;
    // Upstream access tokens die: the proxy refreshes upstream and retries.
    await idp.expireAccessTokens();
    statuses.mcpAfterUpstreamExpiry = (await mcpInitialize(mcpUrl, refreshed.body.access_token)).status;

    // Refused requests carry credentials too, made up or stolen: they are no less secret.
    const forgedBearer = random();
    secrets.add('refused request: forged bearer token', forgedBearer);
    statuses.forgedBearer = (await mcpInitialize(mcpUrl, forgedBearer)).status;
    const forgedRefresh = random();
    secrets.add('refused request: forged refresh token', forgedRefresh);
    statuses.forgedRefresh = (await tokenRequest(baseUrl, { ...refreshParams, refresh_token: forgedRefresh })).status;
    const wrongSecret = random();
    secrets.add('refused request: wrong client_secret', wrongSecret);
    statuses.wrongSecret = (
      await tokenRequest(baseUrl, {
        ...refreshParams,
        refresh_token: refreshed.body.refresh_token!,
        client_secret: wrongSecret,
      })
    ).status;

    // Two failed logins: a callback with a state nobody issued, then one with the real state
    // and a code the identity provider never issued.
    const browser = createBrowser();
    recordCookies(browser, secrets);
    const atIdp = (url: string) => url.startsWith(idp.issuer);
    const consent = await browser.follow(authorizationUrl(baseUrl, clientId, oauth.redirectUrl, pkce().challenge), {
      stopAt: atIdp,
    });
    expect(consent.body, 'consent page').to.contain('Allow and sign in');
    const toIdp = await browser.submitForm(consent.body, consent.url, {}, { stopAt: atIdp });
    const upstreamRequest = new URL(toIdp.location!);
    const state = upstreamRequest.searchParams.get('state');
    secrets.add('upstream state', state);
    secrets.add('upstream nonce', upstreamRequest.searchParams.get('nonce'));
    const callback = `${baseUrl}/interaction/identity/callback`;
    const badState = random();
    const badCode = random();
    secrets.add('refused request: state of a failed login', badState);
    secrets.add('refused request: code of a failed login', badCode);
    statuses.badState = (
      await browser.get(`${callback}?${new URLSearchParams({ code: badCode, state: badState, iss: idp.issuer })}`)
    ).status;
    statuses.badCode = (
      await browser.get(`${callback}?${new URLSearchParams({ code: badCode, state: state!, iss: idp.issuer })}`)
    ).status;
  }

  it('ran the whole scenario, with the expected answers', function () {
    expect(statuses).to.deep.equal({
      refresh: 200,
      mcp: 200,
      mcpAfterUpstreamExpiry: 200,
      forgedBearer: 401,
      forgedRefresh: 400,
      wrongSecret: 401,
      badState: 400,
      badCode: 400,
    });
  });

  it('captured the log lines of every step, debug level included (the capture works)', function () {
    const all = lines.join('\n');
    for (const message of [
      'level=debug msg="app created"',
      'msg="proxy listening"',
      'msg="login completed"',
      'msg="upstream token refreshed"',
      'msg="refresh token replayed within the grace window"',
      'msg="oauth request refused"',
      'msg="upstream login failed"',
    ]) {
      expect(all, message).to.contain(message);
    }
  });

  it('saw every kind of secret it looks for', function () {
    const labels = secrets.labels().join('\n');
    for (const kind of [
      'configuration IDENTITY_CLIENT_SECRET',
      'configuration OIDC_PROVIDER_JWKS private "d"',
      'client_secret',
      'authorization code',
      'grant secret in authorization code',
      'login access token',
      'login refresh token',
      'refresh access token',
      'refresh refresh token',
      'upstream authorization code',
      'upstream access token',
      'upstream refresh token',
      'upstream state',
      'cookie _session from localhost',
      'cookie _interaction from localhost',
      'cookie _dev_idp_session from 127.0.0.1',
      'refused request: code of a failed login',
    ]) {
      expect(labels, kind).to.contain(kind);
    }
  });

  for (const [title, prefix] of [
    ['IDENTITY_CLIENT_SECRET, the OIDC_PROVIDER_JWKS private key, or a key derived from it', 'configuration'],
    ["the registered client's client_secret", 'client_secret'],
    ['our authorization code', 'authorization code'],
    ["the client's PKCE code_verifier", 'PKCE'],
    ['our access, refresh or id token from the login', 'login'],
    ['our tokens from a refresh or its replay', 'refresh'],
    ["a grant's secret G (inside our codes and tokens)", 'grant secret'],
    ["the upstream IdP's code, state, nonce, code_verifier or tokens", 'upstream'],
    ['a cookie the browser received, from the proxy or the IdP', 'cookie'],
    ['a credential of a refused request (forged tokens, wrong secret, bad state or code)', 'refused request'],
    ['any of the above', ''],
  ] as const) {
    it(`no log line holds ${title}`, function () {
      expect(secrets.leaks(lines, prefix)).to.deep.equal([]);
    });
  }
});
