import type { Response } from 'express';
import { FAVICON_SVG, PAGE_CSS } from '../views/assets.ts';

/**
 * The development identity provider's pages, in the proxy's style so the whole login looks like
 * one journey — while saying plainly whose page it is.
 */
export function loginPage(uid: string, login: string, error?: string): string {
  const invalid = error ? ' aria-invalid="true" aria-describedby="login-error"' : '';
  return page(
    'Sign in',
    `<h1>Sign in</h1>
<p class="notice">Development identity provider: any user name is accepted. It exists for local development only.</p>
${error ? `<p class="alert" id="login-error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${encodeURIComponent(uid)}/login">
  <label for="login">User name</label>
  <input type="text" id="login" name="login" value="${escapeHtml(login)}" autocomplete="username" autofocus required${invalid}>
  <div class="actions"><button type="submit" class="primary">Sign in</button></div>
</form>`,
  );
}

/** The icon inline: this server has no other page to serve it from, and no favicon 404s. */
const ICON = `data:image/svg+xml,${encodeURIComponent(FAVICON_SVG)}`;

/** The proxy's page style (lib/views/assets.ts), so the whole login looks like one journey. */
export function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · Development identity provider</title>
<link rel="icon" href="${ICON}">
<style>${PAGE_CSS}</style></head>
<body>
<div class="page">
<header class="brand"><img src="${ICON}" alt=""><span>Development identity provider</span></header>
<main class="card">
${body}
</main>
</div>
</body>
</html>`;
}

/** Same policy as the proxy's pages: no script, no framing, nothing from elsewhere. */
export function sendPage(res: Response, status: number, html: string): void {
  res
    .status(status)
    .set({
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'no-store',
      'Content-Security-Policy':
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'",
      'X-Frame-Options': 'DENY',
    })
    .send(html);
}

export function expiredPage(): string {
  return page(
    'Sign-in expired',
    '<h1>This sign-in has expired</h1><p>Go back to the application and start the connection again.</p>',
  );
}

export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}
