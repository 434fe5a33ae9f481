import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { StoreUnavailableError } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';

/**
 * oidc-provider's documented error events, one per endpoint (docs/events.md); each fires once per
 * refused request, after the error was answered. `server_error` is separate: oidc-provider emits
 * it instead of the endpoint's event for a 5xx.
 */
const REFUSAL_EVENTS = [
  'authorization.error',
  'grant.error',
  'registration_create.error',
  'registration_read.error',
  'registration_update.error',
  'registration_delete.error',
  'revocation.error',
  'introspection.error',
  'userinfo.error',
  'end_session.error',
  'end_session_confirm.error',
  'end_session_success.error',
  'discovery.error',
  'jwks.error',
  'pushed_authorization_request.error',
] as const;

interface OAuthError extends Error {
  error?: string;
  error_description?: string;
  /** oidc-provider's reason for the operator (e.g. "PKCE verification failed"); not sent. */
  error_detail?: string;
}

type Listener = (ctx: KoaContextWithOIDC, error: OAuthError) => void;

/**
 * Every refusal by oidc-provider logged once with its reason: the error code, the description the
 * client was sent and oidc-provider's detail. None of these carries a token, code or secret
 * (oidc-provider's messages name parameters, never their values); the client_id is public.
 */
export function logRefusals(provider: Provider, log: Logger): void {
  // The typings overload `on` per event name; every one of these has the same listener shape.
  const on = provider.on.bind(provider) as (event: string, listener: Listener) => unknown;
  for (const event of REFUSAL_EVENTS) {
    on(event, (ctx, error) => {
      log.info('oauth request refused', {
        event,
        error: error.error ?? error.message,
        description: error.error_description,
        detail: error.error_detail,
        client_id: ctx.oidc?.client?.clientId,
      });
    });
  }
  provider.on('server_error', (_ctx: KoaContextWithOIDC, error: Error) => {
    // An outage is no defect: store-outage.ts logs it once, without a stack.
    if (error instanceof StoreUnavailableError) return;
    log.error('authorization server error', { error: error.message, detail: error.stack });
  });
}
