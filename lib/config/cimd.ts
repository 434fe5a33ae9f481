import { isIP } from 'node:net';
import { Collector, type Checked, type Source } from './collector.ts';
import { tryUrl } from './parse.ts';
import type { CimdConfig } from './types.ts';

/** CIMD_ALLOWED_HOSTS: which hosts may serve Client ID Metadata Documents. */
export function checkCimd(source: Source): Checked<CimdConfig | undefined> {
  const c = new Collector(source);
  const allowedHosts = c.readList('CIMD_ALLOWED_HOSTS', (entry) => {
    const problem = hostNameProblem(entry);
    return problem === undefined ? { value: hostName(entry) } : { problem };
  });
  return c.done(allowedHosts === undefined ? undefined : { allowedHosts });
}

/** RFC 1123 labels, after IDNA mapping: letters, digits, inner hyphens, 1–63 characters each. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * CIMD_ALLOWED_HOSTS is compared with the host of a client_id URL, nothing else: a scheme, port
 * or path in an entry would suggest a finer match than the one made, so such entries are refused
 * rather than trimmed.
 */
function hostNameProblem(entry: string): string | undefined {
  if (entry.includes('://') || /[/:@?#\\]/.test(entry)) {
    return 'is not a host name: give the host alone, without scheme, port or path';
  }
  if (entry.includes('*')) return 'has a wildcard: list each host name';
  if (isIP(entry) !== 0 || /^[\d.]+$/.test(entry)) {
    return 'is an IP address: client_id metadata documents are only fetched by host name';
  }
  if (!HOST_NAME.test(hostName(entry))) return 'is not a valid host name';
  return undefined;
}

/** Lower-case, IDNs in punycode: the form `new URL(client_id).hostname` has. */
function hostName(entry: string): string {
  return tryUrl(`https://${entry}/`)?.hostname ?? entry.toLowerCase();
}
