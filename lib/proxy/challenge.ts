import type { Response } from 'express';

/** RFC 6750 §3 challenge parameters; quoted-string values cannot carry `"` or `\`. */
export interface Challenge {
  error?: 'invalid_token' | 'invalid_request' | 'insufficient_scope';
  description?: string;
  /** Space-separated scopes still needed (R5: the full set, including those already granted). */
  scope: string;
}

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '')}"`;
}

export function challengeHeader(resourceMetadataUrl: string, challenge: Challenge): string {
  const params = [`resource_metadata=${quote(resourceMetadataUrl)}`];
  if (challenge.scope) params.push(`scope=${quote(challenge.scope)}`);
  if (challenge.error) params.push(`error=${quote(challenge.error)}`);
  if (challenge.description) params.push(`error_description=${quote(challenge.description)}`);
  return `Bearer ${params.join(', ')}`;
}

/**
 * 401 and 403 answers on `/mcp` are for programs: a challenge header (R2) and a small JSON body,
 * never an HTML page or a redirect to a login form.
 */
export function sendChallenge(res: Response, status: 401 | 403, resourceMetadataUrl: string, challenge: Challenge): void {
  res
    .status(status)
    .set({
      'WWW-Authenticate': challengeHeader(resourceMetadataUrl, challenge),
      'Cache-Control': 'no-store',
    })
    .json({
      error: challenge.error ?? 'unauthorized',
      error_description: challenge.description ?? 'a bearer token is required',
    });
}
