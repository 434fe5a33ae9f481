import { readFile } from 'node:fs/promises';
import * as oidc from 'openid-client';
import type { IdentityConfig } from '../config/types.ts';
import { HttpError } from '../http/errors.ts';
import { isLoopbackHost } from '../http/loopback.ts';
import {
  createCheckedFetch,
  fetchedWhere,
  OutboundFetchRefused,
  outboundUrlRefusal,
  type Resolver,
} from '../http/outbound.ts';
import { log as defaultLog, type Logger } from '../telemetry/log.ts';
import { withSpan } from '../telemetry/spans.ts';

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

/**
 * What each code means to whoever sees it: a grant the user must renew is theirs to fix; the rest
 * is the identity provider's doing or our configuration's, never shown in detail (the messages
 * name upstream URLs and answers).
 */
const STATUS: Record<IdentityErrorCode, number> = {
  IDENTITY_UNREACHABLE: 502,
  IDENTITY_GRANT_INVALID: 401,
  IDENTITY_TRANSIENT: 503,
  IDENTITY_REJECTED: 502,
  IDENTITY_NO_ACCOUNT_ID: 502,
};

export class IdentityError extends HttpError {
  declare readonly code: IdentityErrorCode;

  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super({ status: STATUS[code], code, message, expose: false, cause: options?.cause });
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
  /** Per-request timeout, seconds, body included. Default 10. */
  timeout?: number;
  /** Where refused fetches are reported. Default: the process logger. */
  log?: Logger;
}

// --- The fetch (R24) ----------------------------------------------------------------------------

/**
 * What one identity provider response may weigh. Discovery documents of the large providers are
 * a few KiB, token and userinfo responses less; 256 KiB leaves room for any real one and none for
 * a provider (or whoever answers in its name) streaming us into memory exhaustion.
 */
export const IDENTITY_MAX_BYTES = 256 * 1024;

const DEFAULT_TIMEOUT_SECONDS = 10;

export interface IdentityFetchOptions {
  /**
   * LOCAL_INSECURE or the embedded development IdP: loopback addresses may be fetched, over plain
   * http or https with a self-signed certificate, on loopback hosts only.
   */
  readonly allowInsecure: boolean;
  /** Ceiling on one request, body included, milliseconds. */
  readonly timeoutMs: number;
  readonly log: Logger;
  /** Test seam: the name resolution whose answers are checked. */
  readonly resolve?: Resolver;
}

/**
 * Why `url` may not be fetched from the identity provider, before any connection; undefined when
 * it may. The same rules as for client metadata documents (R11): the discovery document and every
 * endpoint it lists are chosen by whoever controls the provider's answers, and a token endpoint at
 * 169.254.169.254 would have us POST our client secret to the cloud metadata service.
 */
export function identityUrlRefusal(url: URL, allowInsecure: boolean): string | undefined {
  return outboundUrlRefusal(url, { allowLoopback: allowInsecure, plainHttpOnLoopback: true });
}

/**
 * openid-client's `customFetch` for every request to the identity provider: discovery, token,
 * userinfo, JWKS. The checked outbound fetch (http/outbound.ts), with the provider's
 * error bodies kept: the token endpoint's 400 `invalid_grant` and userinfo's 401 challenge are
 * what `classify` branches on.
 *
 * Redirects are never followed, discovery included. openid-client asks for `redirect: 'manual'`
 * and treats anything but 200 as a failure anyway; we enforce it here so that no version of it can
 * be talked into following a Location to an address we never checked. A discovery document that
 * moved cannot be used regardless: openid-client requires its `issuer` to equal the configured
 * URL, so the operator must configure the final one.
 */
export function createIdentityFetch({
  allowInsecure,
  timeoutMs,
  log,
  resolve,
}: IdentityFetchOptions): oidc.CustomFetch {
  const checked = createCheckedFetch({
    allowLoopback: allowInsecure,
    plainHttpOnLoopback: true,
    timeoutMs,
    maxBytes: IDENTITY_MAX_BYTES,
    keepErrorBodies: true,
    resolve,
  });
  return async (input, init) =>
    checked(input, init).catch((error: unknown) => {
      if (error instanceof OutboundFetchRefused) {
        // Operator configuration (or the provider's own metadata) is at fault, not a user: warn.
        log.warn('identity provider fetch refused', { url: fetchedWhere(input), reason: error.message });
      }
      throw error;
    });
}

/**
 * The reason worth reading: openid-client wraps errors it does not know (our refusals among
 * them) as "something went wrong", with the real one as `cause`.
 */
function reason(error: unknown): string {
  for (let current = error; current instanceof Error; current = current.cause) {
    if (current instanceof OutboundFetchRefused) return `refused by the outbound fetch policy: ${current.message}`;
  }
  return error instanceof Error ? error.message : String(error);
}

// --- The client ---------------------------------------------------------------------------------

async function loadConfiguration(
  config: IdentityConfig,
  customFetch: oidc.CustomFetch,
  timeout: number,
): Promise<oidc.Configuration> {
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
      // openid-client's own https check is lifted so that `customFetch`, which knows the
      // loopback rule, is the one place deciding.
      execute: server.protocol === 'http:' ? [oidc.allowInsecureRequests] : [],
      [oidc.customFetch]: customFetch,
      timeout,
    });
  } catch (cause) {
    throw new IdentityError(
      'IDENTITY_UNREACHABLE',
      `identity provider at ${server.href} could not be discovered: ${reason(cause)}`,
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

/** The identity provider refused *us* (RFC 6749 §5.2 invalid_client, or a 401 challenge), not the user's grant. */
function clientRefused(error: unknown): boolean {
  if (error instanceof oidc.WWWAuthenticateChallengeError) return true;
  return error instanceof oidc.ResponseBodyError && ['invalid_client', 'unauthorized_client'].includes(error.error);
}

/**
 * Whatever the upstream says about its failure, only `invalid_grant` means the grant is dead.
 * `invalid_client` and friends mean *our* configuration is wrong: revoking users' grants for that
 * would turn an operator mistake into a mass logout.
 */
function classify(error: unknown, action: string): IdentityError {
  if (error instanceof IdentityError) return error;
  if (clientRefused(error)) {
    return new IdentityError(
      'IDENTITY_TRANSIENT',
      `upstream ${action} refused our client credentials: IDENTITY_CLIENT_ID or IDENTITY_CLIENT_SECRET is wrong or was rotated at the identity provider`,
      { cause: error },
    );
  }
  if (error instanceof oidc.ResponseBodyError) {
    if (error.error === 'invalid_grant') {
      return new IdentityError('IDENTITY_GRANT_INVALID', `upstream ${action} answered invalid_grant`, { cause: error });
    }
    return new IdentityError('IDENTITY_TRANSIENT', `upstream ${action} failed with ${error.status} ${error.error}`, {
      cause: error,
    });
  }
  // openid-client puts the HTTP response's status on the cause; our refusals carry one of their own.
  const cause = (error as { cause?: { status?: number } })?.cause;
  const status = cause instanceof HttpError ? undefined : cause?.status;
  const detail = status ? `HTTP ${status}` : reason(error);
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
  const timeout = options.timeout ?? DEFAULT_TIMEOUT_SECONDS;
  const log = options.log ?? defaultLog;
  let credentialsRefused = false;
  const customFetch = createIdentityFetch({
    allowInsecure: options.allowInsecure,
    timeoutMs: timeout * 1000,
    log,
  });
  const configuration = await loadConfiguration(config, customFetch, timeout);
  // A Configuration from a metadata file has none yet; discovery set it already.
  configuration[oidc.customFetch] = customFetch;
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
  // Refused at every fetch anyway; refusing here too makes a bad endpoint a start-up failure
  // rather than every user's failed login. The authorization endpoint is only ever visited by
  // browsers, so its address is not ours to check.
  for (const url of [metadata.token_endpoint, metadata.userinfo_endpoint, metadata.jwks_uri]) {
    const refusal = url ? identityUrlRefusal(new URL(url), options.allowInsecure) : undefined;
    if (refusal) {
      throw new IdentityError(
        'IDENTITY_UNREACHABLE',
        `identity provider ${metadata.issuer} lists ${url}, refused by the outbound fetch policy: ${refusal}`,
      );
    }
  }
  configuration.timeout = timeout;
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
    // A span per call to the token endpoint (here and in refresh): its outcome is `ok` or the
    // IdentityError's code, never the message (an error may quote what the provider was sent).
    exchange(callbackUrl, checks) {
      return withSpan('upstream.code_exchange', {}, async () => {
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
      });
    },
    refresh(refreshToken) {
      return withSpan('upstream.refresh', {}, async () => {
        let credentials: UpstreamCredentials;
        try {
          credentials = toCredentials(await oidc.refreshTokenGrant(configuration, refreshToken), {
            accessToken: '',
            refreshToken,
          });
        } catch (error) {
          // An operator's mistake (a rotated secret not yet set here), logged as one, once until a
          // refresh works again. Every user keeps their grant meanwhile: 503, not a logout.
          if (clientRefused(error) && !credentialsRefused) {
            credentialsRefused = true;
            log.error(
              'the identity provider refuses our client credentials: set IDENTITY_CLIENT_SECRET (and IDENTITY_CLIENT_ID) to what it expects; users keep their logins and get 503 until then',
            );
          }
          throw classify(error, 'refresh');
        }
        if (credentialsRefused) log.info('the identity provider accepts our client credentials again');
        credentialsRefused = false;
        return credentials;
      });
    },
  };
}
