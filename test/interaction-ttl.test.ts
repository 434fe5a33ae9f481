import { expect } from 'chai';
import { Redis } from 'ioredis';
import { LOGIN_TTL } from '../lib/auth-server/policy.ts';
import { hashId } from '../lib/store/hash.ts';
import { createBrowser, parseForms, type Browser, type Page } from './helpers/browser.ts';
import { authorizationUrl, pkce, registerNativeClient, tokenRequest } from './helpers/oauth.ts';
import { dumpRedis } from './helpers/redis.ts';
import { type Stack, useStack } from './helpers/stack.ts';

const REDIRECT = 'http://127.0.0.1:33419/callback';

/**
 * Issue 9: an interaction nobody acts on lives only as long as the consent page needs; consent
 * (given on the page or remembered) extends it, and the cookies pointing at it, to the upstream
 * round trip's ten minutes (R20), so a real login is not shortened.
 */
describe('interaction lifetime: short until consent, the upstream round trip after', function () {
  let stack: Stack;
  let redis: Redis;
  let clientId: string;
  useStack((started) => (stack = started));

  before(async function () {
    redis = new Redis(process.env.TEST_REDIS_URL!);
    clientId = await registerNativeClient(stack.baseUrl, 'Interaction TTL Client', REDIRECT);
  });
  after(() => redis.disconnect());

  const prefix = () => stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
  const interactionKey = (uid: string) => `${prefix()}oidc:Interaction:${hashId(uid)}`;
  const uidOf = (page: Page) => new URL(page.location ?? page.url).pathname.split('/')[2]!;

  /** Seconds left, per the browser's jar, on the cookie `name` that would be sent to `url`. */
  function cookieSecondsLeft(browser: Browser, url: string, name: string): number {
    const cookie = browser.cookies.list(url).find((candidate) => candidate.name === name);
    expect(cookie, `${name} for ${url}`).to.not.equal(undefined);
    return (cookie!.expiresAt - Date.now()) / 1000;
  }

  /** GET /auth: its redirect to our interaction URL, not followed. */
  async function startAuthorization(browser: Browser) {
    const { verifier, challenge } = pkce();
    const auth = await browser.get(authorizationUrl(stack.baseUrl, clientId, REDIRECT, challenge));
    expect(auth.status, auth.body).to.equal(303);
    expect(auth.location).to.match(/\/interaction\/[^/]+$/);
    return { auth, verifier, uid: uidOf(auth) };
  }

  /** From the redirect to the IdP to the client's redirect URI (signing in if the IdP asks), then the code at /token. */
  async function finishUpstream(browser: Browser, toIdp: Page, verifier: string) {
    const stopAt = (url: string) => url.startsWith(REDIRECT);
    let back = await browser.follow(toIdp.location!, { stopAt });
    if (!back.location || !stopAt(back.location)) {
      back = await browser.submitForm(back.body, back.url, { login: 'ttl-user' }, { stopAt });
    }
    const code = new URL(back.location!).searchParams.get('code');
    expect(code, back.location).to.be.a('string');
    return tokenRequest(stack.baseUrl, {
      grant_type: 'authorization_code',
      code: code!,
      redirect_uri: REDIRECT,
      code_verifier: verifier,
      client_id: clientId,
    });
  }

  it('a fresh interaction lives for the consent page only; the consent POST gives it the upstream round trip; the login completes', async function () {
    const browser = createBrowser();
    const { auth, verifier, uid } = await startAuthorization(browser);

    const fresh = await redis.pttl(interactionKey(uid));
    expect(fresh, 'fresh interaction PTTL (ms)').to.be.within(
      LOGIN_TTL.ConsentPage * 1000 - 10_000,
      LOGIN_TTL.ConsentPage * 1000,
    );
    expect(LOGIN_TTL.ConsentPage).to.be.below(LOGIN_TTL.Upstream);
    const resumeUrl = `${stack.baseUrl}/auth/${uid}`;
    expect(cookieSecondsLeft(browser, resumeUrl, '_interaction_resume')).to.be.at.most(LOGIN_TTL.ConsentPage);

    const page = await browser.get(auth.location!);
    expect(page.body).to.contain('Allow and sign in');
    expect(cookieSecondsLeft(browser, page.url, '_interaction')).to.be.at.most(LOGIN_TTL.ConsentPage);
    const [consent] = parseForms(page.body, page.url);
    const toIdp = await browser.post(consent!.action, consent!.fields);
    expect(toIdp.status).to.equal(303);
    expect(toIdp.location).to.match(new RegExp(`^${stack.idp.issuer}/`));

    const extended = await redis.pttl(interactionKey(uid));
    expect(extended, 'interaction PTTL after consent (ms)').to.be.within(
      LOGIN_TTL.Upstream * 1000 - 10_000,
      LOGIN_TTL.Upstream * 1000,
    );
    expect(LOGIN_TTL.Upstream, 'R20: ten minutes at most').to.be.at.most(600);
    // The upstream state dies with the interaction, not later (R20).
    const stateKeys = await redis.keys(`${prefix()}upstream-state:*`);
    const stateTtls = await Promise.all(stateKeys.map((key) => redis.pttl(key)));
    expect(stateTtls.length).to.be.above(0);
    for (const ttl of stateTtls) expect(ttl).to.be.within(1, LOGIN_TTL.Upstream * 1000);
    // Set again exactly as oidc-provider set them (path, HttpOnly, SameSite, Secure, signature),
    // only with the later expiry.
    const attributes = (page: Page) =>
      page.headers
        .getSetCookie()
        .map((line) =>
          line
            .split(';')
            .map((part) => part.trim())
            .filter((part) => !/^expires=/i.test(part))
            .map((part, index) => (index === 0 ? part.split('=')[0] : part.toLowerCase()))
            .join('; '),
        )
        .filter((line) => line.startsWith('_interaction'))
        .sort();
    expect(attributes(toIdp)).to.have.length(4);
    expect(attributes(toIdp)).to.deep.equal(attributes(auth));
    // The browser may now come back to resume and to the consent page for the whole round trip.
    expect(cookieSecondsLeft(browser, resumeUrl, '_interaction_resume')).to.be.within(
      LOGIN_TTL.Upstream - 10,
      LOGIN_TTL.Upstream,
    );
    expect(cookieSecondsLeft(browser, page.url, '_interaction')).to.be.within(
      LOGIN_TTL.Upstream - 10,
      LOGIN_TTL.Upstream,
    );

    const token = await finishUpstream(browser, toIdp, verifier);
    expect(token.status, JSON.stringify(token.body)).to.equal(200);
    expect(token.body.access_token).to.be.a('string');
  });

  it('a remembered consent skips the page and extends the interaction the same way', async function () {
    const browser = createBrowser();
    const first = await startAuthorization(browser);
    const page = await browser.get(first.auth.location!);
    const toIdp = await browser.submitForm(
      page.body,
      page.url,
      {},
      { stopAt: (url) => url.startsWith(stack.idp.issuer) },
    );
    const token = await finishUpstream(browser, toIdp, first.verifier);
    expect(token.status).to.equal(200);

    const again = await startAuthorization(browser);
    expect(await redis.pttl(interactionKey(again.uid))).to.be.at.most(LOGIN_TTL.ConsentPage * 1000);
    const skip = await browser.get(again.auth.location!);
    expect(skip.status, 'consent remembered: straight to the IdP').to.equal(303);
    expect(skip.location).to.match(new RegExp(`^${stack.idp.issuer}/`));
    expect(await redis.pttl(interactionKey(again.uid))).to.be.above(LOGIN_TTL.ConsentPage * 1000);
    const second = await finishUpstream(browser, skip, again.verifier);
    expect(second.status).to.equal(200);
  });

  it('an abandoned authorization request stores one small interaction and nothing else', async function () {
    const before = new Set((await dumpRedis(redis, prefix())).keys());
    const { uid } = await startAuthorization(createBrowser());
    const after = await dumpRedis(redis, prefix());
    const added = [...after.keys()].filter((key) => !before.has(key) && !key.includes('ratelimit:'));
    expect(added).to.deep.equal([interactionKey(uid)]);
    const bytes = Buffer.byteLength(after.get(interactionKey(uid))!);
    // What GET /auth costs until the record expires: the request's parameters, the prompt and
    // the resume URL.
    expect(bytes).to.be.below(1024);
  });
});
