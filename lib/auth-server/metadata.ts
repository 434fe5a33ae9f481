import { Router, type RequestHandler } from 'express';
import type Provider from 'oidc-provider';
import type { Config } from '../config/types.ts';
import { resourceScopes } from './provider.ts';

/** Path of the RFC 9728 document for a resource at `resourcePath` (§3.1: well-known, then path). */
export function protectedResourceMetadataPath(resourcePath: string): string {
  return `/.well-known/oauth-protected-resource${resourcePath}`;
}

export function protectedResourceMetadataUrl(config: Config): string {
  return `${config.baseUrl}${protectedResourceMetadataPath(config.mcp.path)}`;
}

/**
 * Discovery documents. RFC 8414 metadata is the provider's own OIDC discovery served under a
 * second name (R9: one source of truth, one issuer string); the RFC 9728 document points clients
 * from the MCP endpoint to that issuer (R1).
 */
export function metadataRoutes(config: Config, provider: Provider): Router {
  const router = Router();
  const callback = provider.callback();

  const asMetadata: RequestHandler = (req, res) => {
    req.url = '/.well-known/openid-configuration';
    callback(req, res);
  };
  router.get('/.well-known/oauth-authorization-server', asMetadata);

  const prm = {
    resource: config.mcp.resourceUrl,
    authorization_servers: [config.baseUrl],
    scopes_supported: resourceScopes(config),
    bearer_methods_supported: ['header'],
  };
  const sendPrm: RequestHandler = (_req, res) => {
    // Browser-based clients (MCP Inspector) read this cross-origin; it holds nothing private.
    res.set({ 'Access-Control-Allow-Origin': '*', 'Cache-Control': 'public, max-age=300' }).json(prm);
  };
  router.get('/.well-known/oauth-protected-resource', sendPrm);
  router.get(protectedResourceMetadataPath(config.mcp.path), sendPrm);
  return router;
}
