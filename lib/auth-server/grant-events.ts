import type Provider from 'oidc-provider';
import type { Logger } from '../telemetry/log.ts';
import type { Vault } from '../vault/index.ts';

/**
 * A grant's upstream credentials die with it (R23: keep no secret longer than it is needed).
 * oidc-provider emits `grant.revoked` whenever it destroys a grant: revocation of one of its
 * tokens (RFC 7009, `revokeGrantPolicy`), reuse of a rotated refresh token, logout. Grants that
 * simply expire need nothing: the vault record carries the grant's own TTL. The proxy's own
 * revocation (upstream grant gone) deletes the vault record itself.
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
