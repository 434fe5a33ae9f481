import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, type JSONWebKeySet, type JWK } from 'jose';
import { ProxyError } from '../http/errors.ts';

/**
 * OIDC_PROVIDER_JWKS values for operators: a fresh set, a set with a new signing key in front,
 * a set without a retired key. The key type is the one the proxy generates for itself in
 * development (RS256, see lib/auth-server/keys.ts), which every MCP client can verify.
 */

/** A readable kid: the day it was made tells an operator which key is oldest. */
function newKid(now: Date): string {
  return `${now.toISOString().slice(0, 10)}-${randomBytes(4).toString('hex')}`;
}

export async function newSigningKey(now: Date = new Date()): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: newKid(now) };
}

export async function freshJwks(): Promise<JSONWebKeySet> {
  return { keys: [await newSigningKey()] };
}

/** A user-facing problem with the JWKS given on standard input; never quotes the (secret) input. */
export class JwksInputError extends ProxyError {
  constructor(message: string) {
    super('JWKS_INPUT_INVALID', message);
  }
}

export function parseJwksInput(text: string): JSONWebKeySet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new JwksInputError('standard input is not JSON: pipe the current OIDC_PROVIDER_JWKS value in');
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((key) => key && typeof key === 'object')) {
    throw new JwksInputError('standard input must be a JWKS: {"keys":[…]} with at least one key');
  }
  return { keys: keys as JWK[] };
}

/**
 * The new key goes first: oidc-provider signs with the first key of an algorithm, and keeps the
 * others to verify what they signed earlier. The secrets derived from the set follow the same
 * order (`lib/auth-server/keys.ts`), so adding a key logs nobody out.
 */
export async function addSigningKey(current: JSONWebKeySet): Promise<JSONWebKeySet> {
  let key = await newSigningKey();
  const taken = new Set(current.keys.map((k) => k.kid));
  while (taken.has(key.kid)) key = await newSigningKey();
  return { keys: [key, ...current.keys] };
}

export function retireKey(current: JSONWebKeySet, kid: string): JSONWebKeySet {
  const keys = current.keys.filter((key) => key.kid !== kid);
  if (keys.length === current.keys.length) {
    const known = current.keys.map((key) => key.kid ?? '(no kid)').join(', ');
    throw new JwksInputError(`no key has kid ${JSON.stringify(kid)}; the kids are: ${known}`);
  }
  if (keys.length === 0) throw new JwksInputError(`${kid} is the only key: add a new one before retiring it`);
  return { keys };
}
