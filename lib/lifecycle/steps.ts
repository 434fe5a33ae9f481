import type { Config, IdentityConfig } from '../config/types.ts';
import { ProxyError } from '../http/errors.ts';
import { createIdentityClient, type IdentityClient } from '../identity/index.ts';
import { devStoreFile } from '../store/dev-file.ts';
import { createStore, type Store } from '../store/index.ts';
import { log, redactUrl } from '../telemetry/log.ts';

/**
 * The start-up steps that reach the outside world, shared by the web process and release
 * verification. Each fails with one line naming what and where, and registers how to undo itself.
 */

/** A start-up failure with a one-line, operator-facing message (no stack trace needed). */
export class StartupError extends ProxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STARTUP_FAILED', message, options);
  }
}

/** What has been started so far, undone in reverse order (on failure or on shutdown). */
export class Cleanups {
  private readonly steps: Array<() => Promise<unknown>> = [];

  add(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.steps.splice(0).reverse()) await step().catch(() => undefined);
  }
}

export async function openStore(config: Config, cleanups: Cleanups): Promise<Store> {
  const store = createStore(config.redis, { file: devStoreFile(config) });
  cleanups.add(() => store.close());
  try {
    await store.check();
  } catch (error) {
    throw new StartupError((error as Error).message, { cause: error });
  }
  log.info('store ready', { store: store.kind, url: config.redis ? redactUrl(config.redis.url) : undefined });
  return store;
}

export async function connectIdentity(config: Config, cleanups: Cleanups): Promise<IdentityClient> {
  const redirectUri = `${config.baseUrl}${config.callbackPath}`;
  let identityConfig: IdentityConfig;
  let allowInsecure = config.localInsecure;
  if (config.identity) {
    identityConfig = config.identity;
  } else {
    // Development only (configuration refuses a missing identity provider in production).
    const { startDevIdentityProvider } = await import('../dev/identity-provider.ts');
    const dev = await startDevIdentityProvider({
      redirectUris: [redirectUri],
      tokenEndpointAuthMethod: 'client_secret_post',
    });
    cleanups.add(() => dev.close());
    identityConfig = {
      serverUrl: new URL(dev.issuer),
      metadataFile: undefined,
      clientId: dev.clientId,
      clientSecret: dev.clientSecret,
      scope: 'openid profile offline_access',
    };
    allowInsecure = true;
  }
  try {
    const identity = await createIdentityClient(identityConfig, { redirectUri, allowInsecure, log });
    log.info('identity provider ready', { issuer: identity.issuer });
    return identity;
  } catch (error) {
    throw new StartupError((error as Error).message, { cause: error });
  }
}
