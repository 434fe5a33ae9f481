import type { IdentityClient, UpstreamCredentials } from '../identity/index.ts';
import { IdentityError } from '../identity/index.ts';
import { isLocked, poll, withLock } from '../store/lock.ts';
import type { Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import type { GrantSecret } from './grant-secret.ts';
import type { KeyRing } from '../auth-server/keys.ts';
import { openUnder, sameToken, seal, shield, type VaultEntry } from './seal.ts';

export { GrantSecret, grantSecretOf, tokenValueWith } from './grant-secret.ts';
export { keyId, open, openUnder, RECORD_TYPE, seal, type OpenFailure, type Opened, type VaultEntry } from './seal.ts';

/**
 * Upstream credentials, one sealed record per grant (R22: a grant is one user × one client, so two
 * users of one client_id never read each other's upstream tokens). Every call takes the grant's
 * secret G, which only a live token of the grant carries (`grantSecretOf(token)`): the store and
 * the server key alone open nothing. Format, keys and the reasoning behind them:
 * `lib/vault/README.md`.
 */
export interface Vault {
  put(grantId: string, secret: GrantSecret, entry: VaultEntry): Promise<void>;
  /**
   * The record as stored; undefined when absent, sealed under a retired key, altered, of an older
   * format, or `secret` is not this grant's.
   */
  get(grantId: string, secret: GrantSecret): Promise<VaultEntry | undefined>;
  /**
   * `get`, but when the upstream access token expires within `refreshAheadSeconds(entry)` it is
   * refreshed first. Never throws an IdentityError: when that early refresh fails the current
   * record is returned, and the MCP server's answer to it decides (a 401 leads to `refresh`).
   */
  getFresh(grantId: string, secret: GrantSecret): Promise<VaultEntry | undefined>;
  /**
   * Called after the MCP server rejected `rejectedAccessToken`. Exactly one upstream refresh per
   * grant across every process sharing the store: callers in this process share one attempt,
   * other processes wait for the lock holder's result, and a caller whose token was already
   * replaced gets the replacement. Throws IdentityError: IDENTITY_GRANT_INVALID when the user must
   * log in again, IDENTITY_TRANSIENT when a later attempt may succeed.
   */
  refresh(grantId: string, secret: GrantSecret, rejectedAccessToken: string): Promise<UpstreamCredentials>;
  delete(grantId: string): Promise<void>;
}

export interface VaultDeps {
  store: Store;
  identity: IdentityClient;
  /**
   * Root keys (`KeyMaterial.vaultKeys`, HKDF of each key of OIDC_PROVIDER_JWKS): the first seals
   * every write, each opens the records it sealed.
   */
  keys: KeyRing;
  log: Logger;
  /** Upper bound of the early-refresh margin (`refreshAheadSeconds`). Default 60 s. */
  refreshAheadSeconds?: number;
  /**
   * Lifetime of the cross-process refresh lock. Default 15 s: longer than the identity client's
   * 10 s request timeout, so the lock cannot lapse while its holder's refresh is still in flight
   * and let a second process spend the same single-use refresh token.
   */
  lockTtlSeconds?: number;
  /** How long a process waits for another process's refresh before answering transient. Default: the lock's TTL. */
  handoffTimeoutMs?: number;
}

export function vaultKeyFor(grantId: string): string {
  return `vault:${grantId}`;
}

export function refreshLockKeyFor(grantId: string): string {
  return `lock:refresh:${grantId}`;
}

/** The early-refresh margin of upstream tokens living four minutes or more. */
export const REFRESH_AHEAD_MAX_SECONDS = 60;

/**
 * Upstream tokens with at most this many seconds left are refreshed before they are forwarded,
 * and a cache of vault entries in front of `getFresh` must not serve them this close to expiry:
 * the smaller of `maxSeconds` and a quarter of the token's lifetime. A fixed minute would refresh
 * a token living 15 s on every call; a quarter still leaves the refresh time to finish. Records
 * that do not say when their token was obtained get `maxSeconds`.
 */
export function refreshAheadSeconds(entry: VaultEntry, maxSeconds = REFRESH_AHEAD_MAX_SECONDS): number {
  const { expiresAt } = entry.credentials;
  if (expiresAt === undefined || entry.obtainedAt === undefined) return maxSeconds;
  return Math.min(maxSeconds, Math.max(0, (expiresAt - entry.obtainedAt) / 4));
}

const epoch = () => Math.floor(Date.now() / 1000);

export function createVault(deps: VaultDeps): Vault {
  const { store, identity, keys, log } = deps;
  const aheadMaxSeconds = deps.refreshAheadSeconds ?? REFRESH_AHEAD_MAX_SECONDS;
  const lockTtl = deps.lockTtlSeconds ?? 15;
  const handoffTimeoutMs = deps.handoffTimeoutMs ?? lockTtl * 1000;
  /**
   * Refreshes this process is waiting for, one per grant and secret: a caller presenting a grant
   * id with a secret that is not the grant's (a token record forged by someone who can write to
   * Redis) must not be handed the result of a legitimate caller's refresh. Every genuine token of
   * a grant carries the same secret, so they still share one attempt.
   */
  const inFlight = new Map<string, Promise<UpstreamCredentials>>();
  /** Early refreshes this process started; nobody waits on them but their own request. */
  const ahead = new Map<string, Promise<UpstreamCredentials | undefined>>();
  const flightKey = (grantId: string, secret: GrantSecret) => `${grantId}\0${secret.tag}`;

  const read = async (
    grantId: string,
    secret: GrantSecret,
  ): Promise<{ entry: VaultEntry; current: boolean } | undefined> => {
    const sealed = await store.get(vaultKeyFor(grantId));
    if (sealed === undefined) return undefined;
    const opened = await openUnder(keys, grantId, secret, sealed);
    if (opened.ok) return opened;
    // Treated as absent: the user logs in again. Which case it was only matters to operators.
    if (opened.reason === 'other-key')
      log.info('vault record sealed under a key no longer in OIDC_PROVIDER_JWKS', { grant_id: grantId });
    else log.warn('vault record does not open; treating it as absent', { grant_id: grantId, reason: opened.reason });
    return undefined;
  };

  const get = async (grantId: string, secret: GrantSecret): Promise<VaultEntry | undefined> =>
    (await read(grantId, secret))?.entry;

  const save = async (grantId: string, secret: GrantSecret, entry: VaultEntry): Promise<void> => {
    const ttl = Math.max(1, entry.expiresAt - epoch());
    await store.set(vaultKeyFor(grantId), await seal(keys[0], grantId, secret, entry), ttl);
  };

  /**
   * A record sealed under an older root (a signing key was added in front since) is sealed again
   * under the current one the first time its grant is used, so that retiring the old key later
   * logs out only grants unused since the addition. Under the refresh lock, whose holders are the
   * only other writers of an existing record: a refresh finishing meanwhile is never overwritten
   * with the credentials it replaced. When the lock is taken, its holder writes under the current
   * root anyway. Best effort: the record still opens as it is.
   */
  const reseal = async (grantId: string, secret: GrantSecret): Promise<void> => {
    try {
      await withLock(store, refreshLockKeyFor(grantId), lockTtl, async () => {
        const record = await read(grantId, secret);
        if (record && !record.current) await save(grantId, secret, record.entry);
      });
    } catch (error) {
      log.warn('could not seal a vault record under the current key; it stays under its old one', {
        grant_id: grantId,
        error: (error as Error).message,
      });
    }
  };

  /** Fresh credentials from a login: when they were obtained sizes their early-refresh margin. */
  const put = (grantId: string, secret: GrantSecret, entry: VaultEntry): Promise<void> =>
    save(grantId, secret, { obtainedAt: epoch(), ...entry });

  /** The record, if it can still be refreshed at all. */
  const refreshable = async (grantId: string, secret: GrantSecret): Promise<VaultEntry> => {
    const entry = await get(grantId, secret);
    if (!entry) throw new IdentityError('IDENTITY_GRANT_INVALID', 'no upstream credentials for this grant');
    if (entry.upstreamRefusedAt !== undefined) {
      throw new IdentityError('IDENTITY_GRANT_INVALID', 'the identity provider refused to refresh this grant');
    }
    return entry;
  };

  /** Only the lock holder gets here. */
  const refreshUpstream = async (
    grantId: string,
    secret: GrantSecret,
    entry: VaultEntry,
  ): Promise<UpstreamCredentials> => {
    const refreshToken = entry.credentials.refreshToken;
    if (!refreshToken)
      throw new IdentityError('IDENTITY_GRANT_INVALID', 'the upstream token expired and no refresh token was issued');
    let credentials: UpstreamCredentials;
    try {
      credentials = await identity.refresh(refreshToken);
    } catch (error) {
      if (error instanceof IdentityError && error.code === 'IDENTITY_GRANT_INVALID') {
        // Written before the lock is released, so processes waiting for this refresh see a
        // terminal answer rather than a vanished lock (which they would report as transient).
        await save(grantId, secret, { ...entry, upstreamRefusedAt: epoch() }).catch(() => undefined);
      }
      throw error;
    }
    // Every process serving this grant's tokens holds the same secret, so whichever one holds the
    // lock can write the record the others will read.
    await save(grantId, secret, { ...entry, credentials, obtainedAt: epoch() });
    log.info('upstream token refreshed', { grant_id: grantId });
    return shield(credentials);
  };

  /**
   * Waits for another process's refresh: polls the record until its token changes, the record
   * turns terminal, the lock disappears without a new token, or time runs out.
   */
  const handoff = async (grantId: string, secret: GrantSecret, rejected: string): Promise<UpstreamCredentials> => {
    const result = await poll(
      async () => {
        let entry = await refreshable(grantId, secret);
        if (!sameToken(entry.credentials.accessToken, rejected)) return entry.credentials;
        if (await isLocked(store, refreshLockKeyFor(grantId))) return undefined;
        // Released (or lapsed) between our two reads: one more look, as the holder writes the
        // record before it releases the lock.
        entry = await refreshable(grantId, secret);
        if (!sameToken(entry.credentials.accessToken, rejected)) return entry.credentials;
        throw new IdentityError('IDENTITY_TRANSIENT', 'a concurrent upstream refresh did not succeed');
      },
      { timeoutMs: handoffTimeoutMs },
    );
    if (!result) throw new IdentityError('IDENTITY_TRANSIENT', 'timed out waiting for a concurrent upstream refresh');
    return result;
  };

  /**
   * One refresh across processes. `wait: false` (refresh ahead of expiry) gives up at once when
   * another process holds the lock: the current token still works meanwhile. Returns undefined
   * only then.
   */
  async function refreshShared(
    grantId: string,
    secret: GrantSecret,
    rejected: string,
    wait: true,
  ): Promise<UpstreamCredentials>;
  async function refreshShared(
    grantId: string,
    secret: GrantSecret,
    rejected: string,
    wait: false,
  ): Promise<UpstreamCredentials | undefined>;
  async function refreshShared(
    grantId: string,
    secret: GrantSecret,
    rejected: string,
    wait: boolean,
  ): Promise<UpstreamCredentials | undefined> {
    let entry = await refreshable(grantId, secret);
    if (!sameToken(entry.credentials.accessToken, rejected)) return entry.credentials;
    const locked = await withLock(store, refreshLockKeyFor(grantId), lockTtl, async () => {
      // Another process may have refreshed between our read and our lock.
      entry = await refreshable(grantId, secret);
      if (!sameToken(entry.credentials.accessToken, rejected)) return entry.credentials;
      return refreshUpstream(grantId, secret, entry);
    });
    if (locked.acquired) return locked.value;
    return wait ? handoff(grantId, secret, rejected) : undefined;
  }

  const refresh = (grantId: string, secret: GrantSecret, rejectedAccessToken: string): Promise<UpstreamCredentials> => {
    const flight = flightKey(grantId, secret);
    let pending = inFlight.get(flight);
    if (!pending) {
      pending = refreshShared(grantId, secret, rejectedAccessToken, true).finally(() => inFlight.delete(flight));
      inFlight.set(flight, pending);
    }
    return pending;
  };

  const getFresh = async (grantId: string, secret: GrantSecret): Promise<VaultEntry | undefined> => {
    const record = await read(grantId, secret);
    if (record && !record.current) await reseal(grantId, secret);
    const entry = record?.entry;
    const { accessToken, refreshToken, expiresAt } = entry?.credentials ?? {};
    if (!entry || !accessToken || !refreshToken || expiresAt === undefined || entry.upstreamRefusedAt !== undefined)
      return entry;
    const left = expiresAt - epoch();
    if (left > refreshAheadSeconds(entry, aheadMaxSeconds)) return entry;
    try {
      if (left <= 0) {
        // Already expired: forwarding it would only earn a 401 (and a request body too large to
        // replay could not be retried after one), so wait for the refresh like a 401 would.
        return { ...entry, credentials: await refresh(grantId, secret, accessToken) };
      }
      // Still valid: at most one early attempt per process, and none while another process
      // holds the lock. Everyone else forwards the current token meanwhile.
      const flight = flightKey(grantId, secret);
      if (inFlight.has(flight) || ahead.has(flight)) return entry;
      const attempt = refreshShared(grantId, secret, accessToken, false).finally(() => ahead.delete(flight));
      ahead.set(flight, attempt);
      const credentials = await attempt;
      return credentials ? { ...entry, credentials } : entry;
    } catch (error) {
      // An early refresh is an optimisation: the current token may still be accepted, and if the
      // MCP server refuses it, the 401 path refreshes and applies the failure policy.
      const code = error instanceof IdentityError ? error.code : 'IDENTITY_TRANSIENT';
      log.warn('upstream refresh ahead of expiry failed; forwarding the current token', {
        grant_id: grantId,
        reason: code,
      });
      return entry;
    }
  };

  return {
    put,
    get,
    getFresh,
    refresh,
    async delete(grantId) {
      await store.del(vaultKeyFor(grantId));
    },
  };
}
