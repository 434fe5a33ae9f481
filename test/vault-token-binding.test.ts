import { createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { decodeProtectedHeader } from 'jose';
import { Redis } from 'ioredis';
import { deriveKeyMaterial, ephemeralJwks } from '../lib/auth-server/keys.ts';
import { createProvider } from '../lib/auth-server/provider.ts';
import { loadConfig } from '../lib/config/index.ts';
import { createMemoryStore, createRedisStore, type Store } from '../lib/store/index.ts';
import { captureLogs, log } from '../lib/telemetry/log.ts';
import { createIdentityClient } from '../lib/identity/index.ts';
import { createVault, GrantSecret, grantSecretOf, keyId, open, vaultKeyFor, type Vault } from '../lib/vault/index.ts';
import {
  GRANT_SECRET_COOKIE,
  grantSecretCookie,
  openGrantSecretCookie,
} from '../lib/auth-server/grant-secret-cookie.ts';
import { createViews } from '../lib/views/index.ts';
import { createBrowser, type Browser, type Page } from './helpers/browser.ts';
import { captureOutput } from './helpers/capture.ts';
import { LEGACY } from './helpers/legacy-records.ts';
import { dumpRedis } from './helpers/redis.ts';
import { authorizationUrl, mcpInitialize, registerPublicClient, tokenRequest } from './helpers/oauth.ts';
import { startStack, type Stack } from './helpers/stack.ts';

const REDIRECT_URI = 'http://127.0.0.1:33418/callback';
/** `<oidc-provider's random id>.<base64url(G)>` */
const BOUND_TOKEN = /^[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}$/;

interface TokenBody {
  access_token?: string;
  refresh_token?: string;
  error?: string;
  error_description?: string;
}

interface Login {
  clientId: string;
  code: string;
  accessToken: string;
  refreshToken: string;
  grantId: string;
  secret: GrantSecret;
}

/** Every way G could be spelled in a dump or a log line. */
function spellings(secret: GrantSecret): string[] {
  const bytes = Buffer.from(secret.encode(), 'base64url');
  return [secret.encode(), bytes.toString('base64'), bytes.toString('hex'), bytes.toString('hex').toUpperCase()];
}

describe('vault records open only with the server key and a live token of their grant (issue 4, item 4)', function () {
  let stack: Stack;
  let prefix: string;
  let redis: Redis;
  let sideStore: Store;
  /** The proxy's own key material, as an attacker holding the configuration would have it. */
  let root: Buffer;
  let sideVault: Vault;

  before(async function () {
    stack = await startStack();
    prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
    redis = new Redis(process.env.TEST_REDIS_URL!);
    sideStore = createRedisStore({ url: process.env.TEST_REDIS_URL!, keyPrefix: prefix, tlsRejectUnauthorized: false });
    root = deriveKeyMaterial(JSON.parse(stack.env.OIDC_PROVIDER_JWKS!)).vaultKeys[0];
    const identity = await createIdentityClient(
      {
        serverUrl: new URL(stack.idp.issuer),
        metadataFile: undefined,
        clientId: stack.idp.clientId,
        clientSecret: stack.idp.clientSecret,
        scope: 'openid',
      },
      { redirectUri: `${stack.baseUrl}/interaction/identity/callback`, allowInsecure: true },
    );
    sideVault = createVault({ store: sideStore, identity, keys: [root], log });
  });
  after(async function () {
    redis?.disconnect();
    await sideStore?.close();
    await stack?.close();
  });

  const dump = () => dumpRedis(redis, prefix);

  async function vaultGrants(): Promise<Set<string>> {
    const marker = `${prefix}vault:`;
    return new Set((await redis.keys(`${marker}*`)).map((key) => key.slice(marker.length)));
  }

  const register = () => registerPublicClient(stack.baseUrl, REDIRECT_URI);

  async function token(params: Record<string, string>): Promise<{ status: number; body: TokenBody }> {
    const res = await tokenRequest(stack.baseUrl, params);
    return { status: res.status, body: res.body as unknown as TokenBody };
  }

  async function mcp(accessToken: string): Promise<Response> {
    const res = await mcpInitialize(stack.mcpUrl, accessToken);
    await res.body?.cancel();
    return res;
  }

  const isResume = (url: string) => url.startsWith(`${stack.baseUrl}/auth/`);
  const isClient = (url: string) => url.startsWith(REDIRECT_URI);

  /**
   * The browser part of a login, as far as `stopAt`: the consent page when shown (it is skipped
   * where consent is remembered), then the upstream IdP's login form.
   */
  async function browse(browser: Browser, url: string, user: string, stopAt: (url: string) => boolean): Promise<Page> {
    let page = await browser.follow(url, { stopAt });
    for (let step = 0; step < 3 && !(page.location && stopAt(page.location)); step++) {
      const consent = page.body.includes('Allow and sign in');
      page = await browser.submitForm(page.body, page.url, consent ? {} : { login: user }, { stopAt });
    }
    if (!page.location || !stopAt(page.location)) throw new Error(`login stopped at ${page.status} ${page.url}`);
    return page;
  }

  function authorizationRequest(clientId: string, verifier: string): string {
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    return authorizationUrl(stack.baseUrl, clientId, REDIRECT_URI, challenge, { scope: 'openid offline_access' });
  }

  /** A started login, stopped at the redirect from our upstream callback to the resume endpoint. */
  async function untilResume(browser: Browser, clientId: string, user: string) {
    const verifier = randomBytes(32).toString('base64url');
    const page = await browse(
      browser,
      authorizationRequest(clientId, verifier),
      user,
      (url) => isResume(url) || isClient(url),
    );
    if (!isResume(page.location!)) throw new Error(`expected the resume redirect, got ${page.location}`);
    const resumeUrl = page.location!;
    const cookie = browser.cookies.list(resumeUrl).find((c) => c.name === GRANT_SECRET_COOKIE);
    return { verifier, resumeUrl, cookie, setCookie: page.headers.getSetCookie() };
  }

  async function exchange(clientId: string, code: string, verifier: string): Promise<TokenBody> {
    const exchanged = await token({
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: REDIRECT_URI,
      client_id: clientId,
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).to.equal(200);
    return exchanged.body;
  }

  async function login(user: string, browser: Browser = createBrowser()): Promise<Login> {
    const clientId = await register();
    const before = await vaultGrants();
    const verifier = randomBytes(32).toString('base64url');
    const back = await browse(browser, authorizationRequest(clientId, verifier), user, isClient);
    const code = new URL(back.location!).searchParams.get('code');
    if (!code) throw new Error(`no code: ${back.location}`);
    const tokens = await exchange(clientId, code, verifier);
    const grantId = [...(await vaultGrants())].find((id) => !before.has(id));
    if (!grantId) throw new Error('no vault record appeared for the login');
    const secret = grantSecretOf(tokens.access_token!);
    if (!secret) throw new Error(`the access token carries no grant secret: ${tokens.access_token}`);
    return { clientId, code, accessToken: tokens.access_token!, refreshToken: tokens.refresh_token!, grantId, secret };
  }

  it('codes, access and refresh tokens all carry their grant’s secret; another grant has another', async function () {
    const alice = await login('binding-alice');
    const bob = await login('binding-bob');
    for (const value of [alice.code, alice.accessToken, alice.refreshToken]) {
      expect(value).to.match(BOUND_TOKEN);
      expect(grantSecretOf(value)?.encode()).to.equal(alice.secret.encode());
    }
    expect(bob.secret.encode()).to.not.equal(alice.secret.encode());
    expect(grantSecretOf(bob.refreshToken)?.encode()).to.equal(bob.secret.encode());
    expect((await mcp(alice.accessToken)).status).to.equal(200);
  });

  it('a Redis dump plus the server’s key material opens no vault record; the live token’s secret does', async function () {
    const carol = await login('binding-carol');
    const everything = await dump();
    const sealed = everything.get(`${prefix}${vaultKeyFor(carol.grantId)}`)!;
    expect(sealed).to.match(/^[\w-]+\.\.[\w-]{16}\.[\w-]+\.[\w-]{22}$/);
    const [header, , iv, body, tag] = sealed.split('.') as [string, string, string, string, string];
    expect(decodeProtectedHeader(sealed).kid, 'sealed under this server’s key').to.equal(keyId(root));

    // Everything an attacker with the dump and OIDC_PROVIDER_JWKS can try as the missing half.
    const candidates = new Set<string>();
    for (const [key, value] of everything) {
      for (const match of `${key} ${value}`.matchAll(/[A-Za-z0-9_-]{43}/g)) candidates.add(match[0]);
    }
    expect(candidates.size, 'the dump has hashed ids to try').to.be.greaterThan(5);
    for (const candidate of candidates) {
      const secret = GrantSecret.decode(candidate);
      if (secret) expect((await open(root, carol.grantId, secret, sealed)).ok, candidate).to.equal(false);
    }
    expect(await open(root, carol.grantId, GrantSecret.generate(), sealed)).to.deep.equal({
      ok: false,
      reason: 'tampered',
    });
    // The previous scheme's key, derived from the server key alone, does not decrypt it either.
    const serverOnlyKey = Buffer.from(
      hkdfSync(
        'sha256',
        root,
        Buffer.alloc(0),
        Buffer.concat([
          Buffer.from('mcp-auth-proxy vault record v2\0'),
          createHash('sha256').update(carol.grantId).digest(),
        ]),
        32,
      ),
    );
    for (const aesKey of [serverOnlyKey, root]) {
      const decipher = createDecipheriv('aes-256-gcm', aesKey, Buffer.from(iv, 'base64url'));
      // JWE's associated data is the encoded protected header (RFC 7516 §5.1, step 14).
      decipher.setAAD(Buffer.from(header, 'ascii'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      decipher.update(Buffer.from(body, 'base64url'));
      expect(() => decipher.final()).to.throw();
    }

    const opened = await open(root, carol.grantId, carol.secret, sealed);
    expect(opened.ok, 'the secret from the live access token opens it').to.equal(true);
    expect((await sideVault.get(carol.grantId, carol.secret))?.accountId).to.equal('binding-carol');
  });

  it('the grant secret is in no Redis key or value, and our tokens are there only as hashes', async function () {
    const dave = await login('binding-dave');
    // A refresh and an upstream-bound /mcp call write more records of the grant.
    const refreshed = await token({
      grant_type: 'refresh_token',
      refresh_token: dave.refreshToken,
      client_id: dave.clientId,
    });
    expect(refreshed.status).to.equal(200);
    expect((await mcp(refreshed.body.access_token!)).status).to.equal(200);
    const text = [...(await dump())].flat().join('\n');
    expect(text, 'the dump holds the grant').to.contain(dave.grantId);
    for (const spelling of spellings(dave.secret)) expect(text).to.not.contain(spelling);
    for (const value of [
      dave.code,
      dave.accessToken,
      dave.refreshToken,
      refreshed.body.access_token!,
      refreshed.body.refresh_token!,
    ]) {
      expect(text).to.not.contain(value);
      expect(text, 'nor the random id part alone').to.not.contain(value.split('.')[0]);
    }
  });

  it('the grant secret reaches no log line across login, /mcp, our refresh, an upstream refresh and a refused cookie', async function () {
    const lines: string[] = [];
    const restore = captureOutput(lines, { passThrough: true });
    let erin: Login;
    let secrets: GrantSecret[] = [];
    try {
      erin = await login('binding-erin');
      expect((await mcp(erin.accessToken)).status).to.equal(200);
      const refreshed = await token({
        grant_type: 'refresh_token',
        refresh_token: erin.refreshToken,
        client_id: erin.clientId,
      });
      await stack.idp.expireAccessTokens();
      expect((await mcp(refreshed.body.access_token!)).status, 'after an upstream refresh').to.equal(200);
      // A refused resume cookie is logged too; its secret must not be.
      const browser = createBrowser();
      const started = await untilResume(browser, erin.clientId, 'binding-erin');
      const value = started.cookie!.value;
      browser.cookies.store(started.resumeUrl, [
        `${GRANT_SECRET_COOKIE}=${flip(value)}; Path=${new URL(started.resumeUrl).pathname}`,
      ]);
      await browser.follow(started.resumeUrl, { stopAt: isClient });
      secrets = [erin.secret];
    } finally {
      restore();
    }
    const output = lines.join('\n');
    expect(output, 'the capture saw the flow').to.contain('login completed');
    expect(output).to.contain('upstream token refreshed');
    expect(output).to.contain('grant secret cookie refused');
    for (const secret of secrets) for (const spelling of spellings(secret)) expect(output).to.not.contain(spelling);
  });

  it('a token of grant A opens no record of grant B, not even one the proxy has cached', async function () {
    const frank = await login('binding-frank');
    const grace = await login('binding-grace');
    expect(await sideVault.get(grace.grantId, frank.secret)).to.equal(undefined);
    expect(await sideVault.get(grace.grantId, grace.secret)).to.not.equal(undefined);
    // Grace's upstream credentials are now in the proxy's in-process cache.
    expect((await mcp(grace.accessToken)).status).to.equal(200);
    expect((await mcp(grace.accessToken)).status).to.equal(200);

    // Someone who can write to Redis adds an access token record for Grace's grant, with a value
    // of their choosing: they know Frank's secret (a token of their own), not Grace's.
    const adapter = new sideStore.Adapter('AccessToken');
    const payload = (await adapter.find(grace.accessToken))!;
    const forged = `${randomBytes(32).toString('base64url').slice(0, 43)}.${frank.secret.encode()}`;
    await adapter.upsert(forged, { ...payload, jti: forged }, 600);
    const answer = await mcp(forged);
    expect(answer.status).to.equal(401);
    expect(answer.headers.get('www-authenticate')).to.contain('error="invalid_token"');
    expect((await mcp(grace.accessToken)).status, 'Grace is unaffected').to.equal(200);
  });

  it('refresh at our /token keeps the grant secret: the new tokens open the record and work at /mcp', async function () {
    const heidi = await login('binding-heidi');
    const first = await token({
      grant_type: 'refresh_token',
      refresh_token: heidi.refreshToken,
      client_id: heidi.clientId,
    });
    expect(first.status, JSON.stringify(first.body)).to.equal(200);
    const second = await token({
      grant_type: 'refresh_token',
      refresh_token: first.body.refresh_token!,
      client_id: heidi.clientId,
    });
    expect(second.status, JSON.stringify(second.body)).to.equal(200);
    for (const value of [
      first.body.access_token!,
      first.body.refresh_token!,
      second.body.access_token!,
      second.body.refresh_token!,
    ]) {
      expect(value).to.match(BOUND_TOKEN);
      expect(grantSecretOf(value)?.encode()).to.equal(heidi.secret.encode());
    }
    expect((await mcp(second.body.access_token!)).status).to.equal(200);
    const secret = grantSecretOf(second.body.access_token!)!;
    expect((await sideVault.get(heidi.grantId, secret))?.accountId).to.equal('binding-heidi');
  });

  it('a refresh replayed within the grace window hands out the same tokens, which carry the secret and work', async function () {
    const ivan = await login('binding-ivan');
    const params = { grant_type: 'refresh_token', refresh_token: ivan.refreshToken, client_id: ivan.clientId };
    const [a, b] = [await token(params), await token(params)];
    expect([a.status, b.status]).to.deep.equal([200, 200]);
    expect(b.body.access_token).to.equal(a.body.access_token);
    expect(grantSecretOf(b.body.access_token!)?.encode()).to.equal(ivan.secret.encode());
    expect((await mcp(b.body.access_token!)).status).to.equal(200);
  });

  it('tokens of the format before grant secrets: /mcp answers 401 invalid_token, /token invalid_grant', async function () {
    const judy = await login('binding-judy');
    // The same records stored under the bare random id, as tokens were minted before.
    const id = (value: string) => value.split('.')[0]!;
    for (const [model, value] of [
      ['AccessToken', judy.accessToken],
      ['RefreshToken', judy.refreshToken],
    ] as const) {
      const adapter = new sideStore.Adapter(model);
      const payload = (await adapter.find(value))!;
      await adapter.upsert(id(value), { ...payload, jti: id(value) }, 600);
    }
    const answer = await mcp(id(judy.accessToken));
    expect(answer.status).to.equal(401);
    expect(answer.headers.get('www-authenticate')).to.contain('error="invalid_token"');
    const refreshed = await token({
      grant_type: 'refresh_token',
      refresh_token: id(judy.refreshToken),
      client_id: judy.clientId,
    });
    expect(refreshed.status).to.equal(400);
    expect(refreshed.body.error).to.equal('invalid_grant');
  });

  describe('the resume cookie that carries a new grant’s secret to the code', function () {
    it('is HttpOnly, SameSite=Lax, scoped to the resume path, short-lived, and cleared when used', async function () {
      const clientId = await register();
      const browser = createBrowser();
      const started = await untilResume(browser, clientId, 'cookie-kate');
      const line = started.setCookie.find((l) => l.startsWith(`${GRANT_SECRET_COOKIE}=`))!;
      expect(line).to.contain(`Path=${new URL(started.resumeUrl).pathname}`);
      expect(line).to.match(/; HttpOnly/);
      expect(line).to.match(/; SameSite=Lax/);
      const maxAge = Number(/Max-Age=(\d+)/.exec(line)?.[1]);
      expect(maxAge).to.be.within(1, 600);
      const back = await browser.follow(started.resumeUrl, { stopAt: isClient });
      expect(new URL(back.location!).searchParams.get('code')).to.match(BOUND_TOKEN);
      expect(browser.cookies.list(started.resumeUrl).map((c) => c.name)).to.not.include(GRANT_SECRET_COOKIE);
    });

    for (const [name, alter] of [
      ['altered', (value: string) => flip(value)],
      ['missing', () => undefined],
    ] as const) {
      it(`${name}: the client gets access_denied (no code, no 500), and a new login in the same browser succeeds`, async function () {
        const clientId = await register();
        const browser = createBrowser();
        const started = await untilResume(browser, clientId, 'cookie-leo');
        const path = new URL(started.resumeUrl).pathname;
        const altered = alter(started.cookie!.value);
        browser.cookies.store(started.resumeUrl, [
          altered === undefined
            ? `${GRANT_SECRET_COOKIE}=; Path=${path}; Max-Age=0`
            : `${GRANT_SECRET_COOKIE}=${altered}; Path=${path}`,
        ]);
        const refused = await browser.follow(started.resumeUrl, { stopAt: isClient });
        expect(refused.status).to.be.within(300, 399);
        const redirect = new URL(refused.location!);
        expect(redirect.searchParams.get('error')).to.equal('access_denied');
        expect(redirect.searchParams.get('code')).to.equal(null);

        const verifier = randomBytes(32).toString('base64url');
        const again = await browse(browser, authorizationRequest(clientId, verifier), 'cookie-leo', isClient);
        const code = new URL(again.location!).searchParams.get('code');
        expect(code, again.location).to.match(BOUND_TOKEN);
        const tokens = await exchange(clientId, code!, verifier);
        expect((await mcp(tokens.access_token!)).status).to.equal(200);
      });
    }

    it('of another login is refused, and that other login still completes with its own', async function () {
      const clientId = await register();
      const browser = createBrowser();
      const first = await untilResume(browser, clientId, 'cookie-mallory');
      const second = await untilResume(browser, clientId, 'cookie-mallory');
      expect(second.resumeUrl).to.not.equal(first.resumeUrl);
      // The first login's cookie, presented at the second login's resume endpoint.
      browser.cookies.store(second.resumeUrl, [
        `${GRANT_SECRET_COOKIE}=${first.cookie!.value}; Path=${new URL(second.resumeUrl).pathname}`,
      ]);
      const refused = await browser.follow(second.resumeUrl, { stopAt: isClient });
      expect(new URL(refused.location!).searchParams.get('error')).to.equal('access_denied');

      const completed = await browser.follow(first.resumeUrl, { stopAt: isClient });
      const code = new URL(completed.location!).searchParams.get('code');
      expect(code, completed.location).to.match(BOUND_TOKEN);
      const tokens = await exchange(clientId, code!, first.verifier);
      expect((await mcp(tokens.access_token!)).status).to.equal(200);
    });

    it('sealed for this interaction but another grant (two logins of one interaction raced) is refused', async function () {
      const clientId = await register();
      const browser = createBrowser();
      const started = await untilResume(browser, clientId, 'cookie-niaj');
      const path = new URL(started.resumeUrl).pathname;
      const key = deriveKeyMaterial(JSON.parse(stack.env.OIDC_PROVIDER_JWKS!)).grantSecretCookieKeys[0];
      const line = await grantSecretCookie(key, {
        path,
        uid: path.split('/').at(-1)!,
        grantId: 'a-grant-of-another-login',
        secret: GrantSecret.generate(),
        maxAgeSeconds: 60,
        secure: false,
      });
      browser.cookies.store(started.resumeUrl, [line]);
      const refused = await browser.follow(started.resumeUrl, { stopAt: isClient });
      expect(new URL(refused.location!).searchParams.get('error')).to.equal('access_denied');
    });
  });
});

function flip(value: string): string {
  // The last part is the GCM tag: any change there (or anywhere) must fail authentication.
  const last = value.at(-2) === 'A' ? 'B' : 'A';
  return `${value.slice(0, -2)}${last}${value.at(-1)}`;
}

describe('tokens are minted only where their grant secret is known (fail closed)', function () {
  it('an access or refresh token minted outside a request that carries a grant secret is refused', async function () {
    const store = createMemoryStore();
    try {
      const provider = createProvider({
        config: loadConfig({ LOG_LEVEL: 'warn' }),
        store,
        keys: deriveKeyMaterial(await ephemeralJwks()),
        views: createViews(undefined),
        log,
      });
      const lines: string[] = [];
      const restore = captureLogs((line) => lines.push(line));
      try {
        for (const model of [provider.AccessToken, provider.RefreshToken, provider.AuthorizationCode] as const) {
          const minted = new (model as unknown as new (payload: object) => { save(): Promise<string> })({
            accountId: 'someone',
            grantId: 'some-grant',
            clientId: 'some-client',
            scope: 'openid',
          });
          let refused: unknown;
          await minted.save().catch((error: unknown) => (refused = error));
          expect(refused, model.name).to.be.instanceOf(Error);
        }
      } finally {
        restore();
      }
      expect(lines.join('\n')).to.contain('token minted outside a request that carries its grant secret');
    } finally {
      await store.close();
    }
  });
});

describe('the resume cookie’s format', function () {
  const uid = LEGACY.uid;
  const secret = GrantSecret.decode(LEGACY.grantSecret)!;
  const valueOf = (line: string) => line.slice(`${GRANT_SECRET_COOKIE}=`.length, line.indexOf(';'));

  it('opens only at the interaction it was sealed for, and not once expired', async function () {
    const line = await grantSecretCookie(LEGACY.cookieKey, {
      path: `/auth/${uid}`,
      uid,
      grantId: LEGACY.grantId,
      secret,
      maxAgeSeconds: 60,
      secure: true,
    });
    const value = valueOf(line);
    expect(decodeProtectedHeader(value)).to.include({ alg: 'dir', enc: 'A256GCM', ctx: uid });
    const opened = await openGrantSecretCookie([LEGACY.cookieKey], uid, value);
    expect(opened?.grantId).to.equal(LEGACY.grantId);
    expect(opened?.secret.encode()).to.equal(LEGACY.grantSecret);
    expect(await openGrantSecretCookie([LEGACY.cookieKey], 'another-interaction', value)).to.equal(undefined);
    expect(await openGrantSecretCookie([randomBytes(32)], uid, value)).to.equal(undefined);
    expect(await openGrantSecretCookie([LEGACY.cookieKey], uid, flip(value))).to.equal(undefined);

    const expired = await grantSecretCookie(LEGACY.cookieKey, {
      path: `/auth/${uid}`,
      uid,
      grantId: LEGACY.grantId,
      secret,
      maxAgeSeconds: 1,
      secure: true,
    });
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect(await openGrantSecretCookie([LEGACY.cookieKey], uid, valueOf(expired))).to.equal(undefined);
  });

  it('a cookie in format v1, written by the previous code, still opens, bound as before', async function () {
    const opened = await openGrantSecretCookie([LEGACY.cookieKey], uid, LEGACY.cookieV1);
    expect(opened?.grantId).to.equal(LEGACY.grantId);
    expect(opened?.secret.encode()).to.equal(LEGACY.grantSecret);
    expect(await openGrantSecretCookie([LEGACY.cookieKey], 'another-interaction', LEGACY.cookieV1)).to.equal(undefined);
    expect(await openGrantSecretCookie([randomBytes(32)], uid, LEGACY.cookieV1)).to.equal(undefined);
    expect(await openGrantSecretCookie([LEGACY.cookieKey], uid, flip(LEGACY.cookieV1))).to.equal(undefined);
  });
});
