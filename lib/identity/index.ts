import { readFile } from 'node:fs/promises';
import * as oidc from 'openid-client';
import type { IdentityConfig } from '../config/types.ts';
import { isLoopbackHost } from '../http/loopback.ts';

/** Upstream credentials of one grant: what the MCP server receives as its bearer token. */
export interface UpstreamCredentials {
  accessToken: string;
  refreshToken?: string;
  /** Epoch seconds, when the upstream said `expires_in`. */
  expiresAt?: number;
  scope?: string;
  tokenType?: string;
}

export interface UpstreamLogin {
  accountId: string;
  credentials: UpstreamCredentials;
}

/** A stable `code` to branch on (openid-client's lesson): never parse messages. */
export type IdentityErrorCode =
  | 'IDENTITY_UNREACHABLE' // discovery or metadata failed at boot
  | 'IDENTITY_GRANT_INVALID' // upstream said invalid_grant: the user must log in again
  | 'IDENTITY_TRANSIENT' // 5xx, 429, timeout, network: try later, keep the grant
  | 'IDENTITY_REJECTED' // the upstream refused the login (error on callback, bad response)
  | 'IDENTITY_NO_ACCOUNT_ID'; // nothing in the response tells who the user is

export class IdentityError extends Error {
  constructor(
    readonly code: IdentityErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface IdentityClient {
  readonly issuer: string;
  readonly scope: string;
  authorizationUrl(params: { state: string; codeVerifier: string; nonce: string }): Promise<URL>;
  /** Completes the login from the callback URL; `state` already matched by the caller. */
  exchange(callbackUrl: URL, checks: { state: string; codeVerifier: string; nonce: string }): Promise<UpstreamLogin>;
  refresh(refreshToken: string): Promise<UpstreamCredentials>;
}

export interface IdentityClientOptions {
  /** `${BASE_URL}/interaction/identity/callback`. */
  redirectUri: string;
  /** Plain-http upstream allowed: loopback only, LOCAL_INSECURE or the embedded dev IdP. */
  allowInsecure: boolean;
  /** Per-request timeout, seconds. */
  timeout?: number;
}

async function loadConfiguration(config: IdentityConfig): Promise<oidc.Configuration> {
  const auth = config.clientSecret ? oidc.ClientSecretPost(config.clientSecret) : oidc.None();
  const secret = config.clientSecret;
  if (config.metadataFile) {
    let metadata: oidc.ServerMetadata;
    try {
      metadata = JSON.parse(await readFile(config.metadataFile, 'utf8')) as oidc.ServerMetadata;
    } catch (cause) {
      throw new IdentityError(
        'IDENTITY_UNREACHABLE',
        `IDENTITY_SERVER_METADATA_FILE ${config.metadataFile} could not be read as JSON`,
        { cause },
      );
    }
    return new oidc.Configuration(metadata, config.clientId, secret, auth);
  }
  const server = config.serverUrl!;
  try {
    return await oidc.discovery(server, config.clientId, secret, auth, {
      execute: server.protocol === 'http:' ? [oidc.allowInsecureRequests] : [],
      timeout: 10,
    });
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new IdentityError(
      'IDENTITY_UNREACHABLE',
      `identity provider at ${server.href} could not be discovered: ${reason}`,
      { cause },
    );
  }
}

function toCredentials(tokens: oidc.TokenEndpointResponse, previous?: UpstreamCredentials): UpstreamCredentials {
  return {
    accessToken: tokens.access_token,
    // RFC 6749 §6: a refresh response may omit refresh_token, meaning the old one stays valid.
    refreshToken: tokens.refresh_token ?? previous?.refreshToken,
    expiresAt: typeof tokens.expires_in === 'number' ? Math.floor(Date.now() / 1000) + tokens.expires_in : undefined,
    scope: tokens.scope,
    tokenType: tokens.token_type,
  };
}

/**
 * Whatever the upstream says about its failure, only `invalid_grant` means the grant is dead.
 * `invalid_client` and friends mean *our* configuration is wrong: revoking users' grants for that
 * would turn an operator mistake into a mass logout.
 */
function classify(error: unknown, action: string): IdentityError {
  if (error instanceof IdentityError) return error;
  if (error instanceof oidc.ResponseBodyError) {
    if (error.error === 'invalid_grant') {
      return new IdentityError('IDENTITY_GRANT_INVALID', `upstream ${action} answered invalid_grant`, { cause: error });
    }
    return new IdentityError('IDENTITY_TRANSIENT', `upstream ${action} failed with ${error.status} ${error.error}`, {
      cause: error,
    });
  }
  const status = (error as { cause?: { status?: number } })?.cause?.status;
  const detail = status ? `HTTP ${status}` : error instanceof Error ? error.message : String(error);
  return new IdentityError('IDENTITY_TRANSIENT', `upstream ${action} failed: ${detail}`, { cause: error });
}

/**
 * Who is this user? OIDC providers say so in the ID token's `sub`; others through userinfo; the
 * two common non-OIDC providers only in their token response: Heroku Identity as `user_id`,
 * Salesforce as an `id` URL (`…/id/<org>/<user>`).
 */
export function accountIdFromTokenResponse(tokens: Record<string, unknown>): string | undefined {
  if (typeof tokens.user_id === 'string' && tokens.user_id) return tokens.user_id;
  if (typeof tokens.id === 'string' && /^https:\/\//.test(tokens.id)) return tokens.id;
  return undefined;
}

export async function createIdentityClient(
  config: IdentityConfig,
  options: IdentityClientOptions,
): Promise<IdentityClient> {
  const configuration = await loadConfiguration(config);
  const metadata = configuration.serverMetadata();
  const endpoint = metadata.authorization_endpoint;
  if (!endpoint || !metadata.token_endpoint) {
    throw new IdentityError(
      'IDENTITY_UNREACHABLE',
      `identity provider ${metadata.issuer} has no authorization_endpoint or token_endpoint`,
    );
  }
  const insecure = [endpoint, metadata.token_endpoint, metadata.userinfo_endpoint]
    .filter((url): url is string => !!url)
    .filter((url) => new URL(url).protocol !== 'https:');
  if (insecure.length > 0) {
    const allLoopback = insecure.every((url) => isLoopbackHost(new URL(url).hostname));
    if (!options.allowInsecure || !allLoopback) {
      throw new IdentityError(
        'IDENTITY_UNREACHABLE',
        `identity provider ${metadata.issuer} uses plain http (${insecure[0]}); only loopback with LOCAL_INSECURE=true may`,
      );
    }
    oidc.allowInsecureRequests(configuration);
  }
  configuration.timeout = options.timeout ?? 10;
  const scope = config.scope;
  const wantsIdToken = scope.split(' ').includes('openid');

  return {
    issuer: metadata.issuer,
    scope,
    async authorizationUrl({ state, codeVerifier, nonce }) {
      const params: Record<string, string> = {
        redirect_uri: options.redirectUri,
        response_type: 'code',
        scope,
        state,
        // R21: PKCE S256 upstream always, even where the provider does not advertise it.
        code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
      };
      if (wantsIdToken) params.nonce = nonce;
      return oidc.buildAuthorizationUrl(configuration, params);
    },
    async exchange(callbackUrl, checks) {
      let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
      try {
        tokens = await oidc.authorizationCodeGrant(configuration, callbackUrl, {
          pkceCodeVerifier: checks.codeVerifier,
          expectedState: checks.state,
          expectedNonce: wantsIdToken ? checks.nonce : undefined,
          idTokenExpected: false,
        });
      } catch (error) {
        if (error instanceof oidc.AuthorizationResponseError) {
          throw new IdentityError('IDENTITY_REJECTED', `the identity provider refused the login: ${error.error}`, {
            cause: error,
          });
        }
        const classified = classify(error, 'code exchange');
        throw classified.code === 'IDENTITY_TRANSIENT'
          ? classified
          : new IdentityError('IDENTITY_REJECTED', classified.message, { cause: error });
      }
      const credentials = toCredentials(tokens);
      let accountId = tokens.claims()?.sub;
      if (!accountId && metadata.userinfo_endpoint) {
        try {
          accountId = (await oidc.fetchUserInfo(configuration, tokens.access_token, oidc.skipSubjectCheck)).sub;
        } catch {
          // Fall through to the provider-specific fields below.
        }
      }
      accountId ??= accountIdFromTokenResponse(tokens as unknown as Record<string, unknown>);
      if (!accountId) {
        throw new IdentityError(
          'IDENTITY_NO_ACCOUNT_ID',
          'the identity provider did not say who logged in (no ID token sub, userinfo, user_id or id)',
        );
      }
      return { accountId, credentials };
    },
    async refresh(refreshToken) {
      try {
        return toCredentials(await oidc.refreshTokenGrant(configuration, refreshToken), {
          accessToken: '',
          refreshToken,
        });
      } catch (error) {
        throw classify(error, 'refresh');
      }
    },
  };
}
