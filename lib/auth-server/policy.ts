import type { Config } from '../config/types.ts';

/**
 * Authorization-server policy the rest of the proxy shares: token lifetimes and the scopes of the
 * MCP resource. Kept apart from the Provider factory so that the interactions, the proxy and the
 * metadata routes depend on the policy, not on oidc-provider's wiring.
 */

/** Lifetimes, seconds. The vault keeps upstream credentials exactly as long as the grant. */
export const TTL = {
  AccessToken: 60 * 60,
  AuthorizationCode: 60,
  IdToken: 60 * 60,
  // R20: the upstream round trip (consent + IdP login) must finish within ten minutes.
  Interaction: 10 * 60,
  RefreshToken: 30 * 24 * 60 * 60,
  Grant: 30 * 24 * 60 * 60,
  Session: 14 * 24 * 60 * 60,
} as const;

/** Scopes of the MCP resource: what tokens for `/mcp` may carry and challenges ask for. */
export function resourceScopes(config: Config): string[] {
  // R1: offline_access is about refresh tokens at this AS, never a resource permission.
  return config.provider.scopes.filter((scope) => scope !== 'offline_access');
}
