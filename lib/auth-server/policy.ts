import type { Config } from '../config/types.ts';

/**
 * Authorization-server policy the rest of the proxy shares: token lifetimes and the scopes of the
 * MCP resource. Kept apart from the Provider factory so that the interactions, the proxy and the
 * metadata routes depend on the policy, not on oidc-provider's wiring.
 */

/**
 * Lifetimes of a login in progress, seconds. Every GET /auth stores an Interaction before anyone
 * looked at it, so most of them are never acted on (a client retrying, a tab closed, a flood
 * from one address up to MAX_REQUESTS): they should cost little and leave soon.
 */
export const LOGIN_TTL = {
  // A fresh interaction only has to last while a person reads the consent page: one screen naming
  // the client, where the login goes and what it allows. Reading it takes well under a minute;
  // three leave room for a slow reader or a detour to another tab, and cut what an abandoned
  // request holds in Redis to a third of the ten minutes a whole login needs. Who comes back later
  // sees "This sign-in has expired" and starts again from their app.
  ConsentPage: 3 * 60,
  // R20: from consent on (given on the page or remembered), the upstream round trip (IdP login,
  // callback, resume) has ten minutes; the interaction is extended to that, counted from then,
  // and the upstream state lives exactly as long.
  Upstream: 10 * 60,
} as const;

/** Lifetimes, seconds. The vault keeps upstream credentials exactly as long as the grant. */
export const TTL = {
  AccessToken: 60 * 60,
  AuthorizationCode: 60,
  IdToken: 60 * 60,
  // A fresh interaction; extended to LOGIN_TTL.Upstream when consent is given.
  Interaction: LOGIN_TTL.ConsentPage,
  RefreshToken: 30 * 24 * 60 * 60,
  Grant: 30 * 24 * 60 * 60,
  Session: 14 * 24 * 60 * 60,
} as const;

/**
 * oidc-provider's short-lived cookies (`cookies.short`): the interaction and resume cookies. The
 * consent step sets them again with the longer lifetime, so both places take them from here.
 */
export const INTERACTION_COOKIES = { signed: true, httpOnly: true, sameSite: 'lax' } as const;

/** Scopes of the MCP resource: what tokens for `/mcp` may carry and challenges ask for. */
export function resourceScopes(config: Config): string[] {
  // R1: offline_access is about refresh tokens at this AS, never a resource permission.
  return config.provider.scopes.filter((scope) => scope !== 'offline_access');
}
