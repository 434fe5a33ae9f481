import { hkdfSync } from 'node:crypto';
import type Provider from 'oidc-provider';
import { errors, type TokenEndpointGrantContext } from 'oidc-provider';
// @ts-expect-error -- oidc-provider ships no declarations for its internals. Pinned to 9.13.3
// (package.json); test/refresh-and-revocation.test.ts fails if this hook stops working.
import readInternals from 'oidc-provider/lib/helpers/weak_cache.js';
import { openLegacyGcm } from '../crypto/legacy-gcm.ts';
import { openJson, sealJson, type Sealing } from '../crypto/sealed-json.ts';
import { hashId } from '../store/hash.ts';
import { poll, withLock } from '../store/lock.ts';
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
function recordKey(refreshToken: string, version: 'v1' | 'v2'): Buffer {
  return Buffer.from(hkdfSync('sha256', refreshToken, '', `refresh-grace ${version}`, 32));
}

/**
 * Threat: a reader of the store takes the new tokens out of the record; a writer moves a record
 * under another token's key. The key comes from the presented (old) refresh token, which the
 * store holds only as a hash, and the record is bound to that hash (`ctx`): a record opens only
 * for the token whose rotation wrote it.
 */
function sealing(refreshToken: string, id: string): Sealing {
  // The key is the token's own: nothing to rotate, so the key id names where it comes from.
  return { key: recordKey(refreshToken, 'v2'), kid: 'presented-refresh-token', type: 'refresh-grace+2', context: id };
}

function isGraceRecord(value: unknown): value is GraceRecord {
  const record = value as GraceRecord | null;
  return (
    typeof record === 'object' &&
    record !== null &&
    typeof record.clientId === 'string' &&
    typeof record.grantId === 'string' &&
    typeof record.request === 'string' &&
    typeof record.issuedAt === 'number' &&
    typeof record.body === 'object' &&
    record.body !== null
  );
}

/**
 * `v1.<iv>.<tag>.<ciphertext>`, the layout before the JWE, with the hash as associated data. Such
 * a record lives one grace window (10 s) after a rotation; read so a deployment inside that
 * window does not turn a legitimate concurrent refresh into reuse.
 */
function openV1(refreshToken: string, id: string, sealed: string): unknown {
  const [, iv, tag, ciphertext, ...rest] = sealed.split('.');
  if (!iv || !tag || !ciphertext || rest.length) return undefined;
  const plain = openLegacyGcm(recordKey(refreshToken, 'v1'), Buffer.from(id), { iv, ciphertext, tag });
  try {
    return plain && (JSON.parse(plain.toString('utf8')) as unknown);
  } catch {
    return undefined;
  }
}

/** The record a rotation of `refreshToken` left under hash `id`, if it opens. Exported for tests. */
export async function openGraceRecord(
  refreshToken: string,
  id: string,
  sealed: string | undefined,
): Promise<GraceRecord | undefined> {
  if (sealed === undefined) return undefined;
  let value: unknown;
  if (sealed.startsWith('v1.')) value = openV1(refreshToken, id, sealed);
  else {
    const opened = await openJson(sealing(refreshToken, id), sealed);
    value = opened.ok ? opened.value : undefined;
  }
  return isGraceRecord(value) ? value : undefined;
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
 *   (`refresh-grace:<h>`), sealed (JWE, `lib/crypto/sealed-json.ts`) under HKDF(presented
 *   token): a store dump without
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
      await store.set(refreshGraceKey(id), await sealJson(sealing(presented, id), record), windowSeconds);
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
    const done = await poll(
      async () => {
        const record = await openGraceRecord(presented, id, await store.get(refreshGraceKey(id)));
        if (record) return replay(ctx, record).then(() => true);
        const locked = await withLock(store, refreshGraceLockKey(id), LOCK_SECONDS, async () => {
          // The previous holder may have stored its record between our read and our lock.
          const late = await openGraceRecord(presented, id, await store.get(refreshGraceKey(id)));
          if (late) await replay(ctx, late);
          else await rotate(ctx, presented, id);
        });
        // Not acquired: someone else is refreshing with this very token. When it finishes we find
        // its record (success) or a free lock (failure: we run the handler and get the same
        // error ourselves).
        return locked.acquired ? true : undefined;
      },
      { timeoutMs: WAIT_MS, checkFirst: true },
    );
    if (!done) {
      const busy = new errors.TemporarilyUnavailable('a refresh with this token is still in progress; retry shortly');
      Object.assign(busy, { status: 503, statusCode: 503 });
      ctx.set('Retry-After', '1');
      throw busy;
    }
  };
  refreshWithGrace[WRAPPED] = original;

  provider.registerGrantType('refresh_token', refreshWithGrace, params, dupes);
}
