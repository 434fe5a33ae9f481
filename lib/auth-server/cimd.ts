import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { errors, type Configuration } from 'oidc-provider';
import type { Config } from '../config/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { effectiveApplicationType } from './client-policy.ts';
import { isLoopbackHost } from '../http/loopback.ts';

/**
 * Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, SPEC R11) and the
 * one `fetch` oidc-provider uses for every URL it is handed by a client: CIMD client_ids,
 * `jwks_uri`, `sector_identifier_uri` (R24). Each of those URLs is chosen by whoever sends an
 * authorization or registration request, so each fetch is a server-side request forgery waiting
 * to happen unless it is held to the rules below.
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

/** A fetch refused by our policy, before or instead of any connection. */
export class OutboundFetchRefused extends Error {
  readonly code = 'OUTBOUND_FETCH_REFUSED';
  constructor(message: string) {
    super(message);
    this.name = 'OutboundFetchRefused';
  }
}

// --- Addresses ----------------------------------------------------------------------------------

interface Range {
  readonly prefix: string;
  readonly bits: number;
  readonly kind: string;
}

/**
 * Special-use ranges (IANA IPv4 and IPv6 Special-Purpose Address Registries) an outbound fetch
 * must never reach: private networks and cloud metadata endpoints (169.254.169.254) above all.
 * IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo) are refused whole, since
 * they are ways back into the IPv4 ranges.
 */
const IPV4_RANGES: readonly Range[] = [
  { prefix: '0.0.0.0', bits: 8, kind: '"this network"' },
  { prefix: '10.0.0.0', bits: 8, kind: 'private' },
  { prefix: '100.64.0.0', bits: 10, kind: 'shared (CGNAT)' },
  { prefix: '127.0.0.0', bits: 8, kind: 'loopback' },
  { prefix: '169.254.0.0', bits: 16, kind: 'link-local' },
  { prefix: '172.16.0.0', bits: 12, kind: 'private' },
  { prefix: '192.0.0.0', bits: 24, kind: 'IETF protocol' },
  { prefix: '192.0.2.0', bits: 24, kind: 'documentation' },
  { prefix: '192.31.196.0', bits: 24, kind: 'AS112' },
  { prefix: '192.52.193.0', bits: 24, kind: 'AMT' },
  { prefix: '192.88.99.0', bits: 24, kind: '6to4 relay' },
  { prefix: '192.168.0.0', bits: 16, kind: 'private' },
  { prefix: '192.175.48.0', bits: 24, kind: 'AS112' },
  { prefix: '198.18.0.0', bits: 15, kind: 'benchmarking' },
  { prefix: '198.51.100.0', bits: 24, kind: 'documentation' },
  { prefix: '203.0.113.0', bits: 24, kind: 'documentation' },
  { prefix: '224.0.0.0', bits: 4, kind: 'multicast' },
  { prefix: '240.0.0.0', bits: 4, kind: 'reserved' },
];

const IPV6_RANGES: readonly Range[] = [
  { prefix: '::1', bits: 128, kind: 'loopback' },
  { prefix: '::', bits: 128, kind: 'unspecified' },
  { prefix: '::ffff:0:0', bits: 96, kind: 'IPv4-mapped' },
  { prefix: '::', bits: 96, kind: 'IPv4-compatible' },
  { prefix: '64:ff9b::', bits: 96, kind: 'NAT64' },
  { prefix: '64:ff9b:1::', bits: 48, kind: 'NAT64' },
  { prefix: '100::', bits: 64, kind: 'discard-only' },
  { prefix: '2001::', bits: 23, kind: 'IETF protocol (Teredo)' },
  { prefix: '2001:db8::', bits: 32, kind: 'documentation' },
  { prefix: '2002::', bits: 16, kind: '6to4' },
  { prefix: '2620:4f:8000::', bits: 48, kind: 'AS112' },
  { prefix: '3fff::', bits: 20, kind: 'documentation' },
  { prefix: '5f00::', bits: 16, kind: 'SRv6' },
  { prefix: 'fc00::', bits: 7, kind: 'unique-local' },
  { prefix: 'fe80::', bits: 10, kind: 'link-local' },
  { prefix: 'fec0::', bits: 10, kind: 'site-local' },
  { prefix: 'ff00::', bits: 8, kind: 'multicast' },
];

function blockLists(ranges: readonly Range[], type: 'ipv4' | 'ipv6') {
  return ranges.map((range) => {
    const list = new BlockList();
    list.addSubnet(range.prefix, range.bits, type);
    return { list, kind: range.kind };
  });
}

const V4 = blockLists(IPV4_RANGES, 'ipv4');
const V6 = blockLists(IPV6_RANGES, 'ipv6');
/** 2000::/3: the only IPv6 addresses in use on the public internet. */
const GLOBAL_UNICAST = blockLists([{ prefix: '2000::', bits: 3, kind: 'global unicast' }], 'ipv6')[0]!.list;

export interface AddressPolicy {
  /** Public (globally routed) addresses. */
  readonly publicAddresses: boolean;
  /** 127.0.0.0/8 and ::1 only: LOCAL_INSECURE development. Never link-local, private or mapped. */
  readonly loopback: boolean;
}

/** Why `address` may not be connected to under `policy`, or undefined when it may. */
export function addressRefusal(address: string, policy: AddressPolicy): string | undefined {
  const plain = address.split('%')[0] ?? '';
  const family = isIP(plain);
  if (family === 0) return `${address} is not an IP address`;
  // IPv6 addresses are matched against IPv6 ranges only: BlockList would otherwise match
  // ::ffff:127.0.0.1 against 127.0.0.0/8 and call an IPv4-mapped address loopback.
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const special = (family === 4 ? V4 : V6).find(({ list }) => list.check(plain, type));
  if (special) {
    if (special.kind === 'loopback' && policy.loopback) return undefined;
    return `${plain} is a special-use address (${special.kind})`;
  }
  if (family === 6 && !GLOBAL_UNICAST.check(plain, 'ipv6'))
    return `${plain} is a special-use address (not global unicast)`;
  return policy.publicAddresses ? undefined : `${plain} is not a loopback address`;
}

/** `[::1]` → `::1`; undefined when the URL host is a name. URL already canonicalises `0x7f.1`. */
function ipLiteral(hostname: string): string | undefined {
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  return isIP(bare) ? bare : undefined;
}

export type Resolver = (
  hostname: string,
  options: LookupAllOptions,
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

const systemResolver: Resolver = (hostname, options, callback) => dnsLookup(hostname, options, callback);

/**
 * The `lookup` the connection uses: the name is resolved once, every address is checked, and
 * the socket connects to exactly those addresses, so there is no window between check and
 * connect for a DNS answer to change (rebinding). One refused address refuses the name: a host
 * publishing a private address next to a public one is not one to trust.
 */
export function guardedLookup(policy: AddressPolicy, resolve: Resolver = systemResolver): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '');
      for (const { address } of addresses) {
        const refusal = addressRefusal(address, policy);
        if (refusal) return callback(new OutboundFetchRefused(`${hostname} resolves to ${address}: ${refusal}`), '');
      }
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '');
      if (options.all) return callback(null, addresses);
      return callback(null, first.address, first.family);
    });
  };
}

// --- The fetch ----------------------------------------------------------------------------------

type Dispatcher = NonNullable<RequestInit['dispatcher']>;
interface AgentOptions {
  connect: { lookup: LookupFunction; rejectUnauthorized?: boolean };
}
type AgentConstructor = new (options: AgentOptions) => Dispatcher;

/**
 * Node bundles undici for `fetch` without exporting it; the global dispatcher it creates on first
 * use is an undici Agent, so its constructor is an Agent that this Node's fetch understands
 * (oidc-provider's fetch_request.js finds it the same way). Without it no fetch could be checked,
 * so this fails at start-up rather than fetching unchecked, as oidc-provider would.
 */
export function bundledAgent(): AgentConstructor {
  void globalThis.Response;
  const slots = globalThis as unknown as Record<symbol, { constructor?: unknown } | undefined>;
  const global = slots[Symbol.for('undici.globalDispatcher.2')] ?? slots[Symbol.for('undici.globalDispatcher.1')];
  const constructor = global?.constructor;
  if (typeof constructor !== 'function' || constructor.name !== 'Agent') {
    throw new Error('cannot find the undici Agent behind fetch: outbound fetches could not be address-checked');
  }
  return constructor as AgentConstructor;
}

/**
 * What carries a checked fetch to a host: an agent whose connections resolve through `policy`;
 * and where `lenientLoopback` (development only), for a loopback host name, an agent that accepts
 * self-signed certificates but can only ever reach loopback addresses.
 */
export function checkedDispatchers(
  policy: AddressPolicy,
  lenientLoopback: boolean,
  resolve: Resolver = systemResolver,
): (hostname: string) => Dispatcher {
  const Agent = bundledAgent();
  const verified = new Agent({ connect: { lookup: guardedLookup(policy, resolve) } });
  const loopbackOnly = lenientLoopback
    ? new Agent({
        connect: {
          lookup: guardedLookup({ publicAddresses: false, loopback: true }, resolve),
          rejectUnauthorized: false,
        },
      })
    : undefined;
  return (hostname) => (loopbackOnly && isLoopbackHost(hostname) ? loopbackOnly : verified);
}

/**
 * One request through a checked dispatcher: a redirect is handed back, never followed; the
 * caller's signal and `timeoutMs` both end it; a refusal by the address check surfaces as the
 * OutboundFetchRefused itself, not as the TypeError fetch wraps it in.
 */
export async function fetchThrough(
  fetchImpl: typeof fetch,
  url: URL,
  init: RequestInit,
  dispatcher: Dispatcher,
  timeoutMs: number,
): Promise<Response> {
  const timeout = AbortSignal.timeout(timeoutMs);
  try {
    return await fetchImpl(url, {
      ...init,
      redirect: 'manual',
      signal: init.signal ? AbortSignal.any([init.signal, timeout]) : timeout,
      dispatcher,
    });
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause;
    throw cause instanceof OutboundFetchRefused ? cause : error;
  }
}

/** Responses that may not carry a body (Fetch standard), so cannot be rebuilt with one. */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

export type OutboundFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface OutboundFetchOptions {
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
 * oidc-provider's `configuration.fetch`. https only; the host's address checked before any
 * connection (an IP literal here, a name in the connection's `lookup`); redirects never followed
 * (oidc-provider refuses anything but 200 from a CIMD URL); bodies capped at FETCH_MAX_BYTES and
 * Client ID Metadata Documents at CIMD_MAX_BYTES; the whole exchange capped in time.
 *
 * oidc-provider passes a dispatcher of its own that checks the peer address only once connected
 * (and so would refuse loopback in development too); ours replaces it and refuses before any
 * connection is attempted.
 */
export function createOutboundFetch({
  allowLoopback,
  log,
  fetchImpl = fetch,
  resolve = systemResolver,
}: OutboundFetchOptions): OutboundFetch {
  const policy: AddressPolicy = { publicAddresses: true, loopback: allowLoopback };
  // Development tests serve documents over https from 127.0.0.1 with a self-signed certificate.
  const dispatcherFor = checkedDispatchers(policy, allowLoopback, resolve);

  return async (input, init = {}) => {
    const raw = input instanceof Request ? input.url : String(input);
    const url = new URL(raw);
    const where = `${url.origin}${url.pathname}`;
    const refuse = (reason: string): never => {
      log.info('outbound fetch refused', { url: where, reason });
      throw new OutboundFetchRefused(reason);
    };

    if (url.protocol !== 'https:') refuse(`only https URLs are fetched, not ${url.protocol}`);
    const literal = ipLiteral(url.hostname);
    if (literal) {
      const refusal = addressRefusal(literal, policy);
      if (refusal) refuse(refusal);
    }

    let response: Response;
    try {
      response = await fetchThrough(fetchImpl, url, init, dispatcherFor(url.hostname), FETCH_TIMEOUT_MS);
    } catch (error) {
      if (error instanceof OutboundFetchRefused) refuse(error.message);
      const cause = (error as { cause?: unknown }).cause;
      // oidc-provider shows clients a generic "fetch failed" (telling timeouts from refused
      // connections would make it a port scanner); the operator reads why here.
      log.info('outbound fetch failed', { url: where, error: cause instanceof Error ? cause.message : error });
      throw error;
    }

    if (response.status !== 200) {
      // A 3xx is handed back as it is, never followed: its Location could be anywhere. The body
      // is not read at all: every caller refuses anything but 200.
      await response.body?.cancel();
      log.info('outbound fetch not answered with 200', { url: where, status: response.status });
      const empty = NULL_BODY_STATUSES.has(response.status) ? null : '';
      return new Response(empty, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    }

    const body = await readCapped(response, FETCH_MAX_BYTES).catch((error: unknown) => {
      if (error instanceof OutboundFetchRefused) refuse(error.message);
      throw error;
    });
    const document = clientMetadataDocument(raw, body);
    if (!document) return rebuild(response, body);
    if (body.byteLength > CIMD_MAX_BYTES) {
      refuse(`client metadata document is ${body.byteLength} bytes, more than ${CIMD_MAX_BYTES}`);
    }
    const adapted = adaptClientMetadata(document);
    return rebuild(response, adapted === document ? body : Buffer.from(JSON.stringify(adapted)));
  };
}

/** The body, or a refusal once it exceeds `limit` bytes (decoded: a gzip bomb counts in full). */
export async function readCapped(response: Response, limit: number): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length'));
  if (declared > limit) {
    await response.body?.cancel();
    throw new OutboundFetchRefused(`response is ${declared} bytes, more than ${limit}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength;
    if (size > limit) {
      await response.body?.cancel().catch(() => undefined);
      throw new OutboundFetchRefused(`response is more than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
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

function rebuild(response: Response, body: Buffer): Response {
  const headers = new Headers(response.headers);
  // The body is already decoded and may have been re-serialised.
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
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
    fetch: createOutboundFetch({ allowLoopback: config.localInsecure, log }),
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
