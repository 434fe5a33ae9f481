// Key rotation as an operator does it (README, "Signing keys"): the jwks command adds a key in
// front, the proxy restarts on the same Redis with it, and later with the old key retired.
// Everything made before the addition keeps working; the retirement logs out only grants unused
// since the addition. Real proxy, real Redis, the development IdP, the example MCP server.
import { spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { once } from 'node:events';
import { expect } from 'chai';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { decodeProtectedHeader, type JSONWebKeySet } from 'jose';
import { Redis } from 'ioredis';
import { deriveKeyMaterial } from '../lib/auth-server/keys.ts';
import { keyId, vaultKeyFor } from '../lib/vault/index.ts';
import { createBrowser, type Browser, type Page } from './helpers/browser.ts';
import { authorizationUrl, mcpInitialize, registerPublicClient, tokenRequest } from './helpers/oauth.ts';
import { startStack, type Stack } from './helpers/stack.ts';

const CLI = new URL('../lib/cli/main.ts', import.meta.url).pathname;
const REDIRECT_URI = 'http://127.0.0.1:33418/callback';

/** `mcp-auth-proxy jwks …` with the current value on standard input, as the README pipes it. */
async function jwksCommand(args: string[], current: string): Promise<string> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'jwks', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stdin.end(current);
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`jwks ${args.join(' ')} exited with ${code}`);
  return stdout.trim();
}

interface Login {
  user: string;
  clientId: string;
  browser: Browser;
  grantId: string;
  accessToken: string;
  refreshToken: string;
}

describe('signing key rotation: adding a key logs nobody out, retiring one only the idle', function () {
  let stack: Stack;
  let redis: Redis;
  let prefix: string;
  /** The three values of OIDC_PROVIDER_JWKS: the first key, the new one added in front, the first retired. */
  let original: string;
  let added: string;
  let retired: string;
  /** Logged in before the addition; alice uses her grant after it, bob not until the retirement. */
  let alice: Login;
  let bob: Login;
  /** A consent page rendered before the addition, submitted after it. */
  let pendingConsent: { browser: Browser; page: Page; clientId: string; verifier: string };
  /** A login whose upstream callback ran before the addition, resumed after it. */
  let pendingResume: { browser: Browser; resumeUrl: string; clientId: string; verifier: string };

  const isClient = (url: string) => url.startsWith(REDIRECT_URI);
  const isResume = (url: string) => url.startsWith(`${stack.baseUrl}/auth/`);
  const isIdp = (url: string) => url.startsWith(stack.idp.issuer);

  const register = () => registerPublicClient(stack.baseUrl, REDIRECT_URI);

  function authorization(clientId: string): { url: string; verifier: string } {
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    const url = authorizationUrl(stack.baseUrl, clientId, REDIRECT_URI, challenge, { scope: 'openid offline_access' });
    return { url, verifier };
  }

  /** From `page` on: confirm our consent page, sign in at the IdP as `user`, stop at `stopAt`. */
  async function browse(browser: Browser, page: Page, user: string, stopAt: (url: string) => boolean): Promise<Page> {
    for (let step = 0; step < 4 && !(page.location && stopAt(page.location)); step++) {
      if (page.location) page = await browser.follow(page.location, { stopAt });
      else {
        const consent = page.body.includes('Allow and sign in');
        page = await browser.submitForm(page.body, page.url, consent ? {} : { login: user }, { stopAt });
      }
    }
    if (!page.location || !stopAt(page.location)) throw new Error(`login stopped at ${page.status} ${page.url}`);
    return page;
  }

  async function redeem(clientId: string, back: Page, verifier: string) {
    const code = new URL(back.location!).searchParams.get('code');
    expect(code, back.location).to.be.a('string');
    const res = await tokenRequest(stack.baseUrl, {
      grant_type: 'authorization_code',
      code: code!,
      code_verifier: verifier,
      redirect_uri: REDIRECT_URI,
      client_id: clientId,
    });
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    return { accessToken: res.body.access_token, refreshToken: res.body.refresh_token! };
  }

  async function vaultGrants(): Promise<Set<string>> {
    const marker = `${prefix}vault:`;
    return new Set((await redis.keys(`${marker}*`)).map((key) => key.slice(marker.length)));
  }

  async function login(user: string, browser = createBrowser(), clientId?: string): Promise<Login> {
    clientId ??= await register();
    const before = await vaultGrants();
    const { url, verifier } = authorization(clientId);
    const back = await browse(browser, await browser.follow(url, { stopAt: isClient }), user, isClient);
    const tokens = await redeem(clientId, back, verifier);
    const grantId = [...(await vaultGrants())].find((id) => !before.has(id));
    if (!grantId) throw new Error('no vault record appeared for the login');
    return { user, clientId, browser, grantId, ...tokens };
  }

  /** Which upstream user the MCP server sees behind `accessToken`: a tool called through `/mcp`. */
  async function whoami(accessToken: string): Promise<string> {
    const mcp = new Client({ name: 'key-rotation-test', version: '1.0.0' });
    await mcp.connect(
      new StreamableHTTPClientTransport(new URL(stack.mcpUrl), {
        requestInit: { headers: { authorization: `Bearer ${accessToken}` } },
      }),
    );
    try {
      const result = (await mcp.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
      return (JSON.parse(result.content[0]!.text) as { userId: string }).userId;
    } finally {
      await mcp.close();
    }
  }

  async function refresh(grant: Login): Promise<void> {
    const res = await tokenRequest(stack.baseUrl, {
      grant_type: 'refresh_token',
      refresh_token: grant.refreshToken,
      client_id: grant.clientId,
    });
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    grant.accessToken = res.body.access_token;
    grant.refreshToken = res.body.refresh_token!;
  }

  /** The root whose id the grant's vault record names. */
  async function sealedUnder(grantId: string): Promise<string | undefined> {
    const sealed = await redis.get(`${prefix}${vaultKeyFor(grantId)}`);
    return sealed === null ? undefined : decodeProtectedHeader(sealed).kid;
  }
  const currentRootId = () => keyId(deriveKeyMaterial(JSON.parse(stack.env.OIDC_PROVIDER_JWKS!)).vaultKeys[0]);

  before(async function () {
    this.timeout(90_000);
    stack = await startStack();
    prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
    redis = new Redis(process.env.TEST_REDIS_URL!);
    original = stack.env.OIDC_PROVIDER_JWKS!;
    added = await jwksCommand(['--add'], original);
    const oldKid = (JSON.parse(original) as JSONWebKeySet).keys[0]!.kid!;
    retired = await jwksCommand(['--retire', oldKid], added);

    alice = await login('rotation-alice');
    bob = await login('rotation-bob');
    const consentClient = await register();
    const consentBrowser = createBrowser();
    const consentRequest = authorization(consentClient);
    const consentPage = await consentBrowser.follow(consentRequest.url);
    expect(consentPage.body, 'the consent page').to.contain('Allow and sign in');
    pendingConsent = { browser: consentBrowser, page: consentPage, clientId: consentClient, ...consentRequest };
    const resumeClient = await register();
    const resumeBrowser = createBrowser();
    const resumeRequest = authorization(resumeClient);
    const stopped = await browse(
      resumeBrowser,
      await resumeBrowser.follow(resumeRequest.url, { stopAt: isResume }),
      'rotation-dave',
      (url) => isResume(url) || isClient(url),
    );
    expect(isResume(stopped.location!), 'stopped before the resume endpoint').to.equal(true);
    pendingResume = {
      browser: resumeBrowser,
      resumeUrl: stopped.location!,
      clientId: resumeClient,
      verifier: resumeRequest.verifier,
    };
    expect(await sealedUnder(alice.grantId)).to.equal(currentRootId());

    await stack.restart({ OIDC_PROVIDER_JWKS: added });
  });
  after(async function () {
    redis?.disconnect();
    await stack?.close();
  });

  describe('after `jwks --add` (the new key first)', function () {
    it('the set is the old one with a new key in front', function () {
      const keys = (JSON.parse(added) as JSONWebKeySet).keys;
      expect(keys).to.have.length(2);
      expect(keys[1]).to.deep.equal((JSON.parse(original) as JSONWebKeySet).keys[0]);
    });

    it('an access token issued before still calls a tool; its vault record moves to the new key', async function () {
      const before = await sealedUnder(alice.grantId);
      expect(before, 'still under the old key').to.not.equal(currentRootId());
      expect(await whoami(alice.accessToken)).to.equal('rotation-alice');
      expect(await sealedUnder(alice.grantId), 'sealed again under the new key').to.equal(currentRootId());
    });

    it('a refresh token issued before still refreshes, and the new access token calls a tool', async function () {
      const previous = alice.accessToken;
      await refresh(alice);
      expect(alice.accessToken).to.not.equal(previous);
      expect(await whoami(alice.accessToken)).to.equal('rotation-alice');
    });

    it('a browser session made before is still recognised: remembered consent skips the page', async function () {
      const { url } = authorization(alice.clientId);
      const page = await alice.browser.follow(url, { stopAt: isIdp });
      expect(page.body, 'no consent page').to.not.contain('Allow and sign in');
      expect(page.url, 'our interaction sends the browser upstream at once').to.match(
        new RegExp(`^${stack.baseUrl}/interaction/`),
      );
      expect(page.status).to.equal(303);
      expect(isIdp(page.location!)).to.equal(true);
    });

    it('a consent page rendered before still submits: its CSRF token and interaction cookie are accepted', async function () {
      const { browser, page, clientId, verifier } = pendingConsent;
      const submitted = await browser.submitForm(page.body, page.url, {}, { stopAt: isIdp });
      expect(submitted.status, submitted.body.slice(0, 200)).to.equal(303);
      expect(isIdp(submitted.location!), 'on to the identity provider').to.equal(true);
      const back = await browse(browser, submitted, 'rotation-carol', isClient);
      const { accessToken } = await redeem(clientId, back, verifier);
      expect(await whoami(accessToken)).to.equal('rotation-carol');
    });

    it('a login whose resume cookie was sealed before still gets its code at the resume endpoint', async function () {
      const { browser, resumeUrl, clientId, verifier } = pendingResume;
      const back = await browser.follow(resumeUrl, { stopAt: isClient });
      expect(back.location, `${back.status} ${back.body.slice(0, 200)}`).to.be.a('string');
      expect(new URL(back.location!).searchParams.get('error')).to.equal(null);
      const { accessToken } = await redeem(clientId, back, verifier);
      expect(await whoami(accessToken)).to.equal('rotation-dave');
    });
  });

  describe('then after `jwks --retire OLD`', function () {
    before(async function () {
      expect(await sealedUnder(bob.grantId), 'bob has not used his grant since the addition').to.not.equal(
        currentRootId(),
      );
      await stack.restart({ OIDC_PROVIDER_JWKS: retired });
    });

    it('a grant used since the addition keeps working: tool calls and refresh', async function () {
      expect(await whoami(alice.accessToken)).to.equal('rotation-alice');
      await refresh(alice);
      expect(await whoami(alice.accessToken)).to.equal('rotation-alice');
    });

    it('the browser session, re-signed at its use after the addition, is still recognised', async function () {
      const { url } = authorization(alice.clientId);
      const page = await alice.browser.follow(url, { stopAt: isIdp });
      expect(page.body, 'no consent page').to.not.contain('Allow and sign in');
      expect(isIdp(page.location!)).to.equal(true);
    });

    it('a grant unused since the addition fails closed with 401 invalid_token, and its user logs in again', async function () {
      const res = await mcpInitialize(stack.mcpUrl, bob.accessToken);
      await res.body?.cancel();
      expect(res.status).to.equal(401);
      expect(res.headers.get('www-authenticate')).to.contain('error="invalid_token"');
      const again = await login('rotation-bob', bob.browser, bob.clientId);
      expect(await whoami(again.accessToken)).to.equal('rotation-bob');
      expect(await sealedUnder(again.grantId)).to.equal(currentRootId());
    });
  });
});
