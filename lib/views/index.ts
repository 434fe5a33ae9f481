import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ejs from 'ejs';
import type { Response } from 'express';
import type { Config } from '../config/types.ts';
import { PAGE_CSS } from './assets.ts';

const BUILT_IN = fileURLToPath(new URL('.', import.meta.url));

/**
 * File names are the contract with owners' replacement views: `_layout.ejs` and
 * `confirm-login.ejs` are the names the Heroku auth proxy used, so its owners' directories keep
 * working (see README "Replacing the pages").
 */
export type ViewName = 'confirm-login' | 'error' | 'home';

/** Where the built-in icon is served (lib/http/home.ts). */
export const FAVICON_PATH = '/favicon.svg';

/** What every page says about whose service this is. */
export interface Brand {
  /** BRANDING_TITLE, else the MCP URL's host. */
  readonly name: string;
  /** BRANDING_FAVICON, else the built-in icon. */
  readonly faviconUrl: string;
}

export function brandOf(config: Pick<Config, 'branding' | 'mcp'>): Brand {
  return {
    name: config.branding.title ?? new URL(config.mcp.resourceUrl).host,
    faviconUrl: config.branding.faviconUrl ?? FAVICON_PATH,
  };
}

const DEFAULT_BRAND: Brand = { name: 'MCP server', faviconUrl: FAVICON_PATH };

/**
 * The pages hold a CSRF token and are what a clickjacking attack would frame (R19): no framing,
 * no script at all, nothing from other origins but the owner's icon, never cached. No
 * `form-action`: browsers apply it to the redirects that follow a submission, and those go to
 * the upstream IdP and to clients' private-use schemes (`cursor://…`). Inline styles stay
 * allowed so that owners' replacement layouts (which carry their CSS inline) keep working.
 */
export function pageHeaders(brand: Brand): Record<string, string> {
  const icon = URL.parse(brand.faviconUrl);
  const imgSrc = icon && (icon.protocol === 'https:' || icon.protocol === 'http:') ? `'self' ${icon.origin}` : "'self'";
  return {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'Content-Security-Policy': `default-src 'none'; style-src 'unsafe-inline'; img-src ${imgSrc}; frame-ancestors 'none'; base-uri 'none'`,
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'X-Content-Type-Options': 'nosniff',
  };
}

export interface Views {
  readonly brand: Brand;
  /** Headers every page is sent with (also by oidc-provider's own error page). */
  readonly headers: Record<string, string>;
  /** Renders `<name>.ejs` inside `_layout.ejs` and sends it with `headers`. */
  send(res: Response, status: number, name: ViewName, locals: Record<string, unknown>): Promise<void>;
  render(name: ViewName, locals: Record<string, unknown>): Promise<string>;
}

/**
 * EJS views an owner can replace file by file: a template found in OIDC_PROVIDER_VIEWS_PATH wins,
 * any other comes from the built-in set. Locals are escaped by `<%= %>`; templates must not use
 * `<%-` for anything a client supplied (client name, redirect URI).
 */
export function createViews(overridePath: string | undefined, brand: Brand = DEFAULT_BRAND): Views {
  const resolve = (file: string): string => {
    if (overridePath) {
      const candidate = join(overridePath, file);
      if (existsSync(candidate)) return candidate;
    }
    return join(BUILT_IN, file);
  };
  const headers = pageHeaders(brand);

  const render = async (name: ViewName, locals: Record<string, unknown>): Promise<string> => {
    // The stylesheet is inlined: a page needs nothing from another origin, nor a second request.
    const all = { title: brand.name, ...locals, brand, css: PAGE_CSS };
    const body = await ejs.renderFile(resolve(`${name}.ejs`), all, { async: true });
    return ejs.renderFile(resolve('_layout.ejs'), { ...all, body }, { async: true });
  };

  return {
    brand,
    headers,
    render,
    async send(res, status, name, locals) {
      const html = await render(name, locals);
      res.status(status).set(headers).send(html);
    },
  };
}
