import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { expect } from 'chai';
import { decodeProtectedHeader } from 'jose';
import { Redis } from 'ioredis';
import { deriveKeyMaterial } from '../lib/auth-server/keys.ts';
import type { Store } from '../lib/store/index.ts';
import { captureLogs, log } from '../lib/telemetry/log.ts';
import {
  createVault,
  GrantSecret,
  grantSecretOf,
  keyId,
  open,
  RECORD_TYPE,
  seal,
  vaultKeyFor,
  type Vault,
} from '../lib/vault/index.ts';
import { LEGACY } from './helpers/legacy-records.ts';
import {
  deletePrefix,
  dumpPrefix,
  entryWith,
  epoch,
  FakeIdentity,
  random,
  REDIS_URL,
  redisStore,
  secret,
} from './helpers/vault.ts';

describe('vault: upstream credentials at rest', function () {
  const prefix = `test-vault-${random(6)}:`;
  const root = randomBytes(32);
  let store: Store;
  let vault: Vault;

  before(async function () {
    store = redisStore(prefix);
    await store.check();
    vault = createVault({ store, identity: new FakeIdentity(), keys: [root], log });
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
    // Compact JWE, `dir`: header, empty encrypted key, 96-bit IV, ciphertext, 128-bit tag.
    expect(record).to.match(/^[\w-]+\.\.[\w-]{16}\.[\w-]+\.[\w-]{22}$/);
    expect(decodeProtectedHeader(record!)).to.deep.equal({
      alg: 'dir',
      enc: 'A256GCM',
      kid: keyId(root),
      typ: RECORD_TYPE,
      ctx: grantId,
    });
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
    const rotated = createVault({ store, identity: new FakeIdentity(), keys: [randomBytes(32)], log });
    expect(await rotated.get(grantId, secret)).to.equal(undefined);
    const sealed = (await store.get(vaultKeyFor(grantId)))!;
    expect(await open(randomBytes(32), grantId, secret, sealed)).to.deep.equal({ ok: false, reason: 'other-key' });
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
    const sealed = await seal(root, grantId, secret, entryWith());
    const flip = (part: string) => (part[0] === 'A' ? 'B' : 'A') + part.slice(1);
    const parts = sealed.split('.');
    const header = decodeProtectedHeader(sealed);
    const withHeader = (changes: object) =>
      [Buffer.from(JSON.stringify({ ...header, ...changes })).toString('base64url'), ...parts.slice(1)].join('.');
    const variants = [
      ...parts.map((_, i) => parts.map((p, j) => (i === j ? flip(p) : p)).join('.')),
      parts.slice(0, 4).join('.'),
      `${sealed}.extra`,
      `v3.${sealed}`,
      `${parts[0]}.${parts[1]}.${parts[2]}.${parts[3]}AAAA.${parts[4]}`,
      // The header is authenticated: moving the record to another grant's context, or relabelling
      // it, fails even though every check before decryption passes.
      withHeader({ ctx: random() }),
      withHeader({ typ: 'refresh-grace+2' }),
      withHeader({ enc: 'A128GCM' }),
      withHeader({ zip: 'DEF' }),
      '',
      'not a record',
    ];
    for (const variant of variants) {
      expect((await open(root, grantId, secret, variant)).ok, variant).to.equal(false);
      await store.set(vaultKeyFor(grantId), variant);
      expect(await vault.get(grantId, secret), variant).to.equal(undefined);
    }
    expect((await open(root, grantId, secret, sealed)).ok).to.equal(true);
    expect(await open(root, random(), secret, sealed), 'bound to its grant').to.deep.include({ ok: false });
  });

  it('a record written in format v3 by the previous code still opens, and is rewritten as JWE on the next save', async function () {
    const legacySecret = GrantSecret.decode(LEGACY.grantSecret)!;
    expect(await open(LEGACY.root, LEGACY.grantId, legacySecret, LEGACY.vaultV3)).to.deep.equal({
      ok: true,
      entry: LEGACY.entry,
    });
    // Bound as before: another grant, another secret or another root key opens nothing.
    expect((await open(LEGACY.root, 'another-grant', legacySecret, LEGACY.vaultV3)).ok).to.equal(false);
    expect((await open(LEGACY.root, LEGACY.grantId, GrantSecret.generate(), LEGACY.vaultV3)).ok).to.equal(false);
    expect(await open(randomBytes(32), LEGACY.grantId, legacySecret, LEGACY.vaultV3)).to.deep.equal({
      ok: false,
      reason: 'other-key',
    });
    const tail = LEGACY.vaultV3.at(-3) === 'A' ? 'B' : 'A';
    const altered = `${LEGACY.vaultV3.slice(0, -3)}${tail}${LEGACY.vaultV3.slice(-2)}`;
    expect(await open(LEGACY.root, LEGACY.grantId, legacySecret, altered)).to.deep.equal({
      ok: false,
      reason: 'tampered',
    });

    // Through the store, as a deployment finds it.
    const legacyVault = createVault({ store, identity: new FakeIdentity(), keys: [LEGACY.root], log });
    await store.set(vaultKeyFor(LEGACY.grantId), LEGACY.vaultV3, 3600);
    const found = (await legacyVault.get(LEGACY.grantId, legacySecret))!;
    expect(found.credentials.accessToken).to.equal(LEGACY.entry.credentials.accessToken);
    const refreshed = await legacyVault.refresh(LEGACY.grantId, legacySecret, LEGACY.entry.credentials.accessToken);
    const rewritten = (await store.get(vaultKeyFor(LEGACY.grantId)))!;
    expect(decodeProtectedHeader(rewritten).typ).to.equal(RECORD_TYPE);
    expect((await legacyVault.get(LEGACY.grantId, legacySecret))?.credentials.accessToken).to.equal(
      refreshed.accessToken,
    );
  });

  it('a record of a previous format (v1, v2 keyed by the server key alone) is treated as absent', async function () {
    const grantId = random();
    await store.set(vaultKeyFor(grantId), 'v1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.AAAA');
    expect(await vault.get(grantId, secret)).to.equal(undefined);
    const v2 = `v2.${keyId(root)}.${'A'.repeat(16)}.${'A'.repeat(40)}.${'A'.repeat(22)}`;
    await store.set(vaultKeyFor(grantId), v2);
    expect(await vault.get(grantId, secret)).to.equal(undefined);
    expect(await open(root, grantId, secret, v2)).to.deep.equal({ ok: false, reason: 'malformed' });
  });

  it('a record opens only with its grant’s secret: the server key alone, or another grant’s secret, opens nothing', async function () {
    const grantId = random();
    await vault.put(grantId, secret, entryWith());
    const sealed = (await store.get(vaultKeyFor(grantId)))!;
    expect(await vault.get(grantId, GrantSecret.generate())).to.equal(undefined);
    expect(await open(root, grantId, GrantSecret.generate(), sealed)).to.deep.equal({ ok: false, reason: 'tampered' });
    expect((await open(root, grantId, secret, sealed)).ok).to.equal(true);
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
      keys.csrfKeys[0].toString('base64url'),
      ...keys.cookieKeys,
      keys.grantSecretCookieKeys[0].toString('base64url'),
    ];
    expect(others).to.not.include(keys.vaultKeys[0].toString('base64url'));
    expect(keys.vaultKeys[0].length).to.equal(32);
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
