import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { HttpError } from './errors.ts';
import { isLoopbackHost } from './loopback.ts';

/**
 * Every request this server makes to a URL it did not choose itself (R24): Client ID Metadata
 * Documents, `jwks_uri` and `sector_identifier_uri` (all named by whoever sends an authorization
 * or registration request), and the identity provider's discovery document and every endpoint it
 * lists. Each is a server-side request forgery waiting to happen unless held to these rules:
 * https only (plain http to loopback for local development alone); no special-use address
 * (private networks, loopback, link-local and with it the cloud metadata service), checked
 * before any connection and on exactly the addresses connected to; redirects handed back, never
 * followed; bodies and time capped.
 */

/** A fetch refused by our policy, before or instead of any connection. */
export class OutboundFetchRefused extends HttpError {
  constructor(reason: string) {
    // Whoever named the URL (a client's document, the provider's metadata) is at fault; the
    // reason names addresses of our network, so it is the operator's to read, not the client's.
    super({ status: 502, code: 'OUTBOUND_FETCH_REFUSED', message: reason, expose: false });
  }
}

// --- Addresses ----------------------------------------------------------------------------------

/**
 * Special-use ranges (IANA IPv4 and IPv6 Special-Purpose Address Registries) an outbound fetch
 * must never reach: private networks and cloud metadata endpoints (169.254.169.254) above all.
 * IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo) are refused whole, since
 * they are ways back into the IPv4 ranges. The first range that holds an address names its kind.
 */
const SPECIAL_USE: readonly (readonly [cidr: string, kind: string])[] = [
  ['0.0.0.0/8', '"this network"'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared (CGNAT)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'IETF protocol'],
  ['192.0.2.0/24', 'documentation'],
  ['192.31.196.0/24', 'AS112'],
  ['192.52.193.0/24', 'AMT'],
  ['192.88.99.0/24', '6to4 relay'],
  ['192.168.0.0/16', 'private'],
  ['192.175.48.0/24', 'AS112'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
  ['::1/128', 'loopback'],
  ['::/128', 'unspecified'],
  ['::ffff:0:0/96', 'IPv4-mapped'],
  ['::/96', 'IPv4-compatible'],
  ['64:ff9b::/96', 'NAT64'],
  ['64:ff9b:1::/48', 'NAT64'],
  ['100::/64', 'discard-only'],
  ['2001::/23', 'IETF protocol (Teredo)'],
  ['2001:db8::/32', 'documentation'],
  ['2002::/16', '6to4'],
  ['2620:4f:8000::/48', 'AS112'],
  ['3fff::/20', 'documentation'],
  ['5f00::/16', 'SRv6'],
  ['fc00::/7', 'unique-local'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local'],
  ['ff00::/8', 'multicast'],
];

interface Range {
  readonly list: BlockList;
  readonly kind: string;
  readonly type: 'ipv4' | 'ipv6';
}

function range(cidr: string, kind: string): Range {
  const [prefix = '', bits] = cidr.split('/');
  const type = isIP(prefix) === 4 ? 'ipv4' : 'ipv6';
  const list = new BlockList();
  list.addSubnet(prefix, Number(bits), type);
  return { list, kind, type };
}

const RANGES = SPECIAL_USE.map(([cidr, kind]) => range(cidr, kind));
const V4 = RANGES.filter((r) => r.type === 'ipv4');
const V6 = RANGES.filter((r) => r.type === 'ipv6');
/** 2000::/3: the only IPv6 addresses in use on the public internet. */
const GLOBAL_UNICAST = range('2000::/3', 'global unicast').list;

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
function bundledAgent(): AgentConstructor {
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
function checkedDispatchers(
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

// --- URLs ---------------------------------------------------------------------------------------

export interface OutboundPolicy {
  /**
   * LOCAL_INSECURE or the embedded development IdP (configuration refuses both in production):
   * loopback addresses may be fetched, and on a loopback host name self-signed certificates are
   * accepted. Never link-local, private or mapped addresses.
   */
  readonly allowLoopback: boolean;
  /** Plain http to a loopback host too, with `allowLoopback` (a local identity provider). */
  readonly plainHttpOnLoopback?: boolean;
}

function addressPolicy(policy: OutboundPolicy): AddressPolicy {
  return { publicAddresses: true, loopback: policy.allowLoopback };
}

/** `[::1]` → `::1`; undefined when the URL host is a name. URL already canonicalises `0x7f.1`. */
function ipLiteral(hostname: string): string | undefined {
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  return isIP(bare) ? bare : undefined;
}

/**
 * Why `url` may not be fetched, decided before any name resolution or connection; undefined when
 * it may (a host name is then checked again once resolved, in the connection's `lookup`).
 */
export function outboundUrlRefusal(url: URL, policy: OutboundPolicy): string | undefined {
  if (url.protocol === 'http:' && policy.plainHttpOnLoopback) {
    if (!policy.allowLoopback || !isLoopbackHost(url.hostname)) {
      return `plain http (${url.origin}) is allowed only for a loopback host with LOCAL_INSECURE=true`;
    }
  } else if (url.protocol !== 'https:') {
    return `only https URLs are fetched, not ${url.protocol}`;
  }
  // A literal never reaches the connection's `lookup` (net.connect skips it), so it is checked here.
  const literal = ipLiteral(url.hostname);
  return literal ? addressRefusal(literal, addressPolicy(policy)) : undefined;
}

// --- The fetch ----------------------------------------------------------------------------------

/** Responses that may not carry a body (Fetch standard), so cannot be rebuilt with one. */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

export type OutboundFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface CheckedFetchOptions extends OutboundPolicy {
  /** Ceiling on one request, body included, milliseconds. */
  readonly timeoutMs: number;
  /** What a body may weigh, decoded (a gzip bomb counts in full). */
  readonly maxBytes: number;
  /**
   * Whether the body of an answer other than 200 is read: an identity provider's 400
   * `invalid_grant` is what its client branches on; oidc-provider refuses any other status from
   * a client's URL unread, so there the body is dropped without reading a byte of it.
   */
  readonly keepErrorBodies: boolean;
  /** Test seam: what performs the request once the URL passed the checks. */
  readonly fetchImpl?: typeof fetch;
  /** Test seam: the name resolution whose answers are checked. */
  readonly resolve?: Resolver;
}

/**
 * A `fetch` held to the rules above. Its answer's body is already read (within `maxBytes`) and
 * decoded; a 3xx is handed back as it is, its Location never visited. Refusals throw
 * OutboundFetchRefused, which the caller logs in its own words; network failures throw what
 * fetch threw.
 */
export function createCheckedFetch(options: CheckedFetchOptions): OutboundFetch {
  const { timeoutMs, maxBytes, keepErrorBodies, fetchImpl = fetch, resolve = systemResolver } = options;
  // Development serves documents and the IdP over https from 127.0.0.1, self-signed.
  const dispatcherFor = checkedDispatchers(addressPolicy(options), options.allowLoopback, resolve);

  return async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const refusal = outboundUrlRefusal(url, options);
    if (refusal) throw new OutboundFetchRefused(refusal);

    const response = await fetchThrough(fetchImpl, url, init, dispatcherFor(url.hostname), timeoutMs);
    if (response.status !== 200 && !keepErrorBodies) {
      await response.body?.cancel();
      return rebuildResponse(response, Buffer.alloc(0));
    }
    return rebuildResponse(response, await readCapped(response, maxBytes));
  };
}

/** Where a fetch went, for logs: never the query, which may carry anything. */
export function fetchedWhere(input: string | URL | Request): string {
  const url = new URL(input instanceof Request ? input.url : String(input));
  return `${url.origin}${url.pathname}`;
}

/**
 * One request through a checked dispatcher: a redirect is handed back, never followed; the
 * caller's signal and `timeoutMs` both end it; a refusal by the address check surfaces as the
 * OutboundFetchRefused itself, not as the TypeError fetch wraps it in.
 */
async function fetchThrough(
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

/** The body, or a refusal once it exceeds `limit` bytes (decoded: a gzip bomb counts in full). */
async function readCapped(response: Response, limit: number): Promise<Buffer> {
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

/** `response` with `body` in place of its own: already decoded, perhaps re-serialised. */
export function rebuildResponse(response: Response, body: Buffer): Response {
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(NULL_BODY_STATUSES.has(response.status) ? null : body, {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}
