import { grantSecretOf } from '../../lib/vault/index.ts';
import type { Browser } from './browser.ts';
import type { TokenResponse } from './oauth.ts';

/**
 * The secret values a scenario meets, on either side of the proxy, for tests that look for them
 * where they must never be: log lines (no-secrets-in-logs), exported traces (telemetry.e2e).
 */

/** A value that must appear in no line, and what it is (the failure message names it, not the value). */
export class Secrets {
  readonly #values = new Map<string, string>();

  add(label: string, value: unknown): void {
    // Short values (a cookie deleted with an empty value, a `1`) would match by accident.
    if (typeof value !== 'string' || value.length < 16) return;
    if (!this.#values.has(value)) this.#values.set(value, label);
  }

  addToken(label: string, value: unknown): void {
    this.add(label, value);
    // Our codes and tokens carry their grant's secret G (lib/vault/README.md): half a vault key.
    if (typeof value === 'string') this.add(`grant secret in ${label}`, grantSecretOf(value)?.encode());
  }

  labels(): string[] {
    return [...new Set(this.#values.values())];
  }

  /** Lines holding a secret, with the secret replaced by its label: the report must not leak it either. */
  leaks(lines: readonly string[], labelPrefix: string): string[] {
    const found: string[] = [];
    for (const line of lines) {
      for (const [value, label] of this.#values) {
        if (label.startsWith(labelPrefix) && line.includes(value)) {
          found.push(`${label}: ${line.split(value).join(`<${label}>`)}`);
        }
      }
    }
    return found;
  }
}

/** Every Set-Cookie value the browser receives, from any server, before the jar may drop it. */
export function recordCookies(browser: Browser, secrets: Secrets): void {
  const jar = browser.cookies;
  const store = jar.store.bind(jar);
  jar.store = (url, setCookies) => {
    for (const line of setCookies) {
      const pair = line.split(';')[0] ?? '';
      const eq = pair.indexOf('=');
      if (eq > 0)
        secrets.add(`cookie ${pair.slice(0, eq).trim()} from ${new URL(url).hostname}`, pair.slice(eq + 1).trim());
    }
    store(url, setCookies);
  };
}

export function recordTokens(
  secrets: Secrets,
  label: string,
  body: Partial<TokenResponse> & { id_token?: string },
): void {
  secrets.addToken(`${label} access token`, body.access_token);
  secrets.addToken(`${label} refresh token`, body.refresh_token);
  secrets.add(`${label} id token`, body.id_token);
}
