import type { Store } from '../store/types.ts';
import { LOOPBACK_REDIRECT_HOSTS } from '../http/loopback.ts';

/**
 * Remembered consent (R19): which redirect URIs of a client a user has agreed to send their
 * login to. Consent is what stops the confused deputy — our one static upstream client acting for
 * any MCP client that registers itself — so it is kept per user AND per client AND per redirect
 * URI: a new client, or a known client sending the code somewhere new, asks again.
 *
 * Only the consent page and a completed upstream login write here; nothing a client sends (at
 * registration, in a CIMD document or in an authorization request) is read into it.
 */
export interface ConsentRegistry {
  has(accountId: string, clientId: string, redirectUri: string): Promise<boolean>;
  /** Adds the redirect URI and restarts the record's lifetime. */
  record(accountId: string, clientId: string, redirectUri: string): Promise<void>;
}

/**
 * One year, restarted at every completed login: a client in use never asks twice, one unused for
 * a year asks again. Longer than a grant (30 days) on purpose — a grant expiring is a token
 * lifetime decision, not a reason to doubt the user's choice of application.
 */
const CONSENT_TTL = 365 * 24 * 60 * 60;

/**
 * Bounds a record's size. A client with a new redirect URI per login (per-connector callbacks)
 * would otherwise grow it forever; the oldest URIs fall out and ask again.
 */
const MAX_REDIRECT_URIS = 50;

interface ConsentRecord {
  redirectUris: string[];
}

// Each part percent-encoded: account ids and CIMD client ids (`https://…`) may contain `:`, and
// without it `a:b` + `c` and `a` + `b:c` would share a key.
export function consentKey(accountId: string, clientId: string): string {
  return `consent:${encodeURIComponent(accountId)}:${encodeURIComponent(clientId)}`;
}

/**
 * The redirect URI as consent sees it. Native clients listen on a random loopback port per login
 * (RFC 8252 §7.3; VS Code, Codex); oidc-provider already treats those as one registered URI, and
 * asking again for every port would train users to click through the page. Everything else is
 * compared exactly, as redirect URIs are (R16).
 */
export function consentRedirectUri(redirectUri: string): string {
  const url = URL.parse(redirectUri);
  if (!url || url.protocol !== 'http:' || !LOOPBACK_REDIRECT_HOSTS.has(url.hostname)) return redirectUri;
  url.port = '';
  return url.href;
}

function parse(raw: string | undefined): ConsentRecord {
  if (!raw) return { redirectUris: [] };
  try {
    const value = JSON.parse(raw) as Partial<ConsentRecord>;
    return {
      redirectUris: Array.isArray(value.redirectUris) ? value.redirectUris.filter((u) => typeof u === 'string') : [],
    };
  } catch {
    // A damaged record costs one more look at the consent page, never a login.
    return { redirectUris: [] };
  }
}

export function createConsentRegistry(store: Store): ConsentRegistry {
  return {
    async has(accountId, clientId, redirectUri) {
      const record = parse(await store.get(consentKey(accountId, clientId)));
      return record.redirectUris.includes(consentRedirectUri(redirectUri));
    },
    async record(accountId, clientId, redirectUri) {
      const key = consentKey(accountId, clientId);
      const uri = consentRedirectUri(redirectUri);
      // Read-modify-write without a lock: two logins of one user at one client finishing in the
      // same instant may lose one URI, which only means that URI asks again next time.
      const record = parse(await store.get(key));
      const redirectUris = [...record.redirectUris.filter((u) => u !== uri), uri].slice(-MAX_REDIRECT_URIS);
      await store.set(key, JSON.stringify({ redirectUris } satisfies ConsentRecord), CONSENT_TTL);
    },
  };
}
