import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ejs from 'ejs';
import type { Response } from 'express';

const BUILT_IN = fileURLToPath(new URL('.', import.meta.url));

export type ViewName = 'confirm-login' | 'error';

export interface Views {
  /** Renders `<name>.ejs` inside `_layout.ejs` and sends it with headers that forbid framing. */
  send(res: Response, status: number, name: ViewName, locals: Record<string, unknown>): Promise<void>;
  render(name: ViewName, locals: Record<string, unknown>): Promise<string>;
}

/**
 * EJS views an owner can replace file by file: a template found in OIDC_PROVIDER_VIEWS_PATH wins,
 * any other comes from the built-in set. Locals are escaped by `<%= %>`; templates must not use
 * `<%-` for anything a client supplied (client name, redirect URI).
 */
export function createViews(overridePath: string | undefined): Views {
  const resolve = (file: string): string => {
    if (overridePath) {
      const candidate = join(overridePath, file);
      if (existsSync(candidate)) return candidate;
    }
    return join(BUILT_IN, file);
  };

  const render = async (name: ViewName, locals: Record<string, unknown>): Promise<string> => {
    const body = await ejs.renderFile(resolve(`${name}.ejs`), locals, { async: true });
    return ejs.renderFile(resolve('_layout.ejs'), { title: 'Sign in', ...locals, body }, { async: true });
  };

  return {
    render,
    async send(res, status, name, locals) {
      const html = await render(name, locals);
      // The consent page is what a clickjacking attack would frame (R19): no framing, no
      // third-party resources, and never cached with a CSRF token in it. No `form-action`:
      // browsers apply it to the redirects that follow a submission, and those go to the
      // upstream IdP and to clients' private-use schemes (`cursor://…`).
      res
        .status(status)
        .set({
          'Content-Type': 'text/html; charset=utf-8',
          'Cache-Control': 'no-store',
          'Content-Security-Policy':
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
          'X-Frame-Options': 'DENY',
          'Referrer-Policy': 'no-referrer',
          'X-Content-Type-Options': 'nosniff',
        })
        .send(html);
    },
  };
}
