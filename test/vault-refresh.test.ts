import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Store } from '../lib/store/index.ts';
import { log } from '../lib/telemetry/log.ts';
import {
  createVault,
  REFRESH_AHEAD_MAX_SECONDS,
  refreshAheadSeconds,
  refreshLockKeyFor,
  type Vault,
  type VaultDeps,
} from '../lib/vault/index.ts';
import {
  codeOf,
  deletePrefix,
  entryWith,
  epoch,
  FakeIdentity,
  nearExpiryEntry,
  random,
  redisStore,
  secret,
} from './helpers/vault.ts';

describe('vault: single-flight refresh across processes', function () {
  const prefix = `test-vault-${random(6)}:`;
  const root = randomBytes(32);
  let stores: Store[];
  let idp: FakeIdentity;

  /** Two vaults on two connections to one Redis: two proxy processes, as far as the vault can tell. */
  const processes = (options: Partial<VaultDeps> = {}): [Vault, Vault] => [
    createVault({ store: stores[0]!, identity: idp, keys: [root], log, ...options }),
    createVault({ store: stores[1]!, identity: idp, keys: [root], log, ...options }),
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
    it('refreshes a long-lived token with under a minute left before handing it out', async function () {
      const [a] = processes();
      const grantId = random();
      const entry = nearExpiryEntry(30);
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
      const entry = nearExpiryEntry(30);
      await a.put(grantId, secret, entry);
      idp.failWith = 'IDENTITY_TRANSIENT';
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect(idp.presented).to.have.length(1);
    });

    it('does not wait while another process refreshes early: the current token still works', async function () {
      const [a, b] = processes();
      const grantId = random();
      const entry = nearExpiryEntry(30);
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
      const entry = nearExpiryEntry(30);
      await a.put(grantId, secret, entry);
      idp.failWith = 'IDENTITY_GRANT_INVALID';
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect((await a.getFresh(grantId, secret))?.credentials.accessToken).to.equal(entry.credentials.accessToken);
      expect(await codeOf(a.refresh(grantId, secret, entry.credentials.accessToken))).to.equal(
        'IDENTITY_GRANT_INVALID',
      );
      expect(idp.presented, 'the upstream is asked once').to.have.length(1);
    });

    it('the margin is the smaller of a minute and a quarter of the token’s lifetime', function () {
      const now = epoch();
      const lived = (lifetime: number) => ({ ...entryWith({ expiresAt: now + lifetime }), obtainedAt: now });
      expect(refreshAheadSeconds(lived(3600))).to.equal(REFRESH_AHEAD_MAX_SECONDS);
      expect(REFRESH_AHEAD_MAX_SECONDS).to.equal(60);
      expect(refreshAheadSeconds(lived(240))).to.equal(60);
      expect(refreshAheadSeconds(lived(120))).to.equal(30);
      expect(refreshAheadSeconds(lived(15))).to.equal(3.75);
      // Records written before `obtainedAt` existed, and tokens without expires_in: one minute.
      expect(refreshAheadSeconds(entryWith({ expiresAt: now + 15 }))).to.equal(60);
      expect(refreshAheadSeconds({ ...entryWith(), obtainedAt: now })).to.equal(60);
      expect(refreshAheadSeconds(lived(3600), 30), 'the cap is configurable').to.equal(30);
    });

    it('a short-lived token is refreshed in the last quarter of its life, not on every call', async function () {
      const [a] = processes();
      const grantId = random();
      const obtainedAt = epoch() - 5;
      const entry = { ...entryWith({ expiresAt: obtainedAt + 15 }), obtainedAt };
      await a.put(grantId, secret, entry);
      for (let i = 0; i < 5; i++) await a.getFresh(grantId, secret);
      expect(idp.presented, '10 s of 15 left: not due').to.have.length(0);

      const late = {
        ...entry,
        obtainedAt: epoch() - 13,
        credentials: { ...entry.credentials, expiresAt: epoch() + 2 },
      };
      await a.put(grantId, secret, late);
      idp.expiresIn = 15;
      const fresh = (await a.getFresh(grantId, secret))!;
      expect(idp.presented, '2 s of 15 left: due').to.have.length(1);
      expect(fresh.credentials.accessToken).to.not.equal(entry.credentials.accessToken);
      // The replacement lives 15 s too, and is not due yet.
      for (let i = 0; i < 5; i++) await a.getFresh(grantId, secret);
      expect(idp.presented).to.have.length(1);
      expect((await a.get(grantId, secret))?.obtainedAt).to.be.within(epoch() - 2, epoch());
    });
  });
});
