import type { NextFunction, Request, Response } from 'express';

/**
 * Faults of the development identity provider's token endpoint that tests switch on: an outage
 * answered with an HTTP error, and a client secret rotated by its administrator.
 */

const TOKEN_BODY_LIMIT = 56 * 1024; // oidc-provider's own limit for token request bodies

/**
 * Answers refresh_token grants with the simulated failure. The body has to be read to tell the
 * grants apart; other grants continue with it attached as `req.body`, which oidc-provider
 * accepts in place of the consumed stream (printing a one-time notice about it).
 */
export async function failRefreshGrants(
  status: number,
  req: Request,
  res: Response,
  next: NextFunction,
): Promise<void> {
  if (!req.is('application/x-www-form-urlencoded')) return next();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > TOKEN_BODY_LIMIT) {
      res.status(413).json({ error: 'invalid_request', error_description: 'request body too large' });
      return;
    }
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks);
  if (new URLSearchParams(raw.toString('utf8')).get('grant_type') !== 'refresh_token') {
    req.body = raw;
    return next();
  }
  if (status === 429 || status === 503) res.setHeader('Retry-After', '1');
  res.setHeader('Cache-Control', 'no-store');
  res.status(status).json({
    error: status >= 500 ? 'server_error' : 'temporarily_unavailable',
    error_description: `simulated upstream failure (HTTP ${status})`,
  });
}

/**
 * Client authentication against the rotated secret (client_secret_post or _basic). A request with
 * it goes on to oidc-provider carrying the secret oidc-provider was configured with; any other is
 * refused as oidc-provider refuses a wrong secret.
 */
export async function requireRotatedSecret(
  rotated: string,
  original: string,
  req: Request,
  res: Response,
  next: NextFunction,
): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
  const [basicId, basicSecret] = basic
    ? Buffer.from(basic[1]!, 'base64').toString().split(':').map(decodeURIComponent)
    : [undefined, undefined];
  const presented = basicSecret ?? form.get('client_secret');
  if (presented !== rotated) {
    res.setHeader('Cache-Control', 'no-store');
    res.status(401).json({ error: 'invalid_client', error_description: 'client authentication failed' });
    return;
  }
  if (basic) {
    req.headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(basicId!)}:${encodeURIComponent(original)}`).toString('base64')}`;
  } else {
    form.set('client_secret', original);
  }
  req.body = Buffer.from(form.toString());
  next();
}
