import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { IdentityClient, UpstreamCredentials } from '../identity/index.ts';
import { IdentityError } from '../identity/index.ts';
import type { Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';

/**
 * Upstream credentials, one record per grant (R22: a grant is one user × one client, so two users
 * of one client_id can never read each other's upstream tokens). Records are AES-256-GCM sealed
 * with a key derived from the vault key and the grant id, the grant id bound as associated data:
 * a record copied under another grant's key fails to open.
 */
export interface VaultEntry {
  accountId: string;
  clientId: string;
  /** Epoch seconds; the record lives as long as the grant it belongs to. */
  expiresAt: number;
  credentials: UpstreamCredentials;
}

export interface Vault {
  put(grantId: string, entry: VaultEntry): Promise<void>;
  get(grantId: string): Promise<VaultEntry | undefined>;
  /**
   * Called after the MCP server rejected `rejectedAccessToken`. Refreshes once per grant: callers
   * racing on the same grant share one upstream refresh, and a caller whose token was already
   * replaced gets the replacement without a second refresh. Throws IdentityError.
   */
  refresh(grantId: string, rejectedAccessToken: string): Promise<UpstreamCredentials>;
  delete(grantId: string): Promise<void>;
}

const VERSION = 'v1';

export function vaultKeyFor(grantId: string): string {
  return `vault:${grantId}`;
}

function grantKey(root: Buffer, grantId: string): Buffer {
  return Buffer.from(hkdfSync('sha256', root, grantId, 'vault-record', 32));
}

export function seal(root: Buffer, grantId: string, entry: VaultEntry): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', grantKey(root, grantId), iv);
  cipher.setAAD(Buffer.from(grantId));
  const body = Buffer.concat([cipher.update(JSON.stringify(entry), 'utf8'), cipher.final()]);
  return [VERSION, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), body.toString('base64url')].join('.');
}

export function open(root: Buffer, grantId: string, sealed: string): VaultEntry | undefined {
  const [version, iv, tag, body] = sealed.split('.');
  if (version !== VERSION || !iv || !tag || !body) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', grantKey(root, grantId), Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(grantId));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    const plain = Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as VaultEntry;
  } catch {
    // Wrong key (JWKS rotated) or tampered record: treat as absent, the user logs in again.
    return undefined;
  }
}

export function createVault(deps: { store: Store; identity: IdentityClient; key: Buffer; log: Logger }): Vault {
  const { store, identity, key, log } = deps;
  const inFlight = new Map<string, Promise<UpstreamCredentials>>();

  const get = async (grantId: string): Promise<VaultEntry | undefined> => {
    const sealed = await store.get(vaultKeyFor(grantId));
    return sealed === undefined ? undefined : open(key, grantId, sealed);
  };

  const save = async (grantId: string, entry: VaultEntry): Promise<void> => {
    const ttl = Math.max(1, entry.expiresAt - Math.floor(Date.now() / 1000));
    await store.set(vaultKeyFor(grantId), seal(key, grantId, entry), ttl);
  };

  const refreshNow = async (grantId: string, rejectedAccessToken: string): Promise<UpstreamCredentials> => {
    const entry = await get(grantId);
    if (!entry) throw new IdentityError('IDENTITY_GRANT_INVALID', 'no upstream credentials for this grant');
    if (entry.credentials.accessToken !== rejectedAccessToken) return entry.credentials;
    const refreshToken = entry.credentials.refreshToken;
    if (!refreshToken) throw new IdentityError('IDENTITY_GRANT_INVALID', 'upstream token expired and no refresh token was issued');
    const credentials = await identity.refresh(refreshToken);
    await save(grantId, { ...entry, credentials });
    log.info('upstream token refreshed', { grant_id: grantId });
    return credentials;
  };

  return {
    put: save,
    get,
    refresh(grantId, rejectedAccessToken) {
      let pending = inFlight.get(grantId);
      if (!pending) {
        pending = refreshNow(grantId, rejectedAccessToken).finally(() => inFlight.delete(grantId));
        inFlight.set(grantId, pending);
      }
      return pending;
    },
    async delete(grantId) {
      await store.del(vaultKeyFor(grantId));
    },
  };
}
