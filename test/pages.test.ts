import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { createBrowser } from './helpers/browser.ts';
import { authorizationUrl, registerNativeClient } from './helpers/oauth.ts';
import { startStack, type Stack, useStack } from './helpers/stack.ts';

const REDIRECT = 'http://127.0.0.1:33418/callback';

const register = (stack: Stack) => registerNativeClient(stack.baseUrl, 'Pages Client', REDIRECT);

/** The home page and the dev identity provider's login page, on one stack without Redis. */
describe('pages of a development stack', function () {
  let stack: Stack;
  useStack((started) => (stack = started), { redis: false });

  describe('the home page and the icon', function () {
    it('a program gets JSON: the MCP URL and the metadata links, which resolve', async function () {
      const res = await fetch(`${stack.baseUrl}/`, { headers: { accept: 'application/json' } });
      expect(res.status).to.equal(200);
      expect(res.headers.get('vary')).to.match(/accept/i);
      const body = (await res.json()) as Record<string, string>;
      expect(body).to.deep.equal({
        name: new URL(stack.baseUrl).host,
        mcp_url: stack.mcpUrl,
        protected_resource_metadata: `${stack.baseUrl}/.well-known/oauth-protected-resource/mcp`,
        authorization_server_metadata: `${stack.baseUrl}/.well-known/oauth-authorization-server`,
      });
      for (const link of [body.protected_resource_metadata!, body.authorization_server_metadata!]) {
        expect((await fetch(link)).status, link).to.equal(200);
      }
      // curl's `*/*` is a program too.
      const any = await fetch(`${stack.baseUrl}/`, { headers: { accept: '*/*' } });
      expect(any.headers.get('content-type')).to.match(/^application\/json/);
    });

    it('a browser gets a page naming the service, the MCP URL and how to connect, nothing more', async function () {
      const page = await createBrowser().get(`${stack.baseUrl}/`);
      expect(page.status).to.equal(200);
      expect(page.headers.get('content-security-policy')).to.contain("default-src 'none'");
      expect(page.headers.get('content-security-policy')).to.contain("frame-ancestors 'none'");
      const host = new URL(stack.baseUrl).host;
      expect(page.body).to.contain(`<h1>Connect to ${host}</h1>`);
      expect(page.body).to.contain(`claude mcp add --transport http ${host.replace(':', '-')} ${stack.mcpUrl}`);
      expect(page.body).to.contain('"mcpServers"');
      expect(page.body).to.contain('"servers"');
      for (const secret of [stack.env.IDENTITY_CLIENT_SECRET!, stack.env.IDENTITY_CLIENT_ID!, stack.idp.issuer]) {
        expect(page.body).to.not.contain(secret);
      }
    });

    it('serves an icon at /favicon.ico and at the URL the pages link to', async function () {
      for (const path of ['/favicon.ico', '/favicon.svg']) {
        const res = await fetch(`${stack.baseUrl}${path}`);
        expect(res.status, path).to.equal(200);
        expect(res.headers.get('content-type'), path).to.match(/^image\/svg\+xml/);
      }
      const page = await createBrowser().get(`${stack.baseUrl}/`);
      expect(page.body).to.contain('<link rel="icon" href="/favicon.svg">');
    });
  });

  describe('the development identity provider login page', function () {
    it('has a labelled field, an inline icon, and the pages’ security headers', async function () {
      const clientId = await register(stack);
      const browser = createBrowser();
      const consent = await browser.follow(authorizationUrl(stack.baseUrl, clientId, REDIRECT));
      const login = await browser.submitForm(consent.body, consent.url);
      expect(login.url.startsWith(stack.idp.issuer)).to.equal(true);
      expect(login.body).to.contain('<label for="login">User name</label>');
      expect(login.body).to.contain('<link rel="icon" href="data:image/svg+xml,');
      expect(login.headers.get('content-security-policy')).to.contain("frame-ancestors 'none'");
      expect(login.headers.get('content-security-policy')).to.contain('img-src data:');
      const empty = await browser.submitForm(login.body, login.url, { login: ' ' });
      expect(empty.status).to.equal(400);
      expect(empty.body).to.contain('role="alert"');
      expect(empty.body).to.contain('aria-invalid="true"');
    });
  });
});

describe('branding: BRANDING_TITLE and BRANDING_FAVICON', function () {
  let stack: Stack;
  const icon = 'https://cdn.example.com/acme.ico';
  useStack((started) => (stack = started), {
    redis: false,
    env: { BRANDING_TITLE: 'Acme <Tools>', BRANDING_FAVICON: icon },
  });

  it('names the service on the consent page and uses the icon, which the CSP allows', async function () {
    const clientId = await register(stack);
    const page = await createBrowser().follow(authorizationUrl(stack.baseUrl, clientId, REDIRECT));
    expect(page.body).to.contain('<h1>Allow Pages Client to use Acme &lt;Tools&gt;?</h1>');
    expect(page.body).to.contain(`<link rel="icon" href="${icon}">`);
    expect(page.headers.get('content-security-policy')).to.contain("img-src 'self' https://cdn.example.com;");
  });

  it('/favicon.ico sends browsers to the configured icon', async function () {
    const res = await fetch(`${stack.baseUrl}/favicon.ico`, { redirect: 'manual' });
    expect(res.status).to.equal(302);
    expect(res.headers.get('location')).to.equal(icon);
  });

  it('refuses a favicon that is not an http(s) URL', async function () {
    const { loadConfig } = await import('../lib/config/index.ts');
    expect(() => loadConfig({ ...stack.env, BRANDING_FAVICON: 'javascript:alert(1)' })).to.throw(/BRANDING_FAVICON/);
  });
});

describe('OIDC_PROVIDER_VIEWS_PATH with the Heroku auth proxy view names', function () {
  it('a replaced confirm-login.ejs and _layout.ejs get the locals they were written for', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'heroku-views-'));
    // What a Heroku auth proxy owner's templates read: `title` and `body` in the layout; `uid` and
    // `client` in the page. Ours adds the CSRF token and the actions a form must post to.
    writeFileSync(
      join(dir, '_layout.ejs'),
      '<!doctype html><html><head><title><%= title %></title></head><body class="owner"><h1><%= title %></h1><%- body %></body></html>',
    );
    writeFileSync(
      join(dir, 'confirm-login.ejs'),
      [
        '<p>Name: <strong><%= client.clientName %></strong></p>',
        '<p>Redirect URIs: <code><%= JSON.stringify(client.redirectUris) %></code></p>',
        '<p id="uid"><%= uid %></p>',
        '<form method="post" action="<%= confirmAction %>"><input type="hidden" name="csrf" value="<%= csrf %>">',
        '<button type="submit">Login</button></form>',
      ].join('\n'),
    );
    const stack = await startStack({ redis: false, env: { OIDC_PROVIDER_VIEWS_PATH: dir } });
    try {
      const clientId = await register(stack);
      const browser = createBrowser();
      const page = await browser.follow(authorizationUrl(stack.baseUrl, clientId, REDIRECT));
      expect(page.status).to.equal(200);
      expect(page.body).to.contain('<body class="owner"><h1>Allow Pages Client?</h1>');
      expect(page.body).to.contain('Name: <strong>Pages Client</strong>');
      expect(page.body).to.contain(`Redirect URIs: <code>[&#34;${REDIRECT}&#34;]</code>`);
      const uid = new URL(page.url).pathname.split('/').at(-1);
      expect(page.body).to.contain(`<p id="uid">${uid}</p>`);
      // The owner's form works: it leads on to the identity provider.
      const next = await browser.submitForm(
        page.body,
        page.url,
        {},
        { stopAt: (url) => url.startsWith(stack.idp.issuer) },
      );
      expect(next.location).to.match(new RegExp(`^${stack.idp.issuer}/`));
      // The built-in error view still fills in for the one the owner did not replace.
      const error = await browser.get(`${stack.baseUrl}/interaction/unknown`);
      expect(error.body).to.contain('<body class="owner"><h1>This sign-in has expired</h1>');
    } finally {
      await stack.close();
    }
  });
});
