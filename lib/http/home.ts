import { Router } from 'express';
import { protectedResourceMetadataUrl } from '../auth-server/metadata.ts';
import type { Config } from '../config/types.ts';
import type { IdentityClient } from '../identity/index.ts';
import { identityProviderName } from '../interactions/pages.ts';
import { FAVICON_SVG } from '../views/assets.ts';
import { FAVICON_PATH, type Views } from '../views/index.ts';

/**
 * `/` tells whoever lands there what this is: a person gets a page with the MCP URL and how to
 * connect; a program gets the same as JSON with the metadata links. Only public facts: the MCP
 * URL, the issuer's documents and the service's name.
 */
export function homeRoutes(deps: { config: Config; identity: IdentityClient; views: Views }): Router {
  const { config, identity, views } = deps;
  const router = Router();
  const mcpUrl = config.mcp.resourceUrl;
  const about = {
    name: views.brand.name,
    mcp_url: mcpUrl,
    protected_resource_metadata: protectedResourceMetadataUrl(config),
    authorization_server_metadata: `${config.baseUrl}/.well-known/oauth-authorization-server`,
  };
  // A name for `claude mcp add` and mcp.json keys: the service's name, reduced to what a shell
  // and a JSON key take without quoting.
  const serverName =
    views.brand.name
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40) || 'mcp';

  router.get('/', async (req, res) => {
    res.vary('Accept');
    if (req.accepts(['json', 'html']) !== 'html') {
      res.set('Cache-Control', 'no-cache').json(about);
      return;
    }
    await views.send(res, 200, 'home', {
      title: 'Connect',
      mcpUrl,
      serverName,
      identityName: identityProviderName(identity.issuer),
    });
  });

  // Browsers ask for /favicon.ico whatever the page says; a 404 there is noise in every log.
  const icon = config.branding.faviconUrl;
  router.get(['/favicon.ico', FAVICON_PATH], (req, res) => {
    if (icon && req.path === '/favicon.ico') {
      res.redirect(302, icon);
      return;
    }
    res.set({ 'Content-Type': 'image/svg+xml', 'Cache-Control': 'public, max-age=86400' }).send(FAVICON_SVG);
  });
  return router;
}
