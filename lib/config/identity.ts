import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Collector, type Checked, type Source } from './collector.ts';
import { isObject, isSecureUpstream, parseHttpUrl, parseJson, parseScope, tryUrl } from './parse.ts';
import { overlaps, reservedPrefixOf } from './routes.ts';
import type { IdentityConfig } from './types.ts';

const DEFAULT_IDENTITY_SCOPE = 'openid';
/** Where the upstream provider sends the browser back; registered there as part of the redirect URI. */
export const DEFAULT_CALLBACK_PATH = '/interaction/identity/callback';

/** IDENTITY_*: the upstream identity provider users log in at. */
export function checkIdentity(source: Source, localInsecure: boolean): Checked<IdentityConfig | undefined> {
  const c = new Collector(source);
  return c.done(readIdentity(c, localInsecure));
}

function readIdentity(c: Collector, localInsecure: boolean): IdentityConfig | undefined {
  const rawUrl = c.read('IDENTITY_SERVER_URL');
  const rawFile = c.read('IDENTITY_SERVER_METADATA_FILE');
  const clientId = c.read('IDENTITY_CLIENT_ID');
  // Secrets are taken as given: whitespace may be part of them, and the provider is the judge.
  const clientSecret = c.read('IDENTITY_CLIENT_SECRET', { json: true });
  const rawScope = c.read('IDENTITY_SCOPE');

  const anySet = [rawUrl, rawFile, clientId, clientSecret, rawScope].some((v) => v !== undefined);
  if (!anySet) {
    if (c.production) {
      c.report('IDENTITY_SERVER_URL', 'is required in production (or IDENTITY_SERVER_METADATA_FILE)');
      c.report('IDENTITY_CLIENT_ID', 'is required in production');
    } else {
      c.warn('no IDENTITY_* variables: using the embedded development identity provider instead of a real login');
    }
    return undefined;
  }

  // From here on a partial set is an error in any mode: half an upstream configuration must not
  // quietly turn into the development identity provider.
  let valid = true;
  if (rawUrl === undefined && rawFile === undefined) {
    c.report(
      'IDENTITY_SERVER_URL',
      'is required (or IDENTITY_SERVER_METADATA_FILE) when other IDENTITY_* variables are set',
    );
    valid = false;
  }
  if (clientId === undefined) {
    c.report('IDENTITY_CLIENT_ID', 'is required when other IDENTITY_* variables are set');
    valid = false;
  }

  let serverUrl: URL | undefined;
  if (rawUrl !== undefined) {
    serverUrl = parseHttpUrl(c, 'IDENTITY_SERVER_URL', rawUrl);
    if (serverUrl && !isSecureUpstream(serverUrl, localInsecure)) {
      c.report('IDENTITY_SERVER_URL', 'must use https (plain http only for a loopback host with LOCAL_INSECURE=true)');
      serverUrl = undefined;
    }
    valid &&= serverUrl !== undefined;
  }

  let metadataFile: string | undefined;
  if (rawFile !== undefined) {
    metadataFile = resolve(c.cwd, rawFile);
    const issuer = checkMetadataFile(c, metadataFile, localInsecure);
    valid &&= issuer !== undefined;
    // The Heroku proxy's own template sets both: the file for the endpoints, the URL naming the
    // same provider. Both naming the same issuer is that case; two different providers is a
    // mistake, and guessing which one was meant would send users to the wrong login.
    if (issuer !== undefined && serverUrl !== undefined) {
      if (sameIssuer(issuer, serverUrl)) {
        serverUrl = undefined;
      } else {
        c.report(
          'IDENTITY_SERVER_METADATA_FILE',
          `names issuer ${issuer}, not IDENTITY_SERVER_URL ${serverUrl.href}: set only one of them, or both to the same provider`,
        );
        valid = false;
      }
    }
  }

  const scope = parseScope(c, 'IDENTITY_SCOPE', rawScope ?? DEFAULT_IDENTITY_SCOPE);
  if (!valid || !scope || clientId === undefined) return undefined;
  return { serverUrl, metadataFile, clientId, clientSecret, scope: scope.join(' ') };
}

/** Issuers compared as URLs, ignoring a trailing slash (Heroku Identity's metadata has one). */
function sameIssuer(issuer: string, url: URL): boolean {
  const strip = (href: string) => href.replace(/\/+$/, '');
  const parsed = tryUrl(issuer);
  return parsed !== undefined && strip(parsed.href) === strip(url.href);
}

/** The file's issuer when it is usable metadata; every defect reported. */
function checkMetadataFile(c: Collector, path: string, localInsecure: boolean): string | undefined {
  const report = (problem: string) => c.report('IDENTITY_SERVER_METADATA_FILE', problem);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    report(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
  const metadata = parseJson(text);
  if (!isObject(metadata)) {
    report(`${path} is not a JSON object`);
    return undefined;
  }
  let valid = true;
  if (typeof metadata.issuer !== 'string' || metadata.issuer === '') {
    report(`${path} has no "issuer"`);
    valid = false;
  }
  for (const field of ['authorization_endpoint', 'token_endpoint']) {
    const url = typeof metadata[field] === 'string' ? tryUrl(metadata[field]) : undefined;
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      report(`${path} has no "${field}" URL`);
      valid = false;
    } else if (!isSecureUpstream(url, localInsecure)) {
      // R24: the same rule as IDENTITY_SERVER_URL; the token endpoint receives the client secret.
      report(`${path}: "${field}" must use https (plain http only for a loopback host with LOCAL_INSECURE=true)`);
      valid = false;
    }
  }
  return valid ? (metadata.issuer as string) : undefined;
}

/**
 * IDENTITY_CALLBACK_PATH: the path part of the redirect URI registered at the identity provider.
 * It is served by this proxy, so it must be a plain path that no other route of ours answers.
 */
export function checkCallbackPath(source: Source, mcpPath: string | undefined): Checked<string> {
  const c = new Collector(source);
  const name = 'IDENTITY_CALLBACK_PATH';
  const raw = c.read(name);
  if (raw === undefined || raw === DEFAULT_CALLBACK_PATH) return c.done(DEFAULT_CALLBACK_PATH);
  const problem = callbackPathProblem(raw, mcpPath);
  if (problem !== undefined) c.report(name, problem);
  return c.done(problem === undefined ? raw.replace(/\/+$/, '') : DEFAULT_CALLBACK_PATH);
}

function callbackPathProblem(raw: string, mcpPath: string | undefined): string | undefined {
  if (!raw.startsWith('/') || raw.startsWith('//')) return 'must be a path starting with a single /';
  if (/[?#]/.test(raw)) return 'must be a path alone, without a query or fragment';
  // Characters a URL path carries unencoded (RFC 3986 pchar, no percent-escapes): what is
  // registered at the provider must compare byte for byte with what we send.
  if (!/^(\/[\w\-.~!$&'()*+,;=:@]+)+\/?$/.test(raw))
    return 'must be a path of plain URL characters, without empty or encoded segments';
  const path = raw.replace(/\/+$/, '');
  const reserved = reservedPrefixOf(path);
  if (reserved) return `collides with the proxy's own ${reserved} routes`;
  if (mcpPath !== undefined && overlaps(path, mcpPath)) return `collides with the MCP endpoint ${mcpPath}`;
  return undefined;
}
