#!/usr/bin/env node
// Interop device: openid-client v6's device-flow helpers (RFC 8628) against a live idp.
//
// Input, as argv[2]: {"issuer", "client_id", "client_secret" | null,
//                  "auth_method": "client_secret_basic" | "client_secret_post" | "none"}
// Output, one JSON object per line on stdout:
//   1. the device authorization response (the test approves it on idp's pages meanwhile),
//   2. {"ok": true, "claims": {...ID token claims...}, "has_refresh_token": bool, "scope": ...}
//      or {"ok": false, "error": ...} (exit status 1).

import * as client from "openid-client";

const input = JSON.parse(process.argv[2]);

function emit(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

async function main() {
  const auth = {
    client_secret_basic: () => client.ClientSecretBasic(input.client_secret),
    client_secret_post: () => client.ClientSecretPost(input.client_secret),
    none: () => client.None(),
  }[input.auth_method]();
  const config = await client.discovery(
    new URL(input.issuer),
    input.client_id,
    {},
    auth,
    { execute: [client.allowInsecureRequests] },
  );
  const metadata = config.serverMetadata();
  if (!metadata.device_authorization_endpoint) {
    throw new Error("discovery has no device_authorization_endpoint");
  }
  const started = await client.initiateDeviceAuthorization(config, {
    scope: "openid profile email offline_access",
  });
  emit(started);
  // Polls at the server's interval, honouring slow_down, until tokens or a final error.
  const tokens = await client.pollDeviceAuthorizationGrant(config, started, undefined, {
    signal: AbortSignal.timeout(90_000),
  });
  // openid-client has validated the ID token (iss, aud, exp, iat, signature via the JWKS).
  emit({
    ok: true,
    claims: tokens.claims(),
    has_refresh_token: typeof tokens.refresh_token === "string",
    scope: tokens.scope,
    token_type: tokens.token_type,
  });
}

main().catch((error) => {
  emit({ ok: false, error: `${error.name}: ${error.message}`, code: error.code, cause: error.cause });
  process.exit(1);
});
