import { Router, type RequestHandler } from 'express';
import type { Config } from '../config/types.ts';
import { resourceScopes } from './policy.ts';

/** Path of the RFC 9728 document for a resource at `resourcePath` (§3.1: well-known, then path). */
export function protectedResourceMetadataPath(resourcePath: string): string {
  return `/.well-known/oauth-protected-resource${resourcePath}`;
}

export function protectedResourceMetadataUrl(config: Config): string {
  return `${config.baseUrl}${protectedResourceMetadataPath(config.mcp.path)}`;
}

/**
 * RFC 9728 documents, pointing clients from the MCP endpoint to our issuer (R1). RFC 8414 and
 * OIDC discovery are both served by oidc-provider itself from one source (R9).
 */
export function metadataRoutes(config: Config): Router {
  const router = Router();
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
