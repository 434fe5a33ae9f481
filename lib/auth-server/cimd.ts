import { errors, type Configuration } from 'oidc-provider';
import type { Config } from '../config/types.ts';
import {
  createCheckedFetch,
  fetchedWhere,
  OutboundFetchRefused,
  rebuildResponse,
  type OutboundFetch,
  type Resolver,
} from '../http/outbound.ts';
import type { Logger } from '../telemetry/log.ts';
import { effectiveApplicationType } from './client-policy.ts';

/**
 * Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, SPEC R11) and the
 * one `fetch` oidc-provider uses for every URL it is handed by a client: CIMD client_ids,
 * `jwks_uri`, `sector_identifier_uri` (R24), held to the outbound rules of http/outbound.ts.
 */

/** draft-ietf-oauth-client-id-metadata-document §4: AS may cap the size; 5 KiB fits real documents. */
export const CIMD_MAX_BYTES = 5 * 1024;

/** What any outbound fetch may read at most (a JWKS, a sector identifier document). */
export const FETCH_MAX_BYTES = 64 * 1024;

/**
 * Ceiling on the whole request, body included. oidc-provider already aborts each of its fetches
 * after 2.5 s (fetch_request.js); this second signal only matters if that ever changes.
 */
export const FETCH_TIMEOUT_MS = 5_000;

/**
 * Bounds on the cache lifetime a document's Cache-Control max-age / Expires asks for, seconds.
 * The floor keeps a burst of logins (or a document saying `no-cache`) from making us fetch once
 * per request; the ceiling bounds how long a client keeps redirect URIs it has since removed,
 * e.g. after one was compromised. oidc-provider's cache is an in-process LRU of 100 documents.
 */
export const CIMD_CACHE_SECONDS = { min: 60, max: 60 * 60 } as const;

/** oidc-provider's name and version of the experimental feature; a mismatch refuses to start. */
const CIMD_DRAFT = 'draft-02';

export interface ProviderFetchOptions {
  /**
   * LOCAL_INSECURE (development only; configuration refuses it in production): loopback
   * addresses may be fetched, and on a loopback host name self-signed certificates are accepted.
   */
  readonly allowLoopback: boolean;
  readonly log: Logger;
  /** Test seam: what performs the request once the URL passed the checks. */
  readonly fetchImpl?: typeof fetch;
  /** Test seam: the name resolution whose answers are checked. */
  readonly resolve?: Resolver;
}

/**
 * oidc-provider's `configuration.fetch`: the checked outbound fetch (http/outbound.ts), https
 * only, bodies capped at FETCH_MAX_BYTES and Client ID Metadata Documents at CIMD_MAX_BYTES.
 * Redirects are handed back unfollowed, and oidc-provider refuses anything but 200 from a CIMD
 * URL, so no other answer's body is read at all.
 *
 * oidc-provider passes a dispatcher of its own that checks the peer address only once connected
 * (and so would refuse loopback in development too); ours replaces it and refuses before any
 * connection is attempted.
 */
export function createProviderFetch({ allowLoopback, log, fetchImpl, resolve }: ProviderFetchOptions): OutboundFetch {
  const checked = createCheckedFetch({
    allowLoopback,
    timeoutMs: FETCH_TIMEOUT_MS,
    maxBytes: FETCH_MAX_BYTES,
    keepErrorBodies: false,
    fetchImpl,
    resolve,
  });

  return async (input, init) => {
    const where = fetchedWhere(input);
    const refuse = (reason: string): never => {
      log.info('outbound fetch refused', { url: where, reason });
      throw new OutboundFetchRefused(reason);
    };

    let response: Response;
    try {
      response = await checked(input, init);
    } catch (error) {
      if (error instanceof OutboundFetchRefused) refuse(error.message);
      const cause = (error as { cause?: unknown }).cause;
      // oidc-provider shows clients a generic "fetch failed" (telling timeouts from refused
      // connections would make it a port scanner); the operator reads why here.
      log.info('outbound fetch failed', { url: where, error: cause instanceof Error ? cause.message : error });
      throw error;
    }
    if (response.status !== 200) {
      log.info('outbound fetch not answered with 200', { url: where, status: response.status });
      return response;
    }

    const raw = input instanceof Request ? input.url : String(input);
    const body = Buffer.from(await response.arrayBuffer());
    const document = clientMetadataDocument(raw, body);
    if (!document) return rebuildResponse(response, body);
    if (body.byteLength > CIMD_MAX_BYTES) {
      refuse(`client metadata document is ${body.byteLength} bytes, more than ${CIMD_MAX_BYTES}`);
    }
    const adapted = adaptClientMetadata(document);
    return rebuildResponse(response, adapted === document ? body : Buffer.from(JSON.stringify(adapted)));
  };
}

/**
 * A JSON object whose client_id is the URL it came from: that, and only that, is a Client ID
 * Metadata Document (the draft's §4.1 check oidc-provider makes again). A JWKS, a sector
 * identifier document or a document for another client_id is passed on untouched, and the
 * last one refused by oidc-provider.
 */
function clientMetadataDocument(url: string, body: Buffer): Record<string, unknown> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const document = parsed as Record<string, unknown>;
  return document.client_id === url ? document : undefined;
}

/**
 * Our reading of a client's document before oidc-provider validates it: the application type
 * its redirect URIs describe, by the same rule as registered clients (client-policy.ts).
 * Claude Code's document lists `http://localhost/callback` and `http://127.0.0.1/callback`
 * without a port and no application_type (RFC 7591 default: web), then redirects to
 * `http://localhost:<random port>/callback`. RFC 8252 §7.3 says any port is fine for loopback,
 * but oidc-provider allows that for native clients only, so as a web client it would fail on
 * every login. Returns `document` itself when nothing changes.
 */
export function adaptClientMetadata(document: Record<string, unknown>): Record<string, unknown> {
  const applicationType = effectiveApplicationType(document);
  if (applicationType === document.application_type) return document;
  return { ...document, application_type: applicationType };
}

// --- oidc-provider configuration ----------------------------------------------------------------

type Features = NonNullable<Configuration['features']>;

export interface CimdConfiguration {
  readonly fetch: OutboundFetch;
  readonly fetchResponseBodyLimits: NonNullable<Configuration['fetchResponseBodyLimits']>;
  readonly clientIdMetadataDocument: NonNullable<Features['clientIdMetadataDocument']>;
}

/**
 * What provider.ts puts into oidc-provider's configuration: the feature (which also advertises
 * `client_id_metadata_document_supported: true` in discovery), the checked fetch used for every
 * URL oidc-provider fetches (R24), and body limits for each purpose.
 */
export function cimdConfiguration(config: Config, log: Logger): CimdConfiguration {
  const allowedHosts = new Set(config.cimd.allowedHosts);
  return {
    fetch: createProviderFetch({ allowLoopback: config.localInsecure, log }),
    fetchResponseBodyLimits: {
      // CIMD_MAX_BYTES is enforced on the wire by the fetch above; what reaches oidc-provider may
      // have been re-serialised by adaptClientMetadata, so its own check only needs a ceiling.
      'client_id metadata document': FETCH_MAX_BYTES,
      // oidc-provider's default for these is unlimited.
      jwks_uri: FETCH_MAX_BYTES,
      sector_identifier_uri: FETCH_MAX_BYTES,
    },
    clientIdMetadataDocument: {
      enabled: true,
      ack: CIMD_DRAFT,
      cacheDuration: { ...CIMD_CACHE_SECONDS },
      // Runs before anything is fetched (oidc-provider asks only when the document is not cached).
      allowFetch: (_ctx, clientId) => {
        if (allowedHosts.size === 0) return true;
        const host = new URL(clientId).hostname;
        if (allowedHosts.has(host)) return true;
        log.info('client metadata document host not in CIMD_ALLOWED_HOSTS', { host });
        throw new errors.InvalidClient(`client_id metadata documents from ${host} are not accepted by this server`);
      },
    },
  };
}
