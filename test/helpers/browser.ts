/**
 * A scripted browser for end-to-end OAuth tests: fetch with a cookie jar, redirects followed by
 * hand (so each hop can be inspected or stopped at, e.g. at a redirect URI nobody listens on),
 * and HTML forms submitted the way a browser would submit them.
 *
 * Deliberately small. It models what the flows under test depend on: cookies scoped by host and
 * path but not by port (as browsers do, so two servers on 127.0.0.1 share a jar, and collide if
 * they use the same cookie names), expiry, Secure, and the method changes of 301/302/303 against
 * 307/308. It does not run scripts, enforce SameSite (every test server is on one site anyway)
 * or understand more HTML than forms.
 */

export interface Page {
  /** The URL that was requested for this response. */
  url: string;
  status: number;
  headers: Headers;
  body: string;
  /** Absolute URL of the Location header, when there is one. */
  location: string | undefined;
}

export interface FollowOptions {
  /** Stop before requesting a redirect target for which this returns true; that redirect is returned. */
  stopAt?: (url: string) => boolean;
  /** Default 20, as in Fetch. */
  maxRedirects?: number;
}

export interface SubmitOptions extends FollowOptions {
  /** Which form on the page: its index, or a predicate. Default: the first. */
  form?: number | ((form: ParsedForm) => boolean);
}

export interface ParsedForm {
  /** Absolute URL the form submits to. */
  action: string;
  method: 'GET' | 'POST';
  /** Successful controls in document order. Submit buttons are left out: pass them as overrides. */
  fields: [string, string][];
}

export interface Browser {
  readonly cookies: CookieJar;
  /** One GET; redirects are not followed. */
  get(url: string): Promise<Page>;
  /** One urlencoded POST; redirects are not followed. */
  post(url: string, form: Record<string, string> | [string, string][]): Promise<Page>;
  /** GET, then follow redirects until a non-redirect answer or `stopAt`. */
  follow(url: string, options?: FollowOptions): Promise<Page>;
  /**
   * Submit a form found in `html` (relative actions resolve against `baseUrl`), with `overrides`
   * replacing or adding fields, then follow redirects.
   */
  submitForm(html: string, baseUrl: string, overrides?: Record<string, string>, options?: SubmitOptions): Promise<Page>;
}

export function createBrowser(): Browser {
  const cookies = new CookieJar();

  async function request(url: string, method: 'GET' | 'POST', body?: URLSearchParams): Promise<Page> {
    const headers = new Headers({ accept: 'text/html,application/json;q=0.9,*/*;q=0.8' });
    const cookie = cookies.header(url);
    if (cookie) headers.set('cookie', cookie);
    if (body) headers.set('content-type', 'application/x-www-form-urlencoded');
    const response = await fetch(url, {
      method,
      headers,
      body: body?.toString(),
      redirect: 'manual',
    });
    cookies.store(url, response.headers.getSetCookie());
    const location = response.headers.get('location');
    return {
      url,
      status: response.status,
      headers: response.headers,
      body: await response.text(),
      location: location === null ? undefined : new URL(location, url).href,
    };
  }

  async function followFrom(
    first: Page,
    firstMethod: 'GET' | 'POST',
    firstBody: URLSearchParams | undefined,
    options: FollowOptions = {},
  ): Promise<Page> {
    const maxRedirects = options.maxRedirects ?? 20;
    let page = first;
    let method = firstMethod;
    let body = firstBody;
    for (let hops = 0; isRedirect(page.status) && page.location !== undefined; hops += 1) {
      if (options.stopAt?.(page.location)) return page;
      if (hops >= maxRedirects) throw new Error(`more than ${maxRedirects} redirects from ${first.url}`);
      // 307 and 308 repeat the request as it was; the others turn it into a GET (Fetch §4.4).
      if (page.status !== 307 && page.status !== 308) {
        method = 'GET';
        body = undefined;
      }
      page = await request(page.location, method, body);
    }
    return page;
  }

  async function follow(url: string, options?: FollowOptions): Promise<Page> {
    return followFrom(await request(url, 'GET'), 'GET', undefined, options);
  }

  return {
    cookies,
    get: (url) => request(url, 'GET'),
    post: (url, form) => request(url, 'POST', new URLSearchParams(form)),
    follow,
    async submitForm(html, baseUrl, overrides = {}, options = {}) {
      const forms = parseForms(html, baseUrl);
      const selector = options.form ?? 0;
      const form = typeof selector === 'number' ? forms[selector] : forms.find(selector);
      if (!form) throw new Error(`no matching form among ${forms.length} on the page from ${baseUrl}`);

      const fields = form.fields.filter(([name]) => !(name in overrides));
      fields.push(...Object.entries(overrides));
      const data = new URLSearchParams(fields);
      if (form.method === 'GET') {
        const target = new URL(form.action);
        target.search = data.toString();
        return follow(target.href, options);
      }
      return followFrom(await request(form.action, 'POST', data), 'POST', data, options);
    },
  };
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** Every `<form>` in `html`, with its successful controls, as a browser would submit it. */
export function parseForms(html: string, baseUrl: string): ParsedForm[] {
  const forms: ParsedForm[] = [];
  for (const match of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form\s*>/gi)) {
    const attributes = parseAttributes(match[1] ?? '');
    const inner = match[2] ?? '';
    const fields: [string, string][] = [];
    const controls = /<(input|textarea|select)\b([^>]*)>(?:([\s\S]*?)<\/\1\s*>)?/gi;
    for (const control of inner.matchAll(controls)) {
      const tag = (control[1] ?? '').toLowerCase();
      const attrs = parseAttributes(control[2] ?? '');
      const name = attrs.get('name');
      if (name === undefined || name === '' || attrs.has('disabled')) continue;
      if (tag === 'input') {
        const type = (attrs.get('type') ?? 'text').toLowerCase();
        if (['submit', 'button', 'image', 'reset', 'file'].includes(type)) continue;
        if ((type === 'checkbox' || type === 'radio') && !attrs.has('checked')) continue;
        fields.push([name, attrs.get('value') ?? (type === 'checkbox' || type === 'radio' ? 'on' : '')]);
      } else if (tag === 'textarea') {
        fields.push([name, decodeEntities(control[3] ?? '')]);
      } else {
        const options = [...(control[3] ?? '').matchAll(/<option\b([^>]*)>([^<]*)/gi)].map((option) => {
          const optionAttrs = parseAttributes(option[1] ?? '');
          return {
            selected: optionAttrs.has('selected'),
            value: optionAttrs.get('value') ?? decodeEntities((option[2] ?? '').trim()),
          };
        });
        const chosen = options.find((option) => option.selected) ?? options[0];
        if (chosen) fields.push([name, chosen.value]);
      }
    }
    const method = (attributes.get('method') ?? 'get').toUpperCase() === 'POST' ? 'POST' : 'GET';
    forms.push({
      action: new URL(attributes.get('action') || baseUrl, baseUrl).href,
      method,
      fields,
    });
  }
  return forms;
}

function parseAttributes(source: string): Map<string, string> {
  const attributes = new Map<string, string>();
  for (const match of source.matchAll(/([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    const name = (match[1] ?? '').toLowerCase();
    if (attributes.has(name)) continue; // HTML keeps the first of duplicated attributes
    attributes.set(name, decodeEntities(match[2] ?? match[3] ?? match[4] ?? ''));
  }
  return attributes;
}

const NAMED_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: '\u00a0',
};

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (entity, body: string) => {
    if (body[0] === '#') {
      const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return Number.isFinite(code) && code <= 0x10ffff ? String.fromCodePoint(code) : entity;
    }
    return NAMED_ENTITIES[body.toLowerCase()] ?? entity;
  });
}

interface Cookie {
  name: string;
  value: string;
  domain: string;
  hostOnly: boolean;
  path: string;
  secure: boolean;
  httpOnly: boolean;
  expiresAt: number;
}

/** RFC 6265 storage model, reduced to what tests need (no public suffix list, no SameSite). */
export class CookieJar {
  readonly #cookies = new Map<string, Cookie>();

  /** Record the Set-Cookie headers of a response to `url`. */
  store(url: string, setCookies: string[]): void {
    const target = new URL(url);
    for (const line of setCookies) {
      const cookie = parseSetCookie(line, target);
      if (!cookie) continue;
      const key = `${cookie.domain};${cookie.path};${cookie.name}`;
      if (cookie.expiresAt <= Date.now()) this.#cookies.delete(key);
      else this.#cookies.set(key, cookie);
    }
  }

  /** The Cookie header a browser would send to `url`, or '' for none. */
  header(url: string): string {
    return this.list(url)
      .map((cookie) => `${cookie.name}=${cookie.value}`)
      .join('; ');
  }

  /** Cookies that would be sent to `url`, longest path first, as RFC 6265 §5.4 orders them. */
  list(url: string): Cookie[] {
    const target = new URL(url);
    const now = Date.now();
    const matching: Cookie[] = [];
    for (const [key, cookie] of this.#cookies) {
      if (cookie.expiresAt <= now) {
        this.#cookies.delete(key);
        continue;
      }
      if (!domainMatches(target.hostname, cookie)) continue;
      if (!pathMatches(target.pathname, cookie.path)) continue;
      if (cookie.secure && !isTrustworthy(target)) continue;
      matching.push(cookie);
    }
    return matching.sort((a, b) => b.path.length - a.path.length);
  }

  clear(): void {
    this.#cookies.clear();
  }
}

function parseSetCookie(line: string, target: URL): Cookie | undefined {
  const [pair = '', ...attributeParts] = line.split(';');
  const equals = pair.indexOf('=');
  if (equals < 0) return undefined;
  const name = pair.slice(0, equals).trim();
  if (name === '') return undefined;
  const cookie: Cookie = {
    name,
    value: pair.slice(equals + 1).trim(),
    domain: target.hostname,
    hostOnly: true,
    path: defaultPath(target.pathname),
    secure: false,
    httpOnly: false,
    expiresAt: Infinity,
  };
  let maxAgeSeen = false;
  for (const part of attributeParts) {
    const index = part.indexOf('=');
    const key = (index < 0 ? part : part.slice(0, index)).trim().toLowerCase();
    const value = index < 0 ? '' : part.slice(index + 1).trim();
    if (key === 'max-age' && /^-?\d+$/.test(value)) {
      maxAgeSeen = true; // Max-Age wins over Expires whatever their order (RFC 6265 §5.3 step 3)
      cookie.expiresAt = Date.now() + Number(value) * 1000;
    } else if (key === 'expires' && !maxAgeSeen) {
      const time = Date.parse(value);
      if (!Number.isNaN(time)) cookie.expiresAt = time;
    } else if (key === 'domain' && value !== '') {
      const domain = value.replace(/^\./, '').toLowerCase();
      // A server may only widen a cookie to a domain it belongs to.
      if (target.hostname !== domain && !target.hostname.endsWith(`.${domain}`)) return undefined;
      cookie.domain = domain;
      cookie.hostOnly = false;
    } else if (key === 'path' && value.startsWith('/')) {
      cookie.path = value;
    } else if (key === 'secure') {
      cookie.secure = true;
    } else if (key === 'httponly') {
      cookie.httpOnly = true;
    }
  }
  if (cookie.secure && !isTrustworthy(target)) return undefined;
  return cookie;
}

function defaultPath(pathname: string): string {
  const slash = pathname.lastIndexOf('/');
  return slash <= 0 ? '/' : pathname.slice(0, slash);
}

function domainMatches(hostname: string, cookie: Cookie): boolean {
  return cookie.hostOnly
    ? hostname === cookie.domain
    : hostname === cookie.domain || hostname.endsWith(`.${cookie.domain}`);
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** Browsers treat loopback as a secure context, so Secure cookies work over http there. */
function isTrustworthy(url: URL): boolean {
  return url.protocol === 'https:' || ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}
