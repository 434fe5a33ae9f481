import Provider, {
  errors,
  interactionPolicy,
  type Configuration,
  type KoaContextWithOIDC,
  type SigningAlgorithmWithNone,
} from 'oidc-provider';
import type { Config } from '../config/types.ts';
import { fromOAuthOutput, publicView } from '../http/errors.ts';
import type { Store } from '../store/types.ts';
import { loginErrorText } from '../interactions/pages.ts';
import { currentRequestId, type Logger } from '../telemetry/log.ts';
import type { Views } from '../views/index.ts';
import { cimdConfiguration } from './cimd.ts';
import { logRefusals } from './refusals.ts';
import { answerStoreOutages } from './store-outage.ts';
import { StoreUnavailableError } from '../store/types.ts';
import { clientBasedCors } from './cors.ts';
import type { KeyMaterial } from './keys.ts';
import { INTERACTION_COOKIES, resourceScopes, TTL } from './policy.ts';
import { installRefreshGrace } from './refresh-grace.ts';
import { isOurResource } from './resource.ts';
import { bindTokensToGrantSecrets } from './token-binding.ts';

/**
 * oidc-provider would answer a repeat authorization from a browser with a session straight from
 * the stored grant, skipping our interaction. Every authorization must come through it instead:
 * that is where a changed redirect URI is asked about again (R19) and where the grant gets fresh
 * upstream credentials. Our consent registry decides whether the user sees the page.
 */
function policy(): interactionPolicy.Prompt[] {
  const prompts = interactionPolicy.base();
  prompts
    .get('consent')!
    .checks.add(
      new interactionPolicy.Check(
        'proxy_interaction_required',
        'every authorization passes through the proxy interaction',
        'interaction_required',
        (ctx) =>
          ctx.oidc.result?.consent ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT,
      ),
    );
  return prompts;
}

/**
 * The ID token algorithm clients get by default: the one our first signing key can make.
 * Configuration accepts RSA, EC P-256 and Ed25519 keys; a hard-coded RS256 would make every
 * registration fail on an EC- or Ed25519-only key set.
 */
export function defaultSigningAlg(jwks: {
  keys: Array<{ kty?: string; crv?: string; alg?: string; use?: string }>;
}): SigningAlgorithmWithNone {
  const key = jwks.keys.find((candidate) => candidate.use !== 'enc');
  if (key?.alg) return key.alg as SigningAlgorithmWithNone;
  if (key?.kty === 'EC') return 'ES256';
  if (key?.kty === 'OKP') return 'Ed25519';
  return 'RS256';
}

export interface ProviderDeps {
  config: Config;
  store: Store;
  keys: KeyMaterial;
  views: Views;
  log: Logger;
}

export function createProvider({ config, store, keys, views, log }: ProviderDeps): Provider {
  const resourceUrl = config.mcp.resourceUrl;
  const scopes = resourceScopes(config);

  const cimd = cimdConfiguration(config, log);

  const configuration: Configuration = {
    adapter: store.Adapter,
    jwks: keys.jwks as Configuration['jwks'],
    cookies: {
      keys: keys.cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { ...INTERACTION_COOKIES },
    },
    clients: [],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      id_token_signed_response_alg: defaultSigningAlg(keys.jwks as Parameters<typeof defaultSigningAlg>[0]),
    },
    responseTypes: ['code'],
    scopes: [...config.provider.scopes],
    claims: { openid: ['sub'] },
    findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    // OAuth 2.1 §4.1.1: PKCE for every authorization code, confidential clients included.
    // oidc-provider only knows S256, so `plain` is refused by construction (R10).
    pkce: { required: () => true },
    // MCP clients rarely ask for offline_access, yet without a refresh token they would send the
    // user through the upstream login every hour.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    rotateRefreshToken: true,
    // Revoking any token of a grant (RFC 7009) already revokes all its tokens, refresh tokens
    // included; destroying the grant too lets `grant.revoked` delete its upstream credentials.
    // Every login makes a new grant, so nothing would ever use the old one again.
    revokeGrantPolicy: () => true,
    // Browser-based clients (MCP Inspector) call /token and /token/revocation cross-origin.
    clientBasedCORS: clientBasedCors,
    ttl: { ...TTL },
    // R11, R24: every URL a client makes us fetch (CIMD client_id, jwks_uri, sector_identifier_uri)
    // goes through one SSRF-checked fetch with size limits.
    fetch: cimd.fetch,
    fetchResponseBodyLimits: cimd.fetchResponseBodyLimits,
    interactions: { policy: policy(), url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientIdMetadataDocument: cimd.clientIdMetadataDocument,
      registration: { enabled: true, initialAccessToken: false },
      revocation: {
        enabled: true,
        // RFC 7009 §2.1: a client revokes only its own tokens. A public client proves nothing by
        // naming a client_id, so it is answered as for an unknown token (§2.2) and learns nothing
        // about others' tokens; an authenticated client is told it may not.
        allowedPolicy: async (_ctx, client, token) => {
          if (token.clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        },
      },
      userinfo: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // R13: the only resource here is the MCP endpoint; an absent `resource` means it.
        defaultResource: async () => resourceUrl,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (!isOurResource(resource, resourceUrl)) {
            throw new errors.InvalidTarget(`resource must be ${resourceUrl}`);
          }
          return {
            scope: scopes.join(' '),
            audience: resourceUrl,
            accessTokenFormat: 'opaque',
            accessTokenTTL: TTL.AccessToken,
          };
        },
      },
    },
    renderError: async (ctx: KoaContextWithOIDC, out, error) => {
      // R16: errors raised before the client and redirect URI are verified are shown here, never
      // redirected. 5xx details stay in the log (the server_error listener below writes them).
      const status = (error as { statusCode?: number }).statusCode ?? 500;
      ctx.type = 'html';
      ctx.set(views.headers);
      // A client the store no longer knows (a development restart, an expired registration) can
      // only be fixed in the client: the page says so instead of a bare `invalid_client`.
      const unknownClient = (error as { error_detail?: string }).error_detail === 'client not found';
      const known = unknownClient ? loginErrorText('invalid_client') : undefined;
      // What is shown of oidc-provider's own errors is decided by the same rule as ours.
      // A store outage keeps its own answer (503, "temporarily unavailable"), not a generic 500.
      const view = publicView(error instanceof StoreUnavailableError ? error : fromOAuthOutput(status, out));
      ctx.body = await views.render('error', {
        title: known?.heading ?? 'Sign-in error',
        heading: known?.heading ?? view.heading,
        message: known?.message ?? view.message,
        next: known?.next ?? 'Go back to the application you were connecting and try again.',
        code: view.code,
        requestId: currentRequestId(),
      });
    },
  };

  const provider = new Provider(config.baseUrl, configuration);
  // Heroku's router terminates TLS and says so in X-Forwarded-Proto (R18).
  provider.proxy = true;
  installRefreshGrace({ provider, store, log });
  // Codes, access and refresh tokens carry their grant's vault secret (lib/vault/README.md).
  bindTokensToGrantSecrets(provider, log);

  logRefusals(provider, log);
  answerStoreOutages(provider, log);
  return provider;
}
