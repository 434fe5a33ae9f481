import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type Provider from 'oidc-provider';
import { errors, type TokenEndpointGrantContext } from 'oidc-provider';
// @ts-expect-error -- oidc-provider ships no declarations for its internals. Pinned to 9.13.3
// (package.json); test/refresh-and-revocation.test.ts fails if this hook stops working.
import readInternals from 'oidc-provider/lib/helpers/weak_cache.js';
import { hashId } from '../store/hash.ts';
import type { Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';

/**
 * How long, in seconds, a rotated refresh token keeps answering with the response its rotation
 * produced. Clients' backends and their proxies refresh one grant concurrently (Claude.ai does);
 * without this the second request of such a burst looks like token theft and kills the grant.
 * Short, because during it the old token is as good as the new one.
 */
export const REFRESH_GRACE_SECONDS = 10;

/** Longer than any refresh takes; a crashed holder blocks its followers at most this long. */
const LOCK_SECONDS = 15;
/** How long a concurrent presenter waits for the first one before giving up with a 503. */
const WAIT_MS = 10_000;

const refreshGraceKey = (id: string): string => `refresh-grace:${id}`;
const refreshGraceLockKey = (id: string): string => `lock:refresh-grace:${id}`;

const VERSION = 'v1';

/** What a rotation answered, and to whom. Stored sealed under a key only the old token yields. */
interface GraceRecord {
  clientId: string;
  grantId: string;
  /** The request's `scope` and `resource`, normalised: a replay must ask for the same thing. */
  request: string;
  /** Epoch milliseconds of the rotation, to age `expires_in` on replay. */
  issuedAt: number;
  body: Record<string, unknown>;
}

type Handler = (ctx: TokenEndpointGrantContext) => Promise<void>;

interface ProviderInternals {
  grantTypeHandlers: Map<string, Handler>;
  grantTypeParams: Map<string | undefined, Set<string>>;
  grantTypeDupes: Map<string, Set<string>>;
}

const WRAPPED = Symbol('refresh-grace');

/** A refresh token carries 256 random bits, so HKDF needs no stretching to make it a key. */
function recordKey(refreshToken: string): Buffer {
  return Buffer.from(hkdfSync('sha256', refreshToken, '', 'refresh-grace v1', 32));
}

function sealRecord(refreshToken: string, id: string, record: GraceRecord): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', recordKey(refreshToken), iv);
  cipher.setAAD(Buffer.from(id));
  const body = Buffer.concat([cipher.update(JSON.stringify(record), 'utf8'), cipher.final()]);
  return [
    VERSION,
    iv.toString('base64url'),
    cipher.getAuthTag().toString('base64url'),
    body.toString('base64url'),
  ].join('.');
}

function openRecord(refreshToken: string, id: string, sealed: string): GraceRecord | undefined {
  const [version, iv, tag, body] = sealed.split('.');
  if (version !== VERSION || !iv || !tag || !body) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', recordKey(refreshToken), Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(id));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    const plain = Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as GraceRecord;
  } catch {
    return undefined;
  }
}

function requestFingerprint(params: TokenEndpointGrantContext['oidc']['params']): string {
  const scope = typeof params.scope === 'string' ? [...new Set(params.scope.split(' ').filter(Boolean))].sort() : null;
  const resource = params.resource === undefined ? null : [params.resource].flat().sort();
  return JSON.stringify({ scope, resource });
}

export interface RefreshGraceOptions {
  provider: Provider;
  store: Store;
  log: Logger;
  /** Defaults to REFRESH_GRACE_SECONDS. */
  windowSeconds?: number;
}

/**
 * R14 with a grace window. oidc-provider rotates refresh tokens (`rotateRefreshToken: true`) and,
 * when a consumed one comes back, revokes the whole grant (refresh_token.js: "refresh token
 * already used"). We wrap its own refresh_token grant handler rather than sit in front of the
 * token endpoint: by the time the wrapper runs oidc-provider has parsed the body, authenticated
 * the client with whatever method it registered (secrets compared in constant time, `none`,
 * …), rejected duplicate parameters, applied the client's CORS policy and set
 * `Cache-Control: no-store`. Replays inherit all of that for free; the wrapper only decides
 * whether this presentation of a token is the first.
 *
 * Per presented token, keyed by SHA-256 of it:
 * - a single-flight lock (`lock:refresh-grace:<h>`): concurrent presenters wait for the first,
 *   across processes, so one rotation happens and everyone gets its result;
 * - the first presenter runs oidc-provider's handler and stores its 200 body for the window
 *   (`refresh-grace:<h>`), AES-256-GCM sealed under HKDF(presented token): a store dump without
 *   the old refresh token yields no new one;
 * - within the window, a presenter gets that same body — same access and refresh token, no second
 *   chain — only when it authenticated as the same client, asks for the same scope and resource,
 *   and the grant still exists;
 * - after the window the record has expired, the request reaches oidc-provider's handler as is,
 *   and reuse revokes the grant.
 */
export function installRefreshGrace({
  provider,
  store,
  log,
  windowSeconds = REFRESH_GRACE_SECONDS,
}: RefreshGraceOptions): void {
  if (!Number.isInteger(windowSeconds) || windowSeconds < 1)
    throw new Error('refresh grace window must be a positive integer of seconds');
  const internals = (readInternals as (provider: Provider) => ProviderInternals | undefined)(provider);
  const registered = internals?.grantTypeHandlers.get('refresh_token') as
    (Handler & { [WRAPPED]?: Handler }) | undefined;
  const params = internals?.grantTypeParams.get('refresh_token');
  if (!internals || !registered || !params) {
    // Fail at start-up, never silently run without the grace window (or without reuse detection).
    throw new Error(
      'oidc-provider internals changed: no refresh_token grant handler to wrap; review lib/auth-server/refresh-grace.ts',
    );
  }
  const original = registered[WRAPPED] ?? registered;
  const dupes = internals.grantTypeDupes.get('refresh_token');

  const replay = async (ctx: TokenEndpointGrantContext, record: GraceRecord): Promise<void> => {
    const { client } = ctx.oidc;
    if (record.clientId !== client.clientId) {
      // The same answer oidc-provider gives another client presenting this token, and like it no
      // revocation: the legitimate holder is not punished for someone else's attempt.
      throw new errors.InvalidGrant('client mismatch');
    }
    if (record.request !== requestFingerprint(ctx.oidc.params)) {
      throw new errors.InvalidGrant(
        'refresh token was just used with a different scope or resource; use the refresh token it returned',
      );
    }
    // Revoked meanwhile (revocation endpoint, reuse detected on the new token, upstream gone):
    // the stored tokens are dead, and handing them out would say otherwise.
    if (!(await provider.Grant.find(record.grantId))) throw new errors.InvalidGrant('grant request is invalid');
    const body = { ...record.body };
    if (typeof body.expires_in === 'number') {
      body.expires_in = Math.max(0, body.expires_in - Math.floor((Date.now() - record.issuedAt) / 1000));
    }
    log.info('refresh token replayed within the grace window', {
      client_id: client.clientId,
      grant_id: record.grantId,
    });
    ctx.body = body;
  };

  const rotate = async (ctx: TokenEndpointGrantContext, presented: string, id: string): Promise<void> => {
    await original(ctx);
    const rotated = ctx.oidc.entities.RotatedRefreshToken;
    if (!rotated?.grantId || typeof ctx.body !== 'object' || ctx.body === null) return;
    const record: GraceRecord = {
      clientId: ctx.oidc.client.clientId,
      grantId: rotated.grantId,
      request: requestFingerprint(ctx.oidc.params),
      issuedAt: Date.now(),
      body: ctx.body as Record<string, unknown>,
    };
    try {
      await store.set(refreshGraceKey(id), sealRecord(presented, id, record), windowSeconds);
    } catch (error) {
      // The rotation happened: its response must still reach the client. Only a concurrent
      // presenter loses (it will look like reuse), which beats losing the chain for everyone.
      log.warn('could not keep the refresh response for the grace window', {
        grant_id: rotated.grantId,
        error: (error as Error).message,
      });
    }
  };

  const refreshWithGrace: Handler & { [WRAPPED]?: Handler } = async (ctx) => {
    const presented = ctx.oidc.params.refresh_token;
    // Missing or odd: oidc-provider's handler words the error.
    if (typeof presented !== 'string' || presented === '') return original(ctx);
    const id = hashId(presented);
    const deadline = Date.now() + WAIT_MS;
    let pause = 20;
    for (;;) {
      const sealed = await store.get(refreshGraceKey(id));
      const record = sealed === undefined ? undefined : openRecord(presented, id, sealed);
      if (record) return replay(ctx, record);
      const owner = randomUUID();
      if (await store.setIfAbsent(refreshGraceLockKey(id), owner, LOCK_SECONDS)) {
        try {
          // The previous holder may have stored its record between our read and our lock.
          const late = await store.get(refreshGraceKey(id));
          const lateRecord = late === undefined ? undefined : openRecord(presented, id, late);
          if (lateRecord) return await replay(ctx, lateRecord);
          return await rotate(ctx, presented, id);
        } finally {
          await store.deleteIfEquals(refreshGraceLockKey(id), owner).catch(() => undefined);
        }
      }
      // Someone else is refreshing with this very token. When it finishes we find its record
      // (success) or a free lock (failure: we run the handler and get the same error ourselves).
      if (Date.now() > deadline) {
        const busy = new errors.TemporarilyUnavailable('a refresh with this token is still in progress; retry shortly');
        Object.assign(busy, { status: 503, statusCode: 503 });
        ctx.set('Retry-After', '1');
        throw busy;
      }
      await sleep(pause);
      pause = Math.min(pause * 2, 250);
    }
  };
  refreshWithGrace[WRAPPED] = original;

  provider.registerGrantType('refresh_token', refreshWithGrace, params, dupes);
}
