/**
 * A host on this machine: `localhost`, the whole 127.0.0.0/8 and `[::1]` (URL keeps IPv6
 * brackets). Where plain http or self-signed certificates are tolerated for local work
 * (LOCAL_INSECURE), this is the only place they are.
 */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

/**
 * The loopback redirect hosts of RFC 8252 §7.3, exactly as oidc-provider recognises them for
 * native clients (port ignored when matching). Narrower than `isLoopbackHost` on purpose: it must
 * agree with oidc-provider's own redirect matching.
 */
export const LOOPBACK_REDIRECT_HOSTS: ReadonlySet<string> = new Set(['localhost', '127.0.0.1', '[::1]']);
