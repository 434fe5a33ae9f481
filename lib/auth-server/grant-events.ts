import type Provider from 'oidc-provider';
import type { Store, Subscription } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import type { Vault } from '../vault/index.ts';

/**
 * Everything that happens when a grant ends before it expires: which oidc-provider events say so,
 * how every process's `/mcp` cache hears of it, what goes with it (upstream credentials), and the
 * one place where we end a grant ourselves. Grants that simply expire need none of this: tokens
 * and the vault record carry the grant's own lifetime.
 */

/**
 * Store channel on which every process announces a grant whose tokens must no longer be trusted
 * from its in-process cache. The message is the grant id (an identifier, not a credential).
 */
export const GRANT_REVOKED_CHANNEL = 'proxy:grant-revoked';

/**
 * Calls `ended` with the grant id on every way oidc-provider ends a token's validity before its
 * expiry. `grant.revoked` alone is not enough: revoking an access token (RFC 7009) revokes its
 * grant's other access tokens too, yet emits it only when `revokeGrantPolicy` says the grant goes
 * as well.
 */
function onTokensEnded(provider: Provider, ended: (grantId: string | undefined) => void): void {
  provider.on('grant.revoked', (_ctx, grantId: string) => ended(grantId));
  provider.on('grant.destroyed', (grant: { jti?: string }) => ended(grant.jti));
  provider.on('access_token.destroyed', (token: { grantId?: string }) => ended(token.grantId));
  provider.on('refresh_token.destroyed', (token: { grantId?: string }) => ended(token.grantId));
}

/**
 * A grant's upstream credentials die with it (R23: keep no secret longer than it is needed).
 * oidc-provider emits `grant.revoked` whenever it destroys a grant: revocation of one of its
 * tokens (RFC 7009, `revokeGrantPolicy`), reuse of a rotated refresh token, logout. Our own
 * revocation (`GrantRevocation.revoke`) deletes the vault record itself.
 */
export function deleteVaultOnGrantRevoked(provider: Provider, vault: Vault, log: Logger): void {
  provider.on('grant.revoked', (_ctx, grantId) => {
    vault.delete(grantId).then(
      () => log.info('grant revoked; upstream credentials deleted', { grant_id: grantId }),
      // Not fatal: the record expires with the grant's TTL, and without the grant no token
      // reaches it. Logged so an operator sees a store that refuses deletes.
      (error: Error) =>
        log.warn('grant revoked; could not delete its upstream credentials', {
          grant_id: grantId,
          error: error.message,
        }),
    );
  });
}

export interface GrantRevocation {
  /**
   * The subscription to other processes' announcements, opened on first use (creating the app
   * does no I/O). A cache fed by it may serve only while it is active.
   */
  subscription(): Subscription;
  /**
   * Ends a grant ourselves (the upstream grant is gone): its tokens, codes and upstream
   * credentials, then tells every process. Rejects when the store could not do it all.
   */
  revoke(grantId: string): Promise<void>;
}

export interface GrantRevocationDeps {
  provider: Provider;
  store: Store;
  vault: Vault;
  log: Logger;
}

/** `forget` is called, in every process, with each grant whose tokens must no longer be trusted. */
export function grantRevocation(
  { provider, store, vault, log }: GrantRevocationDeps,
  forget: (grantId: string) => void,
): GrantRevocation {
  let subscription: Subscription | undefined;
  /** Resolves once the store has taken the message (never rejects). */
  const announce = async (grantId: string | undefined): Promise<void> => {
    if (!grantId) return;
    forget(grantId);
    await store.publish(GRANT_REVOKED_CHANNEL, grantId).catch((error: Error) => {
      // Other processes keep trusting this grant's tokens for at most their cache lifetime.
      log.warn('could not announce a revoked grant to other processes', { grant_id: grantId, error: error.message });
    });
  };
  onTokensEnded(provider, (grantId) => void announce(grantId));

  return {
    subscription: () => (subscription ??= store.subscribe(GRANT_REVOKED_CHANNEL, forget)),
    async revoke(grantId) {
      try {
        const grant = await provider.Grant.find(grantId);
        await Promise.all([
          grant?.destroy(),
          provider.AccessToken.revokeByGrantId(grantId),
          provider.RefreshToken.revokeByGrantId(grantId),
          provider.AuthorizationCode.revokeByGrantId(grantId),
          vault.delete(grantId),
        ]);
      } finally {
        // After the deletes, so no process can read a token of this grant as valid once it heard;
        // and awaited, so that by the time the client hears of it, the other processes have been
        // sent the message (Redis queues it for every subscriber before it replies to PUBLISH).
        await announce(grantId);
      }
    },
  };
}
