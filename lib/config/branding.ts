import { isLoopbackHost } from '../http/loopback.ts';
import { Collector, type Checked, type Source } from './collector.ts';
import { tryUrl } from './parse.ts';
import type { BrandingConfig } from './types.ts';

const MAX_TITLE_LENGTH = 200;

/** BRANDING_TITLE and BRANDING_FAVICON, the Heroku proxy's look of the login pages. */
export function checkBranding(source: Source): Checked<BrandingConfig | undefined> {
  const c = new Collector(source);
  let valid = true;

  const title = c.read('BRANDING_TITLE');
  // Control characters would break the <title> line or a log line quoting it.
  if (title !== undefined && (title.length > MAX_TITLE_LENGTH || /\p{Cc}/u.test(title))) {
    c.report('BRANDING_TITLE', `must be at most ${MAX_TITLE_LENGTH} characters, without control characters`);
    valid = false;
  }

  let faviconUrl: string | undefined;
  const rawFavicon = c.read('BRANDING_FAVICON');
  if (rawFavicon !== undefined) {
    faviconUrl = faviconOf(rawFavicon, c.production);
    if (faviconUrl === undefined) {
      c.report(
        'BRANDING_FAVICON',
        'must be an absolute https URL without credentials (plain http only for a loopback host in development)',
      );
      valid = false;
    }
  }
  return c.done(valid ? { title, faviconUrl } : undefined);
}

/**
 * The login page links the favicon from the browser, so the URL is the page's to load: https only,
 * so no `javascript:`/`data:` scheme slips into a link and no mixed content weakens the page.
 */
function faviconOf(raw: string, production: boolean): string | undefined {
  const url = tryUrl(raw);
  if (!url || url.username || url.password || url.hash) return undefined;
  if (url.protocol === 'https:') return url.href;
  if (url.protocol === 'http:' && !production && isLoopbackHost(url.hostname)) return url.href;
  return undefined;
}
