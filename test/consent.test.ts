import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createBrowser, parseForms, type Browser, type Page } from './helpers/browser.ts';
import { authorizationUrl, pkce, registerClient } from './helpers/oauth.ts';
import { type Stack, useStack } from './helpers/stack.ts';
import { consentKey, consentRedirectUri } from '../lib/interactions/consent.ts';

const CALLBACK = '/interaction/identity/callback';
const LOOPBACK_REDIRECT = 'http://127.0.0.1:33418/callback';
const SCHEME_REDIRECT = 'cursor://consent.test/oauth/callback';

interface RegisteredClient {
  clientId: string;
}

interface Authorization {
  url: string;
  verifier: string;
  redirectUri: string;
}

/** What a login did in the browser, hop by hop. */
interface Login {
  /** Every response the browser received, in order. */
  pages: Page[];
  /** How many times our consent page was answered. */
  consentPages: number;
  /** How many times the upstream IdP's login form was answered. */
  idpForms: number;
  /** The redirect to the client's redirect URI (not requested). */
  back: URL;
}

const isRedirect = (page: Page) => [301, 302, 303, 307, 308].includes(page.status) && page.location !== undefined;
const isConsentPage = (page: Page) => page.status === 200 && page.body.includes('Allow and sign in');

describe('consent (R19) and the consent page', function () {
  let stack: Stack;
  useStack((started) => (stack = started));

  async function register(metadata: Record<string, unknown> = {}): Promise<RegisteredClient> {
    const res = await registerClient(stack.baseUrl, {
      client_name: 'Consent Test Client',
      redirect_uris: [LOOPBACK_REDIRECT, SCHEME_REDIRECT],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      ...metadata,
    });
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    return { clientId: res.body.client_id! };
  }

  function authorization(
    client: RegisteredClient,
    redirectUri = LOOPBACK_REDIRECT,
    extra: Record<string, string> = {},
  ): Authorization {
    const { verifier, challenge } = pkce();
    const url = authorizationUrl(stack.baseUrl, client.clientId, redirectUri, challenge, {
      state: randomBytes(8).toString('hex'),
      ...extra,
    });
    return { url, verifier, redirectUri };
  }

  /** Follows redirects by hand from `page`, recording each response, stopping before `stopAt`. */
  async function chase(browser: Browser, page: Page, pages: Page[], stopAt: (url: string) => boolean): Promise<Page> {
    pages.push(page);
    let current = page;
    while (isRedirect(current) && !stopAt(current.location!)) {
      if (pages.length > 40) throw new Error('redirect loop');
      current = await browser.get(current.location!);
      pages.push(current);
    }
    return current;
  }

  /**
   * A person at the browser: confirms our consent page whenever it appears, signs in as `user`
   * whenever the IdP asks, and stops at the client's redirect URI (or wherever `stopAt` says).
   */
  async function login(
    browser: Browser,
    auth: Authorization,
    user: string,
    stopAt: (url: string) => boolean = (url) => url.startsWith(auth.redirectUri),
  ): Promise<Login & { last: Page }> {
    const pages: Page[] = [];
    let consentPages = 0;
    let idpForms = 0;
    let page = await chase(browser, await browser.get(auth.url), pages, stopAt);
    for (let steps = 0; !(isRedirect(page) && stopAt(page.location!)); steps += 1) {
      if (steps > 8) throw new Error('the login does not end');
      const [form] = parseForms(page.body, page.url);
      if (isConsentPage(page) && form) {
        consentPages += 1;
        page = await chase(browser, await browser.post(form.action, form.fields), pages, stopAt);
      } else if (page.url.startsWith(stack.idp.issuer) && form) {
        idpForms += 1;
        page = await chase(browser, await browser.post(form.action, { login: user }), pages, stopAt);
      } else if (page.url.startsWith(stack.baseUrl) && page.body.includes('document.forms[0].submit()') && form) {
        // oidc-provider ends a session whose account differs from the new login with a form
        // that a browser submits by script.
        page = await chase(browser, await browser.post(form.action, form.fields), pages, stopAt);
      } else {
        throw new Error(`unexpected ${page.status} at ${page.url}: ${page.body.slice(0, 300)}`);
      }
    }
    return { pages, consentPages, idpForms, back: new URL(page.location!), last: page };
  }

  /** Which upstream user an authorization code logged in: redeem it and ask the MCP server. */
  async function userOf(client: RegisteredClient, auth: Authorization, back: URL): Promise<string> {
    const code = back.searchParams.get('code');
    expect(code, back.href).to.be.a('string');
    const res = await fetch(`${stack.baseUrl}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: code!,
        code_verifier: auth.verifier,
        redirect_uri: auth.redirectUri,
        client_id: client.clientId,
      }),
    });
    expect(res.status).to.equal(200);
    const { access_token } = (await res.json()) as { access_token: string };
    const mcp = new Client({ name: 'consent-test', version: '1.0.0' });
    await mcp.connect(
      new StreamableHTTPClientTransport(new URL(stack.mcpUrl), {
        requestInit: { headers: { authorization: `Bearer ${access_token}` } },
      }),
    );
    try {
      const result = (await mcp.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
      return (JSON.parse(result.content[0]!.text) as { userId: string }).userId;
    } finally {
      await mcp.close();
    }
  }

  /** Our consent page for a new authorization request, and the browser holding it. */
  async function consentPage(
    client: RegisteredClient,
    browser = createBrowser(),
  ): Promise<{ browser: Browser; page: Page }> {
    const page = await browser.follow(authorization(client).url);
    expect(isConsentPage(page), `${page.status} at ${page.url}`).to.equal(true);
    return { browser, page };
  }

  describe('remembered consent', function () {
    it('a first login shows the consent page', async function () {
      const client = await register();
      const first = await login(createBrowser(), authorization(client), 'ada');
      expect(first.consentPages).to.equal(1);
      expect(first.back.searchParams.get('code')).to.be.a('string');
    });

    it('the same user, client and redirect URI in the same browser skip the page, and still log in upstream', async function () {
      const client = await register();
      const browser = createBrowser();
      await login(browser, authorization(client), 'ben');
      const upstreamBefore = stack.idp.stats.authorizations;

      const auth = authorization(client);
      const again = await login(browser, auth, 'ben');
      expect(again.pages.filter(isConsentPage), 'no consent page along the redirect chain').to.have.length(0);
      expect(again.consentPages).to.equal(0);
      // The skip leads straight to the IdP: our interaction URL answers with the upstream redirect.
      const skip = again.pages.find((page) => page.url.startsWith(`${stack.baseUrl}/interaction/`))!;
      expect(skip.status).to.equal(303);
      expect(skip.location).to.match(new RegExp(`^${stack.idp.issuer}/`));
      expect(stack.idp.stats.authorizations, 'one more upstream login').to.equal(upstreamBefore + 1);
      expect(await userOf(client, auth, again.back)).to.equal('ben');
    });

    it('a different redirect URI of the same client asks again', async function () {
      const client = await register();
      const browser = createBrowser();
      await login(browser, authorization(client, LOOPBACK_REDIRECT), 'cleo');

      const other = await login(browser, authorization(client, SCHEME_REDIRECT), 'cleo');
      expect(other.consentPages, 'new redirect URI').to.equal(1);
      expect(other.back.protocol).to.equal('cursor:');

      // Both are remembered now, each on its own.
      expect((await login(browser, authorization(client, SCHEME_REDIRECT), 'cleo')).consentPages).to.equal(0);
      expect((await login(browser, authorization(client, LOOPBACK_REDIRECT), 'cleo')).consentPages).to.equal(0);
    });

    it('a web client: the same redirect URI skips the page, a changed one asks again', async function () {
      const [first, second] = ['https://web.example/one', 'https://web.example/two'];
      const client = await register({ application_type: 'web', redirect_uris: [first, second] });
      const browser = createBrowser();
      await login(browser, authorization(client, first), 'wes');
      const upstreamBefore = stack.idp.stats.authorizations;
      const same = await login(browser, authorization(client, first), 'wes');
      expect(same.consentPages).to.equal(0);
      // Every authorization still logs in upstream: the session's stored grant is no shortcut.
      expect(stack.idp.stats.authorizations).to.equal(upstreamBefore + 1);
      const changed = await login(browser, authorization(client, second), 'wes');
      expect(changed.consentPages, 'new redirect URI').to.equal(1);
      expect(changed.back.href.startsWith(second)).to.equal(true);
    });

    it('a native client coming back on another loopback port does not ask again (RFC 8252 §7.3)', async function () {
      const client = await register();
      const browser = createBrowser();
      await login(browser, authorization(client, 'http://127.0.0.1:40001/callback'), 'dora');
      const again = await login(browser, authorization(client, 'http://127.0.0.1:40002/callback'), 'dora');
      expect(again.consentPages).to.equal(0);
      expect(again.back.port).to.equal('40002');
      // Only the port is forgiven: another path on loopback is another redirect URI.
      expect(consentRedirectUri('http://127.0.0.1:40002/callback')).to.equal('http://127.0.0.1/callback');
      expect(consentRedirectUri('http://127.0.0.1:40002/other')).to.not.equal('http://127.0.0.1/callback');
      expect(consentRedirectUri('https://127.0.0.1:40002/callback')).to.equal('https://127.0.0.1:40002/callback');
    });

    it('prompt=consent shows the page again', async function () {
      const client = await register();
      const browser = createBrowser();
      await login(browser, authorization(client), 'emil');
      const forced = await login(browser, authorization(client, LOOPBACK_REDIRECT, { prompt: 'consent' }), 'emil');
      expect(forced.consentPages).to.equal(1);
      expect(forced.back.searchParams.get('code')).to.be.a('string');
    });

    it('another user in a fresh browser sees the page', async function () {
      const client = await register();
      await login(createBrowser(), authorization(client), 'fay');
      const other = await login(createBrowser(), authorization(client), 'gus');
      expect(other.consentPages).to.equal(1);
    });

    it('the same user at another client sees the page', async function () {
      const [first, second] = [await register(), await register()];
      const browser = createBrowser();
      await login(browser, authorization(first), 'hal');
      expect((await login(browser, authorization(second), 'hal')).consentPages).to.equal(1);
    });

    it('when the IdP logs in another account than the one remembered, that account is asked', async function () {
      const client = await register();
      const remembered = createBrowser();
      await login(remembered, authorization(client), 'ivy');
      // Same browser as far as we are concerned (our session says ivy), but signed out upstream:
      // the IdP will ask who is there, and jon answers.
      const browser = createBrowser();
      const ours = remembered.cookies.list(`${stack.baseUrl}/`);
      expect(ours.map((cookie) => cookie.name)).to.include('_session');
      browser.cookies.store(
        `${stack.baseUrl}/`,
        ours.map((cookie) => `${cookie.name}=${cookie.value}; Path=${cookie.path}`),
      );

      const auth = authorization(client);
      const switched = await login(browser, auth, 'jon');
      expect(switched.idpForms).to.equal(1);
      expect(switched.consentPages, "jon never agreed to this client, ivy's consent is not his").to.equal(1);
      const idpForm = switched.pages.findIndex((page) => page.url.startsWith(stack.idp.issuer) && page.status === 200);
      expect(switched.pages.findIndex(isConsentPage)).to.be.greaterThan(idpForm);
      expect(await userOf(client, auth, switched.back)).to.equal('jon');
    });

    it('nothing a client registers makes it consented, even for a user with a session', async function () {
      const browser = createBrowser();
      await login(browser, authorization(await register()), 'kim');
      const client = await register({ consented: true, skip_consent: true, trusted: true, consent: { kim: true } });
      expect((await login(browser, authorization(client), 'kim')).consentPages).to.equal(1);
    });

    it('stores consent under an unambiguous key', function () {
      expect(consentKey('a:b', 'c')).to.not.equal(consentKey('a', 'b:c'));
      expect(consentKey('alice', 'https://app.example/client.json')).to.equal(
        'consent:alice:https%3A%2F%2Fapp.example%2Fclient.json',
      );
    });
  });

  describe('the consent page', function () {
    it('cannot be framed or cached (R19)', async function () {
      const { page } = await consentPage(await register());
      expect(page.headers.get('content-security-policy')).to.contain("frame-ancestors 'none'");
      expect(page.headers.get('x-frame-options')).to.equal('DENY');
      expect(page.headers.get('cache-control')).to.equal('no-store');
    });

    it('names the client, the service, the redirect host and the identity provider, HTML-escaped', async function () {
      const client = await register({ client_name: '<script>alert(1)</script>' });
      const { page } = await consentPage(client);
      const name = '&lt;script&gt;alert(1)&lt;/script&gt;';
      const service = new URL(stack.mcpUrl).host;
      expect(page.body).to.contain(`<h1>Allow ${name} to use ${service}?</h1>`);
      expect(page.body).to.contain(`<title>Allow ${name}? · ${service}</title>`);
      expect(page.body).to.not.contain('<script>alert(1)');
      expect(page.body).to.not.contain('Confirm login');
      expect(page.body).to.contain('an application on this computer (127.0.0.1:33418)');
      expect(page.body).to.contain('<dd>the development identity provider</dd>');
      // What the client may do, in words; the upstream scope is the IdP's vocabulary, not the user's.
      expect(page.body).to.contain(`Use the tools and data of ${service} as you`);
      expect(page.body).to.contain('Stay connected for up to 30 days');
      expect(page.body).to.not.contain('openid profile offline_access');
    });

    it('says where a client without refresh tokens stands, and names an app by its scheme', async function () {
      const client = await register({ grant_types: ['authorization_code'] });
      const page = await createBrowser().follow(authorization(client, SCHEME_REDIRECT).url);
      expect(isConsentPage(page), `${page.status} at ${page.url}`).to.equal(true);
      expect(page.body).to.contain('Stay connected for about an hour');
      expect(page.body).to.contain('<dd>the cursor app</dd>');
    });

    it('refuses a consent form posted without its CSRF token (403)', async function () {
      const { browser, page } = await consentPage(await register());
      const [confirm, cancel] = parseForms(page.body, page.url);
      for (const form of [confirm!, cancel!]) {
        const res = await browser.post(form.action, []);
        expect(res.status, form.action).to.equal(403);
        expect(res.location).to.equal(undefined);
        expect(res.body).to.contain('This form was not accepted');
        expect(res.body).to.contain('<code>csrf_mismatch</code>');
      }
      // A wrong token of the right length is no better.
      const csrf = new Map(confirm!.fields).get('csrf')!;
      const forged = `${csrf.slice(0, -2)}${csrf.endsWith('AA') ? 'BB' : 'AA'}`;
      expect((await browser.post(confirm!.action, { csrf: forged })).status).to.equal(403);
      // The real token goes through, so the refusals above were about the token.
      const accepted = await browser.post(confirm!.action, confirm!.fields);
      expect(accepted.status).to.equal(303);
      expect(accepted.location).to.match(new RegExp(`^${stack.idp.issuer}/`));
    });

    it("refuses a consent form carrying another interaction's CSRF token (403)", async function () {
      const client = await register();
      const browser = createBrowser();
      const first = await consentPage(client, browser);
      const second = await consentPage(client, browser);
      const [firstForm] = parseForms(first.page.body, first.page.url);
      const [secondForm] = parseForms(second.page.body, second.page.url);
      expect(secondForm!.action).to.not.equal(firstForm!.action);
      const res = await browser.post(secondForm!.action, firstForm!.fields);
      expect(res.status).to.equal(403);
      expect(res.location).to.equal(undefined);
      expect((await browser.post(secondForm!.action, secondForm!.fields)).status).to.equal(303);
    });
  });

  describe('the upstream callback', function () {
    const atCallback = (url: string) => url.startsWith(`${stack.baseUrl}${CALLBACK}`);

    it('R20: a callback replayed with the same state is refused', async function () {
      const client = await register();
      const browser = createBrowser();
      const auth = authorization(client);
      const upstream = await login(browser, auth, 'lea', atCallback);
      const callbackUrl = upstream.back.href;
      expect(new URL(callbackUrl).searchParams.get('state')).to.be.a('string');

      const done = await login(browser, { ...auth, url: callbackUrl }, 'lea');
      expect(done.back.searchParams.get('code')).to.be.a('string');

      const replay = await browser.get(callbackUrl);
      expect(replay.status).to.equal(400);
      expect(replay.location).to.equal(undefined);
      expect(replay.body).to.contain('unknown, expired or was already used');
    });

    it('a callback carried to another browser cannot log that browser in (the resume cookie binds it to the browser that started)', async function () {
      const client = await register();
      // The attacker starts a login for themselves and stops at our callback: that URL, with
      // its valid code and state, is what they would send a victim to log them in as the attacker.
      const attacker = createBrowser();
      const auth = authorization(client);
      const upstream = await login(attacker, auth, 'mallory', atCallback);

      const victim = createBrowser();
      const pages: Page[] = [];
      const end = await chase(victim, await victim.get(upstream.back.href), pages, () => false);
      expect(
        pages.some((page) => page.location?.startsWith(auth.redirectUri)),
        'no code for the victim',
      ).to.equal(false);
      expect(end.status).to.equal(400);
      expect(victim.cookies.list(`${stack.baseUrl}/`).map((cookie) => cookie.name)).to.not.include('_session');

      // The grant's vault secret went with the callback, to the browser it was carried to (and
      // no further: that browser cannot resume). So the browser that started the login cannot
      // collect it either: it is refused cleanly, access_denied to the client, no code anywhere.
      const resume = pages[0]!.location!;
      expect(resume).to.match(new RegExp(`^${stack.baseUrl}/auth/`));
      const own = await login(attacker, { ...auth, url: resume }, 'mallory');
      expect(own.back.searchParams.get('error'), own.back.href).to.equal('access_denied');
      expect(own.back.searchParams.get('code')).to.equal(null);
    });
  });
});
