import type { Subscription } from '../store/types.ts';
import { refreshAheadSeconds, type VaultEntry } from '../vault/index.ts';
import type { Caller } from './authenticate.ts';

/** How long a validated token is trusted without asking the store again (also capped by its expiry). */
export const CALLER_TTL_MS = 30_000;
/** How long a grant's upstream credentials are reused without reading the vault again. */
export const VAULT_TTL_MS = 30_000;
/** Grants revoked this recently are not cached again (see `dropGrant`). */
const TOMBSTONE_MS = 10_000;
const MAX_CALLERS = 10_000;
const MAX_GRANTS = 10_000;

interface Cached<T> {
  value: T;
  grantId: string;
  expiresAt: number;
  /** Vault entries: the `GrantSecret.tag` of the secret that opened the record. */
  secretTag?: string;
}

/**
 * The hot path's in-process cache: tokens already validated (by SHA-256 of the token, so no token
 * sits in memory longer than its request) and upstream credentials per grant. It is only as good
 * as its invalidation, so it serves nothing unless revocation messages are being received right
 * now (`Subscription.active`), forgets everything whenever some may have been missed (a new
 * `generation`), and refuses to store a value read while an invalidation arrived (`stamp`).
 */
export class HotPathCache<C extends Caller = Caller> {
  private readonly callers = new Map<string, Cached<C>>();
  private readonly vault = new Map<string, Cached<VaultEntry>>();
  private readonly tombstones = new Map<string, number>();
  private generation: number | undefined;
  /** Bumped by every invalidation; a read that began under another value may be stale. */
  private sequence = 0;

  constructor(private readonly revocations: () => Subscription | undefined) {}

  /** Take before reading the store; hand back to `set…`. Undefined: do not cache this read. */
  stamp(): number | undefined {
    return this.usable() ? this.sequence : undefined;
  }

  caller(tokenHash: string): C | undefined {
    return this.usable() ? this.take(this.callers, tokenHash) : undefined;
  }

  setCaller(tokenHash: string, caller: C, tokenExpiresAt: number, stamp: number | undefined): void {
    if (!this.storable(caller.grantId, stamp)) return;
    const expiresAt = Math.min(Date.now() + CALLER_TTL_MS, tokenExpiresAt);
    this.put(this.callers, tokenHash, { value: caller, grantId: caller.grantId, expiresAt }, MAX_CALLERS);
  }

  /**
   * Served only to a caller presenting the secret that opened the record. Every genuine token of
   * a grant carries the same one; a token record for this grant written into Redis by someone
   * else carries another, and must get no further than the vault itself would let it.
   */
  vaultEntry(grantId: string, secretTag: string): VaultEntry | undefined {
    if (!this.usable() || this.vault.get(grantId)?.secretTag !== secretTag) return undefined;
    return this.take(this.vault, grantId);
  }

  setVaultEntry(grantId: string, secretTag: string, entry: VaultEntry, stamp: number | undefined): void {
    if (!this.storable(grantId, stamp)) return;
    let expiresAt = Date.now() + VAULT_TTL_MS;
    const upstreamExpiry = entry.credentials.expiresAt;
    // Upstream tokens inside the vault's refresh-ahead margin are not cached: `vault.getFresh` must
    // see them to refresh ahead of expiry. The vault's own margin, so the two cannot drift apart.
    if (upstreamExpiry !== undefined) {
      expiresAt = Math.min(expiresAt, (upstreamExpiry - refreshAheadSeconds(entry)) * 1000);
    }
    this.put(this.vault, grantId, { value: entry, grantId, expiresAt, secretTag }, MAX_GRANTS);
  }

  /**
   * A grant (or a token of it) was revoked. Besides forgetting it, the grant is tombstoned for a
   * while: oidc-provider announces an access token's revocation before it revokes the grant's
   * other tokens, so a read of a sibling token may still find it valid for a few milliseconds
   * after the message — that read must not be cached.
   */
  dropGrant(grantId: string): void {
    this.sequence += 1;
    this.vault.delete(grantId);
    for (const [key, cached] of this.callers) if (cached.grantId === grantId) this.callers.delete(key);
    const now = Date.now();
    if (this.tombstones.size >= MAX_GRANTS) {
      for (const [id, until] of this.tombstones) if (until <= now) this.tombstones.delete(id);
    }
    this.tombstones.set(grantId, now + TOMBSTONE_MS);
  }

  clear(): void {
    this.sequence += 1;
    this.callers.clear();
    this.vault.clear();
  }

  private usable(): boolean {
    const subscription = this.revocations();
    if (!subscription?.active) {
      if (this.callers.size || this.vault.size) this.clear();
      return false;
    }
    if (subscription.generation !== this.generation) {
      // Messages may have been lost while the subscription was down.
      this.clear();
      this.generation = subscription.generation;
    }
    return true;
  }

  private storable(grantId: string, stamp: number | undefined): boolean {
    if (stamp === undefined || !this.usable() || stamp !== this.sequence) return false;
    const until = this.tombstones.get(grantId);
    if (until === undefined) return true;
    if (until > Date.now()) return false;
    this.tombstones.delete(grantId);
    return true;
  }

  private take<T>(map: Map<string, Cached<T>>, key: string): T | undefined {
    const cached = map.get(key);
    if (!cached) return undefined;
    map.delete(key);
    if (cached.expiresAt <= Date.now()) return undefined;
    map.set(key, cached); // most recently used last: eviction takes the first
    return cached.value;
  }

  private put<T>(map: Map<string, Cached<T>>, key: string, cached: Cached<T>, max: number): void {
    if (cached.expiresAt <= Date.now()) return;
    map.delete(key);
    map.set(key, cached);
    if (map.size > max) map.delete(map.keys().next().value!);
  }
}
