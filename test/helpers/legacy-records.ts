/**
 * Records sealed by the code before lib/crypto/sealed-json.ts (commit 7e893df), each in its own
 * hand-written AES-256-GCM layout. Records of these formats sit in Redis or in browsers when the
 * new code is deployed; the read paths that open them are tested against these exact bytes.
 */
export const LEGACY = {
  /** Vault root key, grant secret G and grant id the records below were sealed with. */
  root: Buffer.alloc(32, 1),
  grantSecret: Buffer.alloc(32, 2).toString('base64url'),
  grantId: 'grant-fixture',
  cookieKey: Buffer.alloc(32, 3),
  uid: 'uid-fixture',
  /** Refresh token whose rotation the grace record remembers. */
  refreshToken: `refresh-token-fixture.${Buffer.alloc(32, 2).toString('base64url')}`,

  entry: {
    accountId: 'alice@example.test',
    clientId: 'client-abc',
    expiresAt: 4102444800,
    credentials: {
      accessToken: 'upstream-at-fixture',
      refreshToken: 'upstream-rt-fixture',
      expiresAt: 4102444800,
      scope: 'openid offline_access',
      tokenType: 'bearer',
    },
  },
  /** `seal(root, grantId, G, entry)` of lib/vault/seal.ts, format v3. */
  vaultV3:
    'v3.vQ2lWclW.nSZtnmofUAQFkKu9.Lbqv_G3363PekIxe5CFSDiCrLqZDdjctipsbiwMVCTcIECvFEq8om9zmvoliAW_TCnJqFjfwKdQDqKfcG62prF3Vb8yLP-mwjPMLCOT-H-ghGERq_obv1LiLO-0b_EAour5Gkk9H6EntKoH7kC-a_OsJG0oG8ccw5EMmmyKk0SvXRN9CHUhPH0sC48FfRSLwd6UTtt-O954DSMUljwrRkSB_heJOnhXeHbpaHtynipq6OSb1hcibBWfQNqRf3r12rqR5VbmB3gyCD36Rq928A7Fh9KpPx7uCkoFZs_vhKB4JI64_WhEdgQ7nzt4KnzLeO3Qmm1oM.aJpOb8Wagh0oW1rcQu-NNw',
  /** `grantSecretCookie` of lib/vault/token-secret.ts, format v1, expiring in 2090. */
  cookieV1:
    'v1.gs2aILhQFFpyA6g6.fZeWxlMnYOOra15RFsjxOU8g6s-ROk7_QvwiYRijeggdpBIpBaTFdeZ8DB7zhfKymPCKAl6QMXoToILBGBsSkVqHEhwOLXCwiFQ1CVDgbpQC_ETA5XCdGGSt3zE._-GRM3dcv0nY9p76exkO2Q',
  /** `sealRecord` of lib/auth-server/refresh-grace.ts, format v1. */
  graceV1:
    'v1.oEmqWDXxvSuO18BO._DQ6bRh62LP_A_F1lg-SSA.2nCoH9HGd9MbTNiwXCO9YBnAZDcqgtwVy4MMBGEd3F1GTKK7fw7cUJGmHEvU2mK1fWdnpcYiAWs9JzLq2o8moLk0ylmIiMMWPbgOwb-qylV1iLPDAiowSAzDB5La8gGx4tfYcK_od1yTU5hBHmdMQ_5iBxftI1T2Ql8MPNeqju0mYEQtJ3Ds21i4Z3oh-tKWnj84PcCM16Ha2HcSreTFdxm-Fu2TVZRzFi_f6GxFZoJAlxfQI39KB0bM88EmW29c9V4Uw2Tn5NSvSo-uKXZyx72j9DcUaw',
  graceBody: { access_token: 'at', refresh_token: 'rt2', expires_in: 3600, token_type: 'Bearer' },
};
