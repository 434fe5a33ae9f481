import type { NextFunction, Request, Response } from 'express';

/**
 * Faults of the development identity provider's token endpoint that tests switch on: an outage
 * answered with an HTTP error, and a client secret rotated by its administrator.
 */

/**
 * Answers refresh_token grants with the simulated failure. Runs after `edgeBody('form', …)`, which
 * parsed the body and left its bytes in the stream for oidc-provider (so it reads them itself and
 * prints no notice about an already parsed body).
 */
export function failRefreshGrants(status: number, req: Request, res: Response, next: NextFunction): void {
  if (formField(req, 'grant_type') !== 'refresh_token') return next();
  if (status === 429 || status === 503) res.setHeader('Retry-After', '1');
  res.setHeader('Cache-Control', 'no-store');
  res.status(status).json({
    error: status >= 500 ? 'server_error' : 'temporarily_unavailable',
    error_description: `simulated upstream failure (HTTP ${status})`,
  });
}

/**
 * Client authentication against the rotated secret (client_secret_post or _basic). A request with
 * it goes on to oidc-provider carrying the secret oidc-provider was configured with (`handBack`
 * writes a changed body back into the stream); any other is refused as oidc-provider refuses a
 * wrong secret.
 */
export function requireRotatedSecret(
  rotated: string,
  original: string,
  req: Request,
  res: Response,
  next: NextFunction,
): void {
  const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
  const [basicId, basicSecret] = basic
    ? Buffer.from(basic[1]!, 'base64').toString().split(':').map(decodeURIComponent)
    : [undefined, undefined];
  const presented = basicSecret ?? formField(req, 'client_secret');
  if (presented !== rotated) {
    res.setHeader('Cache-Control', 'no-store');
    res.status(401).json({ error: 'invalid_client', error_description: 'client authentication failed' });
    return;
  }
  if (basic) {
    req.headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(basicId!)}:${encodeURIComponent(original)}`).toString('base64')}`;
  } else {
    (req.body as Record<string, unknown>).client_secret = original;
  }
  next();
}

function formField(req: Request, name: string): string | undefined {
  const value = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : undefined;
}
