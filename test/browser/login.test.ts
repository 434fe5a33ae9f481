import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import type { Browser, Page, Response } from 'playwright-core';
import { focusedId, focusVisible, launchChromium, screenshots, seriousViolations, tabTo } from '../helpers/chromium.ts';
import { authorizationUrl, registerNativeClient } from '../helpers/oauth.ts';
import { startStack, type Stack } from '../helpers/stack.ts';

/**
 * The pages as a person meets them, in a real browser: keyboard only, checked with axe-core,
 * photographed at 1280 and 320 px (test-output/screenshots/). One browser for the whole file.
 */
describe('the pages in a real browser', function () {
  this.timeout(60_000);
  let stack: Stack;
  let browser: Browser;
  let client: { id: string; redirectUri: string };
  let callback: Server;
  const missing: string[] = [];

  before(async function () {
    stack = await startStack({ env: { BRANDING_TITLE: 'Acme Tools' } });
    // The client's redirect URI: a page the browser lands on when the login is over.
    callback = createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><html lang="en"><title>Connected</title><main><h1>Connected</h1></main></html>');
    });
    callback.listen(0, '127.0.0.1');
    await once(callback, 'listening');
    const redirectUri = `http://127.0.0.1:${(callback.address() as AddressInfo).port}/callback`;
    client = { id: await registerNativeClient(stack.baseUrl, 'Acme Desktop', redirectUri), redirectUri };
    browser = await launchChromium();
  });

  after(async function () {
    await browser?.close();
    callback?.close();
    await stack?.close();
  });

  afterEach(function () {
    expect(missing, 'responses answered 404').to.deep.equal([]);
  });

  async function newPage(options: { javaScriptEnabled?: boolean } = {}): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
    const page = await context.newPage();
    page.on('response', (response: Response) => {
      if (response.status() === 404) missing.push(response.url());
    });
    return page;
  }

  /** axe-core finds nothing serious, and the page reflows to 320 px without sideways scrolling. */
  async function inspect(page: Page, name: string): Promise<void> {
    expect(await seriousViolations(page), `${name}: axe`).to.deep.equal([]);
    const { overflowsAt320 } = await screenshots(page, name);
    expect(overflowsAt320, `${name}: horizontal scrolling at 320 px`).to.equal(false);
  }

  it('axe-core is live: it finds an unlabelled field and poor contrast', async function () {
    const page = await newPage();
    await page.setContent(
      '<!doctype html><html lang="en"><title>t</title><main><input type="text"><p style="color:#ccc">faint</p></main></html>',
    );
    const found = (await seriousViolations(page)).map((violation) => violation.id);
    expect(found).to.include.members(['label', 'color-contrast']);
    await page.context().close();
  });

  it('home page → consent → identity provider → back to the client, by keyboard alone', async function () {
    const page = await newPage();
    await page.goto(stack.baseUrl);
    expect(await page.locator('h1').textContent()).to.equal('Connect to Acme Tools');
    expect(await page.locator('pre').first().textContent()).to.equal(stack.mcpUrl);
    await inspect(page, '1-home');

    // What a client does next: open its authorization URL in the browser.
    await page.goto(authorizationUrl(stack.baseUrl, client.id, client.redirectUri));
    expect(await page.locator('h1').textContent()).to.equal('Allow Acme Desktop to use Acme Tools?');
    expect(await page.title()).to.equal('Allow Acme Desktop? · Acme Tools');
    await inspect(page, '2-consent');
    await tabTo(page, 'Allow and sign in');
    expect(await focusVisible(page), 'focus indicator on Allow').to.equal(true);
    await page.keyboard.press('Enter');

    await page.waitForURL(`${stack.idp.issuer}/**`);
    expect(await page.locator('h1').textContent()).to.equal('Sign in');
    await inspect(page, '3-identity-provider');
    // The user name field has focus on arrival; Enter signs in.
    expect(await focusedId(page)).to.equal('login');
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.type('ada');
    await page.keyboard.press('Enter');

    await page.waitForURL(`${client.redirectUri}**`);
    const back = new URL(page.url());
    expect(back.searchParams.get('code')).to.be.a('string');
    expect(back.searchParams.get('iss')).to.equal(stack.baseUrl);
    await page.context().close();
  });

  it('Cancel, by keyboard and without JavaScript, returns access_denied to the client', async function () {
    const page = await newPage({ javaScriptEnabled: false });
    await page.goto(authorizationUrl(stack.baseUrl, client.id, client.redirectUri, undefined, { state: 'xyz' }));
    await tabTo(page, 'Cancel');
    expect(await focusVisible(page), 'focus indicator on Cancel').to.equal(true);
    await page.keyboard.press('Enter');
    await page.waitForURL(`${client.redirectUri}**`);
    const back = new URL(page.url());
    expect(back.searchParams.get('error')).to.equal('access_denied');
    expect(back.searchParams.get('state')).to.equal('xyz');
    await page.context().close();
  });

  it('error pages share the layout, say what to do next and carry the request id', async function () {
    const page = await newPage();
    const cases = [
      {
        name: '4-error-expired',
        url: `${stack.baseUrl}/interaction/no-such-login`,
        heading: 'This sign-in has expired',
      },
      {
        name: '5-error-unknown-client',
        url: authorizationUrl(stack.baseUrl, 'forgotten-client', client.redirectUri),
        heading: 'Unknown application',
      },
      {
        name: '6-error-identity-provider',
        url: `${stack.baseUrl}/interaction/identity/callback?state=not-ours&code=x`,
        heading: 'Sign-in not accepted',
      },
    ];
    for (const { name, url, heading } of cases) {
      const response = await page.goto(url);
      expect(response?.status(), name).to.equal(400);
      expect(await page.locator('h1').textContent(), name).to.equal(heading);
      expect(await page.locator('.brand').textContent(), name).to.equal('Acme Tools');
      expect(await page.textContent('main'), name).to.contain('What to do next:');
      const requestId = response?.headers()['x-request-id'];
      expect(await page.locator('.reference code').last().textContent(), name).to.equal(requestId);
      await inspect(page, name);
    }
    await page.context().close();
  });
});
