import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { deriveKeyMaterial } from '../lib/auth-server/keys.ts';
import { sha256Hex } from '../lib/dev/example-mcp-server.ts';
import { startDevIdentityProvider, type DevIdentityProvider } from '../lib/dev/identity-provider.ts';
import {
  createIdentityClient,
  IdentityError,
  type IdentityClient,
  type IdentityErrorCode,
  type UpstreamCredentials,
} from '../lib/identity/index.ts';
import { start, type RunningProxy } from '../lib/start.ts';
import { createRedisStore, type Store } from '../lib/store/index.ts';
import { captureLogs, log } from '../lib/telemetry/log.ts';
import {
  createVault,
  GrantSecret,
  grantSecretOf,
  keyId,
  open,
  refreshLockKeyFor,
  seal,
  vaultKeyFor,
  type Vault,
  type VaultDeps,
  type VaultEntry,
} from '../lib/vault/index.ts';
import { freePort, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';
import { captureOutput } from './helpers/capture.ts';
import { dumpRedis } from './helpers/redis.ts';

const REDIS_URL = process.env.TEST_REDIS_URL!;
const random = (bytes = 16) => randomBytes(bytes).toString('base64url');
const epoch = () => Math.floor(Date.now() / 1000);
/** The grant secret G of the unit tests' grants; the end-to-end tests read each grant's from its token. */
const secret = GrantSecret.generate();

function redisStore(keyPrefix: string): Store {
  return createRedisStore({ url: REDIS_URL, keyPrefix, tlsRejectUnauthorized: false });
}

async function dumpPrefix(prefix: string): Promise<Map<string, string>> {
  const redis = new Redis(REDIS_URL);
  try {
    return await dumpRedis(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

async function deletePrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

function entryWith(credentials: Partial<UpstreamCredentials> = {}): VaultEntry {
  return {
    accountId: 'alice@example.test',
    clientId: 'client-abc',
    expiresAt: epoch() + 3600,
    credentials: { accessToken: `at-${random()}`, refreshToken: `rt-${random()}`, tokenType: 'bearer', ...credentials },
  };
}

/**
 * A stand-in for the upstream IdP's refresh, for the lock and hand-off cases that need a refresh
 * to be slow or to fail on cue. The real IdP is used end to end further down.
 */
class FakeIdentity implements IdentityClient {
  readonly issuer = 'https://idp.invalid';
  readonly scope = 'openid';
  readonly presented: string[] = [];
  delayMs = 0;
  failWith: IdentityErrorCode | undefined;
  expiresIn = 3600;

  async authorizationUrl(): Promise<URL> {
    throw new Error('not used');
  }
  async exchange(): Promise<never> {
    throw new Error('not used');
  }
  async refresh(refreshToken: string): Promise<UpstreamCredentials> {
    this.presented.push(refreshToken);
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    if (this.failWith) throw new IdentityError(this.failWith, `simulated ${this.failWith}`);
    return {
      accessToken: `at-${random()}`,
      refreshToken: `rt-${random()}`,
      expiresAt: epoch() + this.expiresIn,
      tokenType: 'bearer',
    };
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return error instanceof IdentityError ? error.code : `not an IdentityError: ${String(error)}`;
  }
}

describe('vault: upstream credentials at rest', function () {
  const prefix = `test-vault-${random(6)}:`;
  const root = randomBytes(32);
  let store: Store;
  let vault: Vault;

  before(async function () {
    store = redisStore(prefix);
    await store.check();
    vault = createVault({ store, identity: new FakeIdentity(), key: root, log });
  });
  after(async function () {
    await store?.close();
    await deletePrefix(prefix);
  });

  it('a Redis dump alone holds no upstream token, account or client in clear', async function () {
    const grantId = random();
    const entry = entryWith({ scope: 'openid profile' });
    await vault.put(grantId, secret, entry);
    const dump = await dumpPrefix(prefix);
    const record = dump.get(`${prefix}${vaultKeyFor(grantId)}`);
    expect(record).to.match(/^v3\.[\w-]{8}\.[\w-]{16}\.[\w-]+\.[\w-]{22}$/);
    const everything = [...dump].flat().join('\n');
    for (const secret of [
      entry.credentials.accessToken,
      entry.credentials.refreshToken!,
      entry.accountId,
      entry.clientId,
    ]) {
      expect(everything).to.not.contain(secret);
    }
    expect((await vault.get(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
  });

  it('the record lives as long as the grant', async function () {
    const grantId = random();
    await vault.put(grantId, secret, { ...entryWith(), expiresAt: epoch() + 1234 });
    const redis = new Redis(REDIS_URL);
    try {
      const ttl = await redis.ttl(`${prefix}${vaultKeyFor(grantId)}`);
      expect(ttl).to.be.within(1200, 1234);
    } finally {
      redis.disconnect();
    }
  });

  it('a record sealed under another root key (OIDC_PROVIDER_JWKS rotated) is treated as absent', async function () {
    const grantId = random();
    await vault.put(grantId, secret, entryWith());
    const rotated = createVault({ store, identity: new FakeIdentity(), key: randomBytes(32), log });
    expect(await rotated.get(grantId, secret)).to.equal(undefined);
    const sealed = (await store.get(vaultKeyFor(grantId)))!;
    expect(open(randomBytes(32), grantId, secret, sealed)).to.deep.equal({ ok: false, reason: 'other-key' });
  });

  it('a record copied under another grant does not open', async function () {
    const [mine, theirs] = [random(), random()];
    await vault.put(mine, secret, entryWith());
    await store.set(vaultKeyFor(theirs), (await store.get(vaultKeyFor(mine)))!);
    expect(await vault.get(theirs, secret)).to.equal(undefined);
    expect(await vault.get(mine, secret)).to.not.equal(undefined);
  });

  it('an altered record is treated as absent, whichever part was altered', async function () {
    const grantId = random();
    const sealed = seal(root, grantId, secret, entryWith());
    const flip = (part: string) => (part[0] === 'A' ? 'B' : 'A') + part.slice(1);
    const parts = sealed.split('.');
    const variants = [
      ...parts.map((_, i) => parts.map((p, j) => (i === j ? flip(p) : p)).join('.')),
      parts.slice(0, 4).join('.'),
      `${sealed}.extra`,
      sealed.replace(/^v3/, 'v2'),
      sealed.replace(/^v3/, 'v4'),
      `${parts[0]}.${parts[1]}.${parts[2]}.${parts[3]}AAAA.${parts[4]}`,
      '',
      'not a record',
    ];
    for (const variant of variants) {
      expect(open(root, grantId, secret, variant).ok, variant).to.equal(false);
      await store.set(vaultKeyFor(grantId), variant);
      expect(await vault.get(grantId, secret), variant).to.equal(undefined);
    }
    expect(open(root, grantId, secret, sealed).ok).to.equal(true);
  });

  it('a record of a previous format (v1, v2 keyed by the server key alone) is treated as absent', async function () {
    const grantId = random();
    await store.set(vaultKeyFor(grantId), 'v1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.AAAA');
    expect(await vault.get(grantId, secret)).to.equal(undefined);
    const v2 = `v2.${keyId(root)}.${'A'.repeat(16)}.${'A'.repeat(40)}.${'A'.repeat(22)}`;
    await store.set(vaultKeyFor(grantId), v2);
    expect(await vault.get(grantId, secret)).to.equal(undefined);
    expect(open(root, grantId, secret, v2)).to.deep.equal({ ok: false, reason: 'malformed' });
  });

  it('a record opens only with its grant’s secret: the server key alone, or another grant’s secret, opens nothing', async function () {
    const grantId = random();
    await vault.put(grantId, secret, entryWith());
    const sealed = (await store.get(vaultKeyFor(grantId)))!;
    expect(await vault.get(grantId, GrantSecret.generate())).to.equal(undefined);
    expect(open(root, grantId, GrantSecret.generate(), sealed)).to.deep.equal({ ok: false, reason: 'tampered' });
    expect(open(root, grantId, secret, sealed).ok).to.equal(true);
  });

  it('a grant secret is 32 random bytes, read back only from its canonical encoding, and never printed', function () {
    const encoded = secret.encode();
    expect(Buffer.from(encoded, 'base64url')).to.have.length(32);
    expect(GrantSecret.decode(encoded)?.encode()).to.equal(encoded);
    expect(GrantSecret.generate().encode()).to.not.equal(encoded);
    // 43 characters carry 258 bits; a last character with the spare bits set is another spelling.
    const last = encoded.at(-1) === 'B' ? 'C' : 'B';
    expect(GrantSecret.decode(`${encoded.slice(0, -1)}${last}`)).to.equal(undefined);
    for (const bad of ['', 'short', `${encoded}A`, `${encoded.slice(0, -1)}+`])
      expect(GrantSecret.decode(bad), bad).to.equal(undefined);
    expect(grantSecretOf(`${random(32).slice(0, 43)}.${encoded}`)?.encode()).to.equal(encoded);
    for (const notOurs of [encoded, `.${encoded}`, `a.b.${encoded}`, 'v2-token-without-secret', `x.${encoded}x`]) {
      expect(grantSecretOf(notOurs), notOurs).to.equal(undefined);
    }
    const lines: string[] = [];
    const restore = captureLogs((line) => lines.push(line));
    try {
      log.info('careless', { grant: secret, nested: { secret } });
    } finally {
      restore();
    }
    for (const output of [JSON.stringify({ secret }), inspect(secret), inspect({ secret }), lines.join('\n')]) {
      expect(output).to.not.contain(encoded);
    }
  });

  it('the key id in a record is public and says nothing of the key', function () {
    const id = keyId(root);
    expect(id).to.match(/^[\w-]{8}$/);
    expect(root.toString('base64url')).to.not.contain(id);
    expect(keyId(randomBytes(32))).to.not.equal(id);
  });

  it('the vault key is separated from the other secrets derived from OIDC_PROVIDER_JWKS', async function () {
    const { ephemeralJwks } = await import('../lib/auth-server/keys.ts');
    const keys = deriveKeyMaterial(await ephemeralJwks());
    const others = [
      keys.csrfKey.toString('base64url'),
      ...keys.cookieKeys,
      keys.grantSecretCookieKey.toString('base64url'),
    ];
    expect(others).to.not.include(keys.vaultKey.toString('base64url'));
    expect(keys.vaultKey.length).to.equal(32);
  });

  it('credentials handed out never serialise or inspect with their tokens', async function () {
    const grantId = random();
    const entry = entryWith();
    await vault.put(grantId, secret, entry);
    const loaded = (await vault.get(grantId, secret))!;
    const lines: string[] = [];
    const restore = captureLogs((line) => lines.push(line));
    try {
      log.info('careless', { entry: loaded, credentials: loaded.credentials, upstream: loaded });
    } finally {
      restore();
    }
    const outputs = [
      JSON.stringify(loaded),
      inspect(loaded, { depth: 5 }),
      inspect(loaded.credentials),
      lines.join('\n'),
    ];
    for (const output of outputs) {
      expect(output).to.not.contain(entry.credentials.accessToken);
      expect(output).to.not.contain(entry.credentials.refreshToken);
    }
    expect(JSON.stringify(loaded)).to.contain('[redacted]');
    expect(loaded.credentials.accessToken).to.equal(entry.credentials.accessToken);
  });
});

describe('vault: single-flight refresh across processes', function () {
  const prefix = `test-vault-${random(6)}:`;
  const root = randomBytes(32);
  let stores: Store[];
  let idp: FakeIdentity;

  /** Two vaults on two connections to one Redis: two proxy processes, as far as the vault can tell. */
  const processes = (options: Partial<VaultDeps> = {}): [Vault, Vault] => [
    createVault({ store: stores[0]!, identity: idp, key: root, log, ...options }),
    createVault({ store: stores[1]!, identity: idp, key: root, log, ...options }),
  ];

  before(async function () {
    stores = [redisStore(prefix), redisStore(prefix)];
    await Promise.all(stores.map((s) => s.check()));
  });
  beforeEach(function () {
    idp = new FakeIdentity();
  });
  after(async function () {
    await Promise.all((stores ?? []).map((s) => s.close()));
    await deletePrefix(prefix);
  });

  it('40 callers in two processes racing on one rejected token cause exactly one upstream refresh', async function () {
    const [a, b] = processes();
    const grantId = random();
    const entry = entryWith();
    await a.put(grantId, secret, entry);
    idp.delayMs = 200;
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).refresh(grantId, secret, entry.credentials.accessToken)),
    );
    expect(idp.presented).to.deep.equal([entry.credentials.refreshToken]);
    const tokens = new Set(results.map((c) => c.accessToken));
    expect(tokens.size).to.equal(1);
    expect([...tokens][0]).to.not.equal(entry.credentials.accessToken);
    expect((await b.get(grantId, secret))?.credentials.accessToken).to.equal([...tokens][0]);
    expect(await stores[0]!.get(refreshLockKeyFor(grantId)), 'lock released').to.equal(undefined);
  });

  it('a caller whose token was already replaced gets the replacement without a refresh', async function () {
    const [a, b] = processes();
    const grantId = random();
    const entry = entryWith();
    await a.put(grantId, secret, entry);
    const fresh = await a.refresh(grantId, secret, entry.credentials.accessToken);
    const late = await b.refresh(grantId, secret, entry.credentials.accessToken);
    expect(late.accessToken).to.equal(fresh.accessToken);
    expect(idp.presented).to.have.length(1);
  });

  it('when the lock holder fails transiently, the waiting process answers transient without a second refresh', async function () {
    // A hand-off timeout far beyond mocha's: only the released lock can end the wait in time.
    const [a, b] = processes({ handoffTimeoutMs: 120_000 });
    const grantId = random();
    const entry = entryWith();
    await a.put(grantId, secret, entry);
    idp.delayMs = 200;
    idp.failWith = 'IDENTITY_TRANSIENT';
    const codes = await Promise.all([
      codeOf(a.refresh(grantId, secret, entry.credentials.accessToken)),
      codeOf(b.refresh(grantId, secret, entry.credentials.accessToken)),
    ]);
    expect(codes).to.deep.equal(['IDENTITY_TRANSIENT', 'IDENTITY_TRANSIENT']);
    expect(idp.presented).to.have.length(1);
    // The grant is kept: once the upstream recovers, the next attempt refreshes.
    idp.failWith = undefined;
    idp.delayMs = 0;
    const recovered = await b.refresh(grantId, secret, entry.credentials.accessToken);
    expect(recovered.accessToken).to.not.equal(entry.credentials.accessToken);
    expect(idp.presented).to.deep.equal([entry.credentials.refreshToken, entry.credentials.refreshToken]);
  });

  it('invalid_grant reaches the waiting process as terminal, and no later refresh asks the upstream again', async function () {
    const [a, b] = processes();
    const grantId = random();
    const entry = entryWith();
    await a.put(grantId, secret, entry);
    idp.delayMs = 200;
    idp.failWith = 'IDENTITY_GRANT_INVALID';
    const codes = await Promise.all([
      codeOf(a.refresh(grantId, secret, entry.credentials.accessToken)),
      codeOf(b.refresh(grantId, secret, entry.credentials.accessToken)),
    ]);
    expect(codes).to.deep.equal(['IDENTITY_GRANT_INVALID', 'IDENTITY_GRANT_INVALID']);
    expect(await codeOf(a.refresh(grantId, secret, entry.credentials.accessToken))).to.equal('IDENTITY_GRANT_INVALID');
    expect(idp.presented).to.have.length(1);
    expect((await a.get(grantId, secret))?.upstreamRefusedAt).to.be.a('number');
  });

  it('a lock left behind by a crashed process ends the wait with a transient error, not a hang', async function () {
    const [a] = processes({ handoffTimeoutMs: 300 });
    const grantId = random();
    const entry = entryWith();
    await a.put(grantId, secret, entry);
    await stores[1]!.set(refreshLockKeyFor(grantId), 'a-crashed-process', 60);
    expect(await codeOf(a.refresh(grantId, secret, entry.credentials.accessToken))).to.equal('IDENTITY_TRANSIENT');
    expect(idp.presented).to.have.length(0);
    // Once the lock lapses, the next request refreshes.
    await stores[1]!.del(refreshLockKeyFor(grantId));
    expect((await a.refresh(grantId, secret, entry.credentials.accessToken)).accessToken).to.not.equal(
      entry.credentials.accessToken,
    );
  });

  it('no refresh token, or no record at all: terminal', async function () {
    const [a] = processes();
    const grantId = random();
    const entry = entryWith({ refreshToken: undefined });
    await a.put(grantId, secret, entry);
    expect(await codeOf(a.refresh(grantId, secret, entry.credentials.accessToken))).to.equal('IDENTITY_GRANT_INVALID');
    expect(await codeOf(a.refresh(random(), secret, 'whatever'))).to.equal('IDENTITY_GRANT_INVALID');
    expect(idp.presented).to.have.length(0);
  });

  describe('refresh ahead of expiry (getFresh)', function () {
    it('refreshes a token with under a minute left before handing it out', async function () {
      const [a] = processes();
      const grantId = random();
      const entry = entryWith({ expiresAt: epoch() + 30 });
      await a.put(grantId, secret, entry);
      const fresh = (await a.getFresh(grantId, secret))!;
      expect(fresh.credentials.accessToken).to.not.equal(entry.credentials.accessToken);
      expect(idp.presented).to.have.length(1);
      expect((await a.getFresh(grantId, secret))!.credentials.accessToken).to.equal(fresh.credentials.accessToken);
      expect(idp.presented).to.have.length(1);
    });

    it('leaves a token with more time, or without expires_in, alone', async function () {
      const [a] = processes();
      const [later, unknown] = [random(), random()];
      await a.put(later, secret, entryWith({ expiresAt: epoch() + 600 }));
      await a.put(unknown, secret, entryWith());
      await a.getFresh(later, secret);
      await a.getFresh(unknown, secret);
      expect(idp.presented).to.have.length(0);
    });

    it('a failed early refresh hands out the still-valid token instead of failing', async function () {
      const [a] = processes();
      const grantId = random();
      const entry = entryWith({ expiresAt: epoch() + 30 });
      await a.put(grantId, secret, entry);
      idp.failWith = 'IDENTITY_TRANSIENT';
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect(idp.presented).to.have.length(1);
    });

    it('does not wait while another process refreshes early: the current token still works', async function () {
      const [a, b] = processes();
      const grantId = random();
      const entry = entryWith({ expiresAt: epoch() + 30 });
      await a.put(grantId, secret, entry);
      idp.delayMs = 300;
      const first = a.getFresh(grantId, secret);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const second = await b.getFresh(grantId, secret);
      expect(second?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect((await first)?.credentials.accessToken).to.not.equal(entry.credentials.accessToken);
      expect(idp.presented).to.have.length(1);
    });

    it('an already expired token is refreshed before it is handed out', async function () {
      const [a] = processes();
      const grantId = random();
      const entry = entryWith({ expiresAt: epoch() - 5 });
      await a.put(grantId, secret, entry);
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.not.equal(entry.credentials.accessToken);
    });

    it('invalid_grant on an early refresh keeps the token for its last seconds, then the 401 path is terminal', async function () {
      const [a] = processes();
      const grantId = random();
      const entry = entryWith({ expiresAt: epoch() + 30 });
      await a.put(grantId, secret, entry);
      idp.failWith = 'IDENTITY_GRANT_INVALID';
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect(await codeOf(a.refresh(grantId, secret, entry.credentials.accessToken))).to.equal(
        'IDENTITY_GRANT_INVALID',
      );
      expect(idp.presented, 'the upstream is asked once').to.have.length(1);
    });
  });
});

describe('vault: upstream refresh failures are classified by what they mean', function () {
  let idp: DevIdentityProvider;
  let identity: IdentityClient;
  let dir: string;
  const servers: Server[] = [];

  /** A token endpoint answering whatever `handler` says, described by a metadata file. */
  async function identityAt(handler: Parameters<typeof createServer>[1], timeout?: number): Promise<IdentityClient> {
    const server = createServer(handler);
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const metadataFile = join(dir, `${random(4)}.json`);
    await writeFile(
      metadataFile,
      JSON.stringify({ issuer: origin, authorization_endpoint: `${origin}/auth`, token_endpoint: `${origin}/token` }),
    );
    return createIdentityClient(
      { serverUrl: undefined, metadataFile, clientId: 'c', clientSecret: 's', scope: 'openid' },
      { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true, timeout },
    );
  }

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'vault-test-'));
    idp = await startDevIdentityProvider({
      redirectUris: ['http://127.0.0.1/cb'],
      tokenEndpointAuthMethod: 'client_secret_post',
    });
    identity = await createIdentityClient(
      {
        serverUrl: new URL(idp.issuer),
        metadataFile: undefined,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        scope: 'openid',
      },
      { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true },
    );
  });
  afterEach(function () {
    idp.setTokenEndpointFailure(undefined);
  });
  after(async function () {
    for (const server of servers) {
      server.closeAllConnections();
      server.close();
    }
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const refreshToken = 'presented-refresh-token-' + random();
  async function failure(client: IdentityClient): Promise<IdentityError> {
    try {
      await client.refresh(refreshToken);
    } catch (error) {
      expect(error).to.be.instanceOf(IdentityError);
      // Errors are logged and may be shown: the refresh token presented must not be in them.
      expect((error as Error).message).to.not.contain(refreshToken);
      return error as IdentityError;
    }
    throw new Error('refresh unexpectedly succeeded');
  }

  it('invalid_grant (a refresh token the upstream does not know) is terminal', async function () {
    expect((await failure(identity)).code).to.equal('IDENTITY_GRANT_INVALID');
  });

  for (const status of [503, 500, 429]) {
    it(`HTTP ${status} at the token endpoint is transient`, async function () {
      idp.setTokenEndpointFailure(status);
      expect((await failure(identity)).code).to.equal('IDENTITY_TRANSIENT');
    });
  }

  it('a wrong client secret is transient: an operator mistake must not log every user out', async function () {
    const misconfigured = await createIdentityClient(
      {
        serverUrl: new URL(idp.issuer),
        metadataFile: undefined,
        clientId: idp.clientId,
        clientSecret: 'wrong',
        scope: 'openid',
      },
      { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true },
    );
    expect((await failure(misconfigured)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a 401 challenge in WWW-Authenticate (client authentication failed) is transient', async function () {
    const client = await identityAt((_req, res) => {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="token"', 'content-type': 'application/json' });
      res.end('{"error":"invalid_client"}');
    });
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a 5xx whose body says invalid_grant is still transient', async function () {
    const client = await identityAt((_req, res) => {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"error":"invalid_grant"}');
    });
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('an HTML error page is transient', async function () {
    const client = await identityAt((_req, res) => {
      res.writeHead(504, { 'content-type': 'text/html' });
      res.end('<html><body>Gateway Timeout</body></html>');
    });
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a token endpoint that never answers is transient (timeout)', async function () {
    this.timeout(10_000);
    const client = await identityAt(() => undefined, 1);
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a refused connection is transient', async function () {
    const client = await identityAt((_req, res) => res.end());
    servers.at(-1)!.close();
    servers.at(-1)!.closeAllConnections();
    await once(servers.at(-1)!, 'close');
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });
});

interface Login {
  oauth: TestOAuthClient;
  grantId: string;
  sessionId: string;
  accessToken: string;
}

interface McpAnswer {
  status: number;
  headers: Headers;
  body: string;
}

const PROTOCOL_VERSION = '2025-06-18';

describe('vault and proxy end to end: refresh, failure policy, no leaks', function () {
  let stack: Stack;
  let prefix: string;
  /** Reads and rewrites the proxy's vault records from outside, with the proxy's own key. */
  let sideVault: Vault;
  let sideStore: Store;
  /** Each login's grant secret, read from its access token: what the side vault needs to open a record. */
  const secrets = new Map<string, GrantSecret>();

  async function vaultGrants(): Promise<Set<string>> {
    const keys = [...(await dumpPrefix(prefix)).keys()];
    const marker = `${prefix}vault:`;
    return new Set(keys.filter((k) => k.startsWith(marker)).map((k) => k.slice(marker.length)));
  }

  /** One JSON-RPC message to /mcp as any MCP client sends it, without the SDK's automatic re-authentication. */
  async function post(
    accessToken: string,
    sessionId: string | undefined,
    message: object,
    mcpUrl = stack.mcpUrl,
  ): Promise<McpAnswer> {
    const res = await fetch(mcpUrl, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        authorization: `Bearer ${accessToken}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': PROTOCOL_VERSION,
        ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
      },
      body: JSON.stringify({ jsonrpc: '2.0', ...message }),
    });
    return { status: res.status, headers: res.headers, body: await res.text() };
  }

  /**
   * The SDK client's OAuth flow (registration, consent, upstream login, code exchange), then an
   * MCP session. `beforeFirstRequest` runs between the two: before the proxy has read this grant's
   * vault record, so a rewrite of the record is what the proxy sees (it may cache what it read).
   */
  async function login(user: string, beforeFirstRequest?: (grantId: string) => Promise<void>): Promise<Login> {
    const before = await vaultGrants();
    const oauth = new TestOAuthClient({ user });
    expect(await auth(oauth, { serverUrl: stack.mcpUrl })).to.equal('REDIRECT');
    const code = oauth.lastRedirect?.searchParams.get('code');
    if (!code) throw new Error(`no authorization code: ${oauth.lastRedirect?.href}`);
    expect(await auth(oauth, { serverUrl: stack.mcpUrl, authorizationCode: code })).to.equal('AUTHORIZED');
    const grantId = [...(await vaultGrants())].find((id) => !before.has(id));
    if (!grantId) throw new Error('no vault record appeared for the login');
    secrets.set(grantId, grantSecretOf(oauth.savedTokens!.access_token)!);
    await beforeFirstRequest?.(grantId);

    const accessToken = oauth.savedTokens!.access_token;
    const initialized = await post(accessToken, undefined, {
      id: 0,
      method: 'initialize',
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'vault-test', version: '1.0.0' },
      },
    });
    expect(initialized.status, initialized.body).to.equal(200);
    const sessionId = initialized.headers.get('mcp-session-id');
    if (!sessionId) throw new Error('the MCP server opened no session');
    expect((await post(accessToken, sessionId, { method: 'notifications/initialized' })).status).to.equal(202);
    return { oauth, grantId, sessionId, accessToken };
  }

  const call = (who: Login, id: number, mcpUrl = stack.mcpUrl): Promise<McpAnswer> =>
    post(
      who.accessToken,
      who.sessionId,
      { id, method: 'tools/call', params: { name: 'echo', arguments: { text: `call number ${id}` } } },
      mcpUrl,
    );

  function expectSuccess(answer: McpAnswer, id: number): void {
    expect(answer.status, answer.body).to.equal(200);
    expect(answer.body).to.contain(`call number ${id}`);
  }

  /** The auth-failure contract of /mcp: JSON or a challenge, never a redirect, a page or a 500. */
  function expectNoPageNoRedirect(answer: McpAnswer): void {
    expect(answer.status).to.not.be.within(300, 399);
    expect(answer.status).to.not.equal(500);
    expect(answer.headers.get('location')).to.equal(null);
    expect(answer.headers.get('content-type') ?? '').to.not.contain('html');
  }

  async function upstreamOf(grantId: string): Promise<UpstreamCredentials | undefined> {
    return (await sideVault.get(grantId, secrets.get(grantId)!))?.credentials;
  }

  /** Makes the grant's upstream token look like it expires in 30 s (the IdP still honours it). */
  async function nearExpiry(grantId: string): Promise<VaultEntry> {
    const secret = secrets.get(grantId)!;
    const entry = (await sideVault.get(grantId, secret))!;
    await sideVault.put(grantId, secret, { ...entry, credentials: { ...entry.credentials, expiresAt: epoch() + 30 } });
    return entry;
  }

  before(async function () {
    stack = await startStack();
    prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
    sideStore = redisStore(prefix);
    await sideStore.check();
    const key = deriveKeyMaterial(JSON.parse(stack.env.OIDC_PROVIDER_JWKS!)).vaultKey;
    sideVault = createVault({ store: sideStore, identity: new FakeIdentity(), key, log });
  });
  afterEach(function () {
    stack.idp.setTokenEndpointFailure(undefined);
  });
  after(async function () {
    await sideStore?.close();
    await stack?.close();
  });

  it('50 concurrent calls on two proxy processes after upstream expiry cause exactly one refresh at the IdP', async function () {
    this.timeout(60_000);
    const port = await freePort();
    // Same BASE_URL, same Redis, same keys: two dynos of one app.
    const second: RunningProxy = await start({ ...stack.env, PORT: String(port) });
    try {
      const urls = [stack.mcpUrl, `http://localhost:${port}/mcp`];
      const alice = await login('concurrent-alice');
      // Both processes have used the grant: both hold (and may cache) the token about to expire.
      expectSuccess(await call(alice, 1, urls[0]), 1);
      expectSuccess(await call(alice, 2, urls[1]), 2);
      const before = { refreshes: stack.idp.stats.refreshes, logins: stack.idp.stats.codeExchanges };
      const upstreamBefore = (await upstreamOf(alice.grantId))!.accessToken;
      await stack.idp.expireAccessTokens();

      const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => call(alice, 100 + i, urls[i % 2])));
      answers.forEach((answer, i) => expectSuccess(answer, 100 + i));
      expect(stack.idp.stats.refreshes - before.refreshes, 'upstream refreshes').to.equal(1);
      expect(stack.idp.stats.codeExchanges, 'no new login').to.equal(before.logins);
      expect((await upstreamOf(alice.grantId))!.accessToken).to.not.equal(upstreamBefore);
    } finally {
      await second.close();
    }
  });

  it('refreshes ahead of expiry: a token with under a minute left is replaced before the request is forwarded', async function () {
    let original: VaultEntry | undefined;
    const refreshes = stack.idp.stats.refreshes;
    const bob = await login('early-bob', async (grantId) => {
      original = await nearExpiry(grantId);
    });
    expect(stack.idp.stats.refreshes - refreshes).to.equal(1);
    const fresh = (await upstreamOf(bob.grantId))!.accessToken;
    expect(fresh).to.not.equal(original!.credentials.accessToken);
    expect(stack.mcp.locals.seenTokenHashes.has(sha256Hex(fresh)), 'forwarded with the new token').to.equal(true);
    expect(
      stack.mcp.locals.seenTokenHashes.has(sha256Hex(original!.credentials.accessToken)),
      'old token never sent',
    ).to.equal(false);
    expectSuccess(await call(bob, 1), 1);
    expect(stack.idp.stats.refreshes - refreshes).to.equal(1);
  });

  it('a failed early refresh does not fail the request while the old token is still valid', async function () {
    let original: VaultEntry | undefined;
    const carol = await login('early-carol', async (grantId) => {
      original = await nearExpiry(grantId);
      stack.idp.setTokenEndpointFailure(503);
    });
    expectSuccess(await call(carol, 1), 1);
    expect((await upstreamOf(carol.grantId))!.accessToken).to.equal(original!.credentials.accessToken);
  });

  for (const status of [503, 429]) {
    it(`upstream ${status} on refresh: the grant is kept, the client gets 503 with Retry-After, and the next call after recovery succeeds`, async function () {
      const dave = await login(`transient-${status}`);
      await stack.idp.expireAccessTokens();
      stack.idp.setTokenEndpointFailure(status);
      const failed = await call(dave, 1);
      expectNoPageNoRedirect(failed);
      expect(failed.status).to.equal(503);
      expect(Number(failed.headers.get('retry-after'))).to.be.greaterThan(0);
      expect(JSON.parse(failed.body)).to.include({ error: 'temporarily_unavailable' });
      expect(await upstreamOf(dave.grantId), 'upstream credentials kept').to.not.equal(undefined);

      stack.idp.setTokenEndpointFailure(undefined);
      expectSuccess(await call(dave, 2), 2);
    });
  }

  it('upstream invalid_grant on refresh: our grant is revoked and the client gets 401 invalid_token with the challenge', async function () {
    const erin = await login('terminal-erin');
    const ourRefreshToken = erin.oauth.savedTokens!.refresh_token!;
    await stack.idp.revokeRefreshTokens();
    await stack.idp.expireAccessTokens();
    const answer = await call(erin, 1);
    expectNoPageNoRedirect(answer);
    expect(answer.status).to.equal(401);
    const challenge = answer.headers.get('www-authenticate') ?? '';
    expect(challenge).to.match(/^Bearer /);
    expect(challenge).to.contain('error="invalid_token"');
    expect(challenge).to.contain(`resource_metadata="${stack.baseUrl}/.well-known/oauth-protected-resource/mcp"`);
    expect(await upstreamOf(erin.grantId), 'upstream credentials deleted').to.equal(undefined);

    const token = await fetch(`${stack.baseUrl}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: ourRefreshToken,
        client_id: erin.oauth.info!.client_id,
      }),
    });
    expect(token.status, 'our refresh token is dead').to.equal(400);
    expect(((await token.json()) as { error: string }).error).to.equal('invalid_grant');
    expect((await call(erin, 2)).status, 'our access token is dead').to.equal(401);
  });

  it('no upstream access or refresh token reaches a log line or a response across login, refresh and failures', async function () {
    const lines: string[] = [];
    const upstreamTokens = new Set<string>();
    const answers: McpAnswer[] = [];
    const collect = async (grantId: string) => {
      const credentials = await upstreamOf(grantId);
      if (credentials?.accessToken) upstreamTokens.add(credentials.accessToken);
      if (credentials?.refreshToken) upstreamTokens.add(credentials.refreshToken);
    };
    // Everything the process prints, through the logger or around it (console, oidc-provider).
    const restore = captureOutput(lines, { passThrough: true });
    try {
      const frank = await login('leak-frank', async (grantId) => {
        await collect(grantId);
        await nearExpiry(grantId); // the session's first request refreshes ahead of expiry
      });
      await collect(frank.grantId);
      answers.push(await call(frank, 1));

      await stack.idp.expireAccessTokens();
      answers.push(await call(frank, 2)); // refresh on 401
      await collect(frank.grantId);

      await stack.idp.expireAccessTokens();
      stack.idp.setTokenEndpointFailure(503);
      answers.push(await call(frank, 3)); // transient failure
      stack.idp.setTokenEndpointFailure(undefined);
      answers.push(await call(frank, 4)); // recovery
      await collect(frank.grantId);

      await stack.idp.revokeRefreshTokens();
      await stack.idp.expireAccessTokens();
      answers.push(await call(frank, 5)); // terminal failure
    } finally {
      restore();
    }
    expect(answers.map((a) => a.status)).to.deep.equal([200, 200, 503, 200, 401]);
    expect(upstreamTokens.size, 'tokens collected').to.be.at.least(8);
    const output = lines.join('\n');
    // The capture saw the flow: otherwise "no token in it" proves nothing.
    expect(output).to.contain('upstream token refreshed');
    expect(output).to.contain('upstream refresh failed');
    expect(output).to.contain('upstream grant is gone');
    const responses = answers.map((a) => `${[...a.headers].flat().join('\n')}\n${a.body}`).join('\n');
    for (const token of upstreamTokens) {
      expect(output.includes(token), 'an upstream token in the logs').to.equal(false);
      expect(responses.includes(token), 'an upstream token in a response').to.equal(false);
    }
  });
});
