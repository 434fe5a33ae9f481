import { Router, type Request, type Response } from 'express';
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { Logger } from '../telemetry/log.ts';
import { currentRequest } from '../telemetry/request-context.ts';
import { grantSecretOf, tokenValueWith, type GrantSecret } from '../vault/grant-secret.ts';
import { cookieAttributes, cookieValues, GRANT_SECRET_COOKIE, openGrantSecretCookie } from './grant-secret-cookie.ts';
import { edgeBody } from '../http/edge-body.ts';

/**
 * Every authorization code, access token and refresh token of ours carries its grant's secret G
 * (`<random id>.<base64url(G)>`), because G is half of the key of the grant's vault record and is
 * kept nowhere else. This module makes oidc-provider mint such values, and hands it the G of the
 * request being served:
 *
 * - `/token`: G is read from the presented `code` or `refresh_token`. Whatever it issues belongs
 *   to the presented token's grant, and a value with an altered G part is a token nobody issued
 *   (the store finds tokens by SHA-256 of the whole value), so the G is genuine once oidc-provider
 *   accepted the token.
 * - the resume endpoint `/auth/:uid`, where the authorization code is minted after the upstream
 *   login: G travels there from the upstream callback in the browser, in a cookie sealed under a
 *   server key, bound to the interaction and the grant — never through the store.
 *
 * Anything else that would mint one of these tokens fails closed. The scheme: `lib/vault/README.md`.
 */

/** What the request being served may mint tokens with. */
interface Issuance {
  secret?: GrantSecret;
  /** Set where G arrived separately from a token of its grant (the resume cookie): the grant it was made for. */
  grantId?: string;
  /** Why the request carries no usable G; answered to the client as this OAuth error. */
  refusal?: Refusal;
  /** Called once a token was minted with `secret` (the resume endpoint clears its cookie). */
  minted?: () => void;
}

interface Refusal {
  error: 'invalid_grant' | 'access_denied';
  description: string;
}

/**
 * The issuance of the request being served, attached to its request context rather than kept in
 * an AsyncLocalStorage of its own (see request-context.ts for why one is enough).
 */
const issuances = new WeakMap<object, Issuance>();

function currentIssuance(): Issuance | undefined {
  const request = currentRequest();
  return request && issuances.get(request);
}

/** Makes `context` what the rest of this request may mint with; without a request context, nothing. */
function issueWith(context: Issuance, next: () => void): void {
  const request = currentRequest();
  if (request) issuances.set(request, context);
  next();
}

/** The models whose values are the bearer's secret and belong to one grant. */
const BOUND_MODELS = ['AuthorizationCode', 'AccessToken', 'RefreshToken'] as const;
const BOUND = Symbol('grant-secret-bound');

interface MintedToken {
  kind: string;
  grantId?: string;
  /** Set by oidc-provider's AccessToken id generator: `opaque` or `jwt`. */
  format?: string;
  generateTokenId(): string;
}

function refusalError({ error, description }: Refusal): Error {
  if (error === 'access_denied') return new errors.AccessDenied(description);
  // invalid_grant keeps oidc-provider's fixed description; ours goes to the log as its detail.
  return new errors.InvalidGrant({ detail: description });
}

/**
 * Makes oidc-provider mint `<random id>.<base64url(G)>` for every authorization code, access token
 * and refresh token. The value is the token's id, so oidc-provider's own lookups, the store's
 * hashing and the revocation endpoint work on it unchanged. Installed by `createProvider`.
 */
export function bindTokensToGrantSecrets(provider: Provider, log: Logger): void {
  for (const model of BOUND_MODELS) {
    const prototype = provider[model].prototype as unknown as MintedToken & { [BOUND]?: true };
    if (prototype[BOUND]) continue;
    const generate = prototype.generateTokenId;
    prototype.generateTokenId = function (this: MintedToken): string {
      const id = generate.call(this);
      // A JWT access token's value is the JWT, not this id: G would never reach the client.
      if (this.format !== undefined && this.format !== 'opaque') {
        throw new Error(`${this.kind} in format ${this.format} cannot carry its grant secret`);
      }
      const context = currentIssuance();
      if (!context) {
        // An issuing path nobody wired (a grant type or endpoint enabled later): refused rather
        // than minting a token whose grant's upstream credentials nobody can open.
        log.error('token minted outside a request that carries its grant secret; refused', { kind: this.kind });
        throw new Error(`no grant secret for this ${this.kind}`);
      }
      if (!context.secret)
        throw refusalError(context.refusal ?? { error: 'invalid_grant', description: 'no grant secret' });
      if (context.grantId !== undefined && context.grantId !== this.grantId) {
        // The cookie names another login's grant (two logins of one interaction raced).
        log.warn('grant secret cookie belongs to another grant; authorization refused', {
          kind: this.kind,
          grant_id: this.grantId,
        });
        throw refusalError({ error: 'access_denied', description: STALE_LOGIN });
      }
      const value = tokenValueWith(id, context.secret);
      context.minted?.();
      return value;
    };
    prototype[BOUND] = true;
  }
}

const STALE_LOGIN = 'the login could not be completed in this browser; start it again from your application';

// --- Express: the request context oidc-provider mints in ---------------------------------------

export interface GrantSecretContextOptions {
  /** oidc-provider's routes, as mounted: `/auth` (its resume is `/auth/:uid`) and `/token`. */
  paths: { authorization: string; token: string };
  /** `KeyMaterial.grantSecretCookieKeys`: a cookie sealed under any of them opens. */
  cookieKeys: readonly Buffer[];
  secure: boolean;
  log: Logger;
}

function fromTokenRequest(body: unknown): Issuance {
  const params = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const presented =
    params.grant_type === 'authorization_code'
      ? params.code
      : params.grant_type === 'refresh_token'
        ? params.refresh_token
        : undefined;
  const secret = typeof presented === 'string' ? grantSecretOf(presented) : undefined;
  if (secret) return { secret };
  // Also where a token minted before tokens carried G is presented: its grant's vault record is
  // unreadable anyway, so the client is sent back through login.
  return {
    refusal: {
      error: 'invalid_grant',
      description: 'the presented grant carries no grant secret (older token format)',
    },
  };
}

/**
 * Mounted just before `provider.callback()`: runs oidc-provider's handling of `/token` and of the
 * resume endpoint inside the G of the request. Must come after the body parser of `/token`
 * (`clientPolicies`).
 */
export function grantSecretContext({ paths, cookieKeys, secure, log }: GrantSecretContextOptions): Router {
  const router = Router();
  // Normally read already by the client policies in front; edgeBody reads a body once.
  const form = edgeBody('form', 64 * 1024);

  router.post(paths.token, form, (req, _res, next) => issueWith(fromTokenRequest(req.body), next));

  router.get(`${paths.authorization}/:uid`, async (req: Request, res: Response, next) => {
    const uid = String(req.params.uid);
    const path = req.originalUrl.split('?')[0]!;
    const values = cookieValues(req.headers.cookie, GRANT_SECRET_COOKIE);
    let context: Issuance = { refusal: { error: 'access_denied', description: STALE_LOGIN } };
    for (const value of values) {
      const opened = await openGrantSecretCookie(cookieKeys, uid, value);
      if (opened) {
        // Cleared once the code carries G, not before: oidc-provider may answer this resume with
        // a detour and come back to it (a session of another account is ended first, through
        // end_session_confirm). A resume that ends otherwise leaves it to its Max-Age.
        const clear = () => {
          if (!res.headersSent)
            res.append('Set-Cookie', `${GRANT_SECRET_COOKIE}=; ${cookieAttributes(path, 0, secure)}`);
        };
        context = { ...opened, minted: clear };
        break;
      }
    }
    // Only matters when a code is minted: a resume that ends the login with an error needs no G.
    if (values.length && !context.secret) log.warn('grant secret cookie refused: altered, expired or of another login');
    issueWith(context, next);
  });

  return router;
}
