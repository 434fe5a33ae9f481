// Secrets derived from OIDC_PROVIDER_JWKS, per key: the first key's make everything new, every
// key's open what was made earlier, and a one-key set derives what the code before per-key
// derivation derived. End to end (real proxy restarts, browsers, MCP clients):
// test/keys-rotation-e2e.test.ts.
import { expect } from 'chai';
import { decodeProtectedHeader, type JWK } from 'jose';
import { deriveKeyMaterial, type KeyMaterial } from '../lib/auth-server/keys.ts';
import { grantSecretCookie, openGrantSecretCookie } from '../lib/auth-server/grant-secret-cookie.ts';
import { addSigningKey, retireKey } from '../lib/cli/jwks.ts';
import type { Store } from '../lib/store/index.ts';
import { captureLogs, log } from '../lib/telemetry/log.ts';
import { createVault, GrantSecret, keyId, openUnder, seal, vaultKeyFor } from '../lib/vault/index.ts';
import {
  codeOf,
  deletePrefix,
  dumpPrefix,
  entryWith,
  FakeIdentity,
  nearExpiryEntry,
  random,
  redisStore,
} from './helpers/vault.ts';

/**
 * Two P-256 keys made for this test only, and what the code before per-key derivation (commit
 * 1487db4, `lib/auth-server/keys.ts`) derived from the set of `A` alone and from the set `[B, A]`.
 */
const FIXTURE = {
  a: {
    kty: 'EC',
    crv: 'P-256',
    x: '64trITsq1qfmBIIHWzCIjxX-wrGBdOtJ3uIB6GAsN44',
    y: 'oERw6fKeQwOi2ZC2M7Z0-x86zwiX8b1FyJNaQg9Eqoc',
    d: 'XgB7Fj4l1QkQ3jsk53HiRxwJbrt3_RZjBN6n3B0sNdM',
    alg: 'ES256',
    use: 'sig',
    kid: '2026-01-05-fixture-a',
  } as JWK,
  b: {
    kty: 'EC',
    crv: 'P-256',
    x: 'Ly_o_4fiMkruzEMJ_gkrq7SMeZckcoDveMoHDbBjyGI',
    y: '1nLZ5_vjKY6kuN851zf-VqSevnBkAFWNMX-7ncvOmbw',
    d: 'nZbPDpgku8wwDCd7eeFEfE8JpzZtC-ZTVdRooMziVhU',
    alg: 'ES256',
    use: 'sig',
    kid: '2026-12-07-fixture-b',
  } as JWK,
  previousOfA: {
    cookieKey: 'tHeo-EATzVEQZbzGySJy6Ks_XucNwIzjLTpkAnEADXo',
    csrfKey: '-g0wwwa5uVPueBYmnw1qyq6vUMnkqnQdrOXoxbueSIw',
    vaultKey: '3P2QQIkdoq421kLp0fExrDGOuJ3Jq6_-mFE2-JXtgCg',
    grantSecretCookieKey: 'v6PoF60360FR5Q_PdkQqrSVpYnkcKvLfdQSauQbc6qk',
  },
  previousOfBA: {
    cookieKey: '7mRSgKh0_VZZ3p3Ag4JXzMQNcIwQTRjgypImjQrQRaw',
    csrfKey: 'PDwq80V1L8INyByBS9KTkVtdI1uZQ-uANgxT6I6w3r4',
    vaultKey: 'ylBvERtCdhaqnhkg0CW6Kgf5Zdl7nSyyVZU3ltD1qKY',
    grantSecretCookieKey: '84NcsS2CvtvTABlUetCXl1WAeuXDXwBQqJVYBly72_s',
  },
};

/** Every secret of one purpose, base64url, in ring order. */
function rings(keys: KeyMaterial) {
  const encode = (ring: readonly Buffer[]) => ring.map((key) => key.toString('base64url'));
  return {
    cookieKey: keys.cookieKeys,
    csrfKey: encode(keys.csrfKeys),
    vaultKey: encode(keys.vaultKeys),
    grantSecretCookieKey: encode(keys.grantSecretCookieKeys),
  };
}

describe('keys: secrets derived per signing key', function () {
  const onlyA = deriveKeyMaterial({ keys: [FIXTURE.a] });
  const added = deriveKeyMaterial({ keys: [FIXTURE.b, FIXTURE.a] });
  const retired = deriveKeyMaterial({ keys: [FIXTURE.b] });

  it('a one-key set derives exactly what the previous code derived from it, and nothing else', function () {
    for (const [purpose, ring] of Object.entries(rings(onlyA))) {
      expect(ring, purpose).to.deep.equal([FIXTURE.previousOfA[purpose as keyof typeof FIXTURE.previousOfA]]);
    }
  });

  it('a key added in front makes the new secrets; the old key’s own still open what it made', function () {
    const ofA = rings(onlyA);
    const ofB = rings(retired);
    for (const [purpose, ring] of Object.entries(rings(added))) {
      const name = purpose as keyof typeof ofA;
      expect(ring[0], `${purpose}: the new key creates`).to.equal(ofB[name][0]);
      expect(ring[1], `${purpose}: the old key still verifies`).to.equal(ofA[name][0]);
    }
  });

  it('a set of several keys also accepts what the previous code made from the whole set, never making it', function () {
    for (const [purpose, ring] of Object.entries(rings(added))) {
      const previous = FIXTURE.previousOfBA[purpose as keyof typeof FIXTURE.previousOfBA];
      expect(ring, purpose).to.have.length(3);
      expect(ring.indexOf(previous), purpose).to.equal(2);
    }
  });

  it('a retired key’s secrets are no longer accepted anywhere', function () {
    const ofA = Object.values(rings(onlyA)).flat();
    for (const [purpose, ring] of Object.entries(rings(retired))) {
      expect(ring, purpose).to.have.length(1);
      expect(ofA, purpose).to.not.include(ring[0]);
    }
  });

  it('secrets of different purposes, and of different keys, all differ', function () {
    const all = Object.values(rings(added)).flat();
    expect(new Set(all).size).to.equal(all.length);
  });

  it('follows the set the jwks command prints: --add puts the new key first, --retire drops the old', async function () {
    const withNew = await addSigningKey({ keys: [FIXTURE.a] });
    const keys = deriveKeyMaterial(withNew);
    expect(keys.vaultKeys[1].equals(onlyA.vaultKeys[0]), 'the old key’s root is kept').to.equal(true);
    expect(keys.vaultKeys[0].equals(onlyA.vaultKeys[0]), 'the new key seals').to.equal(false);
    const withoutOld = deriveKeyMaterial(retireKey(withNew, FIXTURE.a.kid!));
    expect(withoutOld.vaultKeys).to.have.length(1);
    expect(withoutOld.vaultKeys[0].equals(keys.vaultKeys[0])).to.equal(true);
  });

  it('a set without private material is refused', function () {
    const { d: _d, ...publicOnly } = FIXTURE.a;
    expect(() => deriveKeyMaterial({ keys: [publicOnly] })).to.throw('no private key material');
  });
});

describe('keys: the vault across a rotation', function () {
  const prefix = `test-keys-${random(6)}:`;
  const [rootA] = deriveKeyMaterial({ keys: [FIXTURE.a] }).vaultKeys;
  const added = deriveKeyMaterial({ keys: [FIXTURE.b, FIXTURE.a] }).vaultKeys;
  const retired = deriveKeyMaterial({ keys: [FIXTURE.b] }).vaultKeys;
  let store: Store;
  const vaultWith = (keys: typeof added, identity = new FakeIdentity()) => createVault({ store, identity, keys, log });
  const kidOf = async (grantId: string) => {
    const sealed = (await dumpPrefix(prefix)).get(`${prefix}${vaultKeyFor(grantId)}`);
    return sealed === undefined ? undefined : decodeProtectedHeader(sealed).kid;
  };

  before(async function () {
    store = redisStore(prefix);
    await store.check();
  });
  after(async function () {
    await store?.close();
    await deletePrefix(prefix);
  });

  it('a record sealed under the old root opens with the ring that adds a key in front', async function () {
    const grantId = random();
    const secret = GrantSecret.generate();
    const entry = entryWith();
    const sealed = await seal(rootA, grantId, secret, entry);
    expect(await openUnder(added, grantId, secret, sealed)).to.deep.include({ ok: true, current: false });
    expect(await openUnder(retired, grantId, secret, sealed)).to.deep.equal({ ok: false, reason: 'other-key' });
    expect(await openUnder(added, grantId, GrantSecret.generate(), sealed)).to.deep.equal({
      ok: false,
      reason: 'tampered',
    });
  });

  it('the first use after a key was added seals the record again under the new root', async function () {
    const grantId = random();
    const secret = GrantSecret.generate();
    const entry = entryWith();
    await vaultWith([rootA]).put(grantId, secret, entry);
    expect(await kidOf(grantId)).to.equal(keyId(rootA));

    const rotated = vaultWith(added);
    expect((await rotated.get(grantId, secret))?.credentials.accessToken, 'get reads, never writes').to.equal(
      entry.credentials.accessToken,
    );
    expect(await kidOf(grantId)).to.equal(keyId(rootA));
    expect((await rotated.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
    expect(await kidOf(grantId), 'sealed again under the new key').to.equal(keyId(added[0]));

    const afterRetirement = vaultWith(retired);
    expect((await afterRetirement.getFresh(grantId, secret))?.credentials.accessToken).to.equal(
      entry.credentials.accessToken,
    );
  });

  it('a record the previous code sealed under a set of two keys opens, and moves to the first key’s root', async function () {
    const grantId = random();
    const secret = GrantSecret.generate();
    const entry = entryWith();
    const previousRoot = Buffer.from(FIXTURE.previousOfBA.vaultKey, 'base64url');
    await vaultWith([previousRoot]).put(grantId, secret, entry);
    const upgraded = vaultWith(added);
    expect((await upgraded.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
    expect(await kidOf(grantId)).to.equal(keyId(added[0]));
  });

  it('an upstream refresh writes under the new root, and leaves the refresh token chain intact', async function () {
    const grantId = random();
    const secret = GrantSecret.generate();
    const entry = nearExpiryEntry(-1);
    await vaultWith([rootA]).put(grantId, secret, entry);
    const identity = new FakeIdentity();
    const fresh = await vaultWith(added, identity).getFresh(grantId, secret);
    expect(identity.presented, 'one upstream refresh, with the old refresh token').to.deep.equal([
      entry.credentials.refreshToken,
    ]);
    expect(fresh?.credentials.accessToken).to.not.equal(entry.credentials.accessToken);
    expect(await kidOf(grantId)).to.equal(keyId(added[0]));
    const stored = await vaultWith(retired).get(grantId, secret);
    expect(stored?.credentials.accessToken, 'the refreshed credentials, not the ones they replaced').to.equal(
      fresh?.credentials.accessToken,
    );
  });

  it('a record only a retired key opens is absent: the refresh fails as "log in again", with an info line', async function () {
    const grantId = random();
    const secret = GrantSecret.generate();
    const entry = entryWith();
    await vaultWith([rootA]).put(grantId, secret, entry);
    const lines: string[] = [];
    const restore = captureLogs((line) => lines.push(line));
    try {
      const vault = vaultWith(retired);
      expect(await vault.getFresh(grantId, secret)).to.equal(undefined);
      expect(await codeOf(vault.refresh(grantId, secret, entry.credentials.accessToken))).to.equal(
        'IDENTITY_GRANT_INVALID',
      );
    } finally {
      restore();
    }
    const output = lines.join('\n');
    expect(output).to.contain('vault record sealed under a key no longer in OIDC_PROVIDER_JWKS');
    expect(output).to.not.contain(entry.credentials.accessToken);
    expect(await kidOf(grantId), 'left as it was').to.equal(keyId(rootA));
  });
});

describe('keys: the resume cookie across a rotation', function () {
  const [keyA] = deriveKeyMaterial({ keys: [FIXTURE.a] }).grantSecretCookieKeys;
  const added = deriveKeyMaterial({ keys: [FIXTURE.b, FIXTURE.a] }).grantSecretCookieKeys;
  const retired = deriveKeyMaterial({ keys: [FIXTURE.b] }).grantSecretCookieKeys;

  it('a cookie sealed before a key was added opens; after the old key is retired it does not', async function () {
    const secret = GrantSecret.generate();
    const line = await grantSecretCookie(keyA, {
      path: '/auth/uid-1',
      uid: 'uid-1',
      grantId: 'grant-1',
      secret,
      maxAgeSeconds: 600,
      secure: false,
    });
    const value = line.slice(line.indexOf('=') + 1, line.indexOf(';'));
    const opened = await openGrantSecretCookie(added, 'uid-1', value);
    expect(opened?.grantId).to.equal('grant-1');
    expect(opened?.secret.encode()).to.equal(secret.encode());
    expect(await openGrantSecretCookie(added, 'uid-2', value), 'still bound to its interaction').to.equal(undefined);
    expect(await openGrantSecretCookie(retired, 'uid-1', value)).to.equal(undefined);
  });
});
