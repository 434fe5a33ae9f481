import { createPrivateKey, type JsonWebKey } from 'node:crypto';
import type { JSONWebKeySet, JWK } from 'jose';
import type { Collector } from './collector.ts';
import { isObject, parseJson } from './parse.ts';

/**
 * OIDC_PROVIDER_JWKS is the provider's private key material. No message here quotes any part of
 * it, and JSON.parse's own message is never used: V8 quotes the input around the error.
 *
 * Two shapes are accepted: a JWK Set `{"keys":[…]}` (RFC 7517 §5), and a bare JSON array of keys,
 * which is what the Heroku proxy's README produces (`"[$(jwkgen --jwk)]"`).
 */
export function parseJwks(c: Collector, raw: string): JSONWebKeySet | undefined {
  const report = (problem: string) => c.report('OIDC_PROVIDER_JWKS', problem);
  const parsed = parseJson(raw);
  if (parsed === undefined) {
    report('is not valid JSON');
    return undefined;
  }
  const keys = Array.isArray(parsed) ? parsed : isObject(parsed) ? parsed.keys : undefined;
  if (!Array.isArray(keys) || keys.length === 0) {
    report('must be a JSON object {"keys":[…]} or a JSON array […] holding at least one key');
    return undefined;
  }
  let valid = true;
  let canSign = false;
  keys.forEach((key: unknown, index) => {
    const problem = keyProblem(key, `key ${index + 1}`);
    if (problem !== undefined) {
      report(problem);
      valid = false;
      return;
    }
    canSign ||= isSigningKey(key as Record<string, unknown>);
  });
  if (valid && !canSign) {
    report('has no signing key: at least one RSA, EC P-256 or OKP Ed25519 key not marked "use":"enc"');
    valid = false;
  }
  return valid ? { keys: keys as JWK[] } : undefined;
}

function keyProblem(key: unknown, label: string): string | undefined {
  if (!isObject(key)) return `${label} is not a JSON object`;
  if (key.kty !== 'RSA' && key.kty !== 'EC' && key.kty !== 'OKP') return `${label}: kty must be RSA, EC or OKP`;
  if (typeof key.d !== 'string') return `${label} is a public key: the private parameter "d" is needed to sign`;
  try {
    createPrivateKey({ key: key as JsonWebKey, format: 'jwk' });
  } catch {
    return `${label} is not a valid private ${key.kty} key`;
  }
  return undefined;
}

function isSigningKey(key: Record<string, unknown>): boolean {
  if (key.use === 'enc') return false;
  if (typeof key.alg === 'string' && !/^((RS|PS|ES)(256|384|512)|EdDSA|Ed25519)$/.test(key.alg)) return false;
  if (key.kty === 'RSA') return true;
  if (key.kty === 'EC') return key.crv === 'P-256';
  return key.crv === 'Ed25519';
}
