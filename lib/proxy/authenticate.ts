import type Provider from 'oidc-provider';
import type { GrantSecret } from '../vault/index.ts';

/** Who is calling `/mcp`, as far as a valid access token of ours says. */
export interface Caller {
  grantId: string;
  accountId: string;
  clientId: string;
  scope: string;
  /** Epoch milliseconds at which the token expires: no cache may trust it longer. */
  tokenExpiresAt: number;
}

/** A validated access token of ours, as the hot-path cache keeps it. */
export interface KnownToken extends Caller {
  /** From the token itself: opens its grant's vault record (its `tag` computed once). */
  secret: GrantSecret;
  /** Whether its scopes cover what `/mcp` requires. */
  sufficient: boolean;
  /** The identity headers for the MCP server, as a raw name/value list (encoded once). */
  identityHeaders: string[];
}

/** RFC 6750 §2.1 only: the header. Query tokens (§2.3) leak into logs and Referer (R3). */
export function bearerFrom(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(authorization);
  return match?.[1];
}

function audienceIncludes(aud: unknown, resourceUrl: string): boolean {
  return Array.isArray(aud) ? aud.includes(resourceUrl) : aud === resourceUrl;
}

/**
 * Validates one of *our* access tokens on every request (R3): it must exist in the store, be
 * unexpired, and have been issued for this resource. An upstream token sent here is simply not
 * found (R4). Returns undefined for any token that is not good enough; never throws for bad input.
 * Throws when the store cannot answer: that is no reason to send a client with a valid token
 * through login again (the caller answers 503).
 */
export async function authenticate(
  provider: Provider,
  resourceUrl: string,
  token: string,
): Promise<Caller | undefined> {
  const accessToken = await provider.AccessToken.find(token);
  if (!accessToken || accessToken.isExpired) return undefined;
  if (!audienceIncludes(accessToken.aud, resourceUrl)) return undefined;
  if (!accessToken.grantId || !accessToken.accountId || typeof accessToken.exp !== 'number') return undefined;
  return {
    grantId: accessToken.grantId,
    accountId: accessToken.accountId,
    clientId: accessToken.clientId ?? '',
    scope: accessToken.scope ?? '',
    tokenExpiresAt: accessToken.exp * 1000,
  };
}
