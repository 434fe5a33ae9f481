import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { jsonBody } from '../http/errors.ts';
import { StoreUnavailableError } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';

/**
 * oidc-provider answers any error it does not know as `server_error`, with the error's
 * `statusCode` (503 for a StoreUnavailableError) and no Retry-After. A store outage is no defect:
 * the client was right and will be again shortly. So on registration, token, revocation and
 * every other endpoint of oidc-provider, the answer becomes RFC 6749's `temporarily_unavailable`
 * with Retry-After (R2: never a 500 a client could take as "your session is gone"). Pages (the
 * authorization endpoint) are rendered by `renderError`, which says the same in words.
 *
 * oidc-provider emits `server_error` with the request's context before its answer leaves, and
 * middleware added with `provider.use` runs around every route: the one marks, the other answers.
 */
export function answerStoreOutages(provider: Provider, log: Logger): void {
  const outages = new WeakMap<KoaContextWithOIDC, StoreUnavailableError>();
  provider.on('server_error', (ctx: KoaContextWithOIDC, error: Error) => {
    if (!(error instanceof StoreUnavailableError)) return;
    outages.set(ctx, error);
    log.warn('store unavailable', { status: error.status, error: error.message });
  });
  provider.use(async (ctx, next) => {
    await next();
    const error = outages.get(ctx as KoaContextWithOIDC);
    if (!error) return;
    ctx.status = error.status;
    ctx.set('Retry-After', String(error.retryAfterSeconds));
    ctx.set('Cache-Control', 'no-store');
    if (ctx.type === 'application/json') ctx.body = jsonBody(error);
  });
}
