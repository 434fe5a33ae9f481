import type { ServerResponse } from 'node:http';
import { sendJson } from '../http/json.ts';

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

// Every answer the proxy makes itself is a small JSON document for programs, never an HTML page
// or a redirect, written with plain Node so the proxy runs with or without Express in front of it.

/** 401 and 403 on `/mcp`: the challenge header clients discover us by (R2, R5), and a JSON body. */
export function sendChallenge(
  res: ServerResponse,
  status: 401 | 403,
  resourceMetadataUrl: string,
  challenge: Challenge,
): void {
  sendJson(
    res,
    status,
    {
      error: challenge.error ?? 'unauthorized',
      error_description: challenge.description ?? 'a bearer token is required',
    },
    { 'WWW-Authenticate': challengeHeader(resourceMetadataUrl, challenge) },
  );
}
