#!/usr/bin/env node
// Interop relying party: openid-client v6 (panva, OpenID-certified RP library) completes the
// whole OpenID Connect flow against a live idp and validates everything strictly.
//
// Input: one JSON object, as argv[2] or on stdin:
//   {
//     "issuer": "http://localhost:PORT",
//     "client_id": "...",
//     "client_secret": "..." | null,
//     "auth_method": "client_secret_basic" | "client_secret_post" | "none",
//     "redirect_uri": "http://localhost:PORT/callback",
//     "post_logout_redirect_uri": "http://localhost:PORT/logged-out",
//     "email": "...", "password": "...",
//     "expected_alg": "RS256" | "ES256",
//     "par": true | false (optional: every authorization request pushed first, RFC 9126)
//     "dpop": true | false (optional: the token requests and userinfo with DPoP proofs of a key
//             generated for the run, RFC 9449; the tokens must come back bound to it)
//   }
// Output: one JSON object on stdout ({"ok": true, ...} with claims and the steps passed).
// On any failure: {"ok": false, "failed_step": ..., "error": ...} on stdout, a readable message
// on stderr, and exit status 1.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import * as client from "openid-client";
import * as jose from "jose";

const SCOPE = "openid profile email offline_access";
const MAX_HOPS = 25;

const steps = [];
const result = { ok: false, steps };
let currentStep = "read input";

class InteropFailure extends Error {
  constructor(message, details) {
    super(message);
    this.name = "InteropFailure";
    this.details = details;
  }
}

function check(condition, message, details) {
  if (!condition) throw new InteropFailure(message, details);
}

function step(name) {
  currentStep = name;
}

function passed(name) {
  steps.push(name ?? currentStep);
}

function readInput() {
  const raw = process.argv[2] ?? readFileSync(0, "utf8");
  const input = JSON.parse(raw);
  for (const key of [
    "issuer",
    "client_id",
    "auth_method",
    "redirect_uri",
    "post_logout_redirect_uri",
    "email",
    "password",
    "expected_alg",
  ]) {
    check(typeof input[key] === "string" && input[key] !== "", `input lacks "${key}"`);
  }
  return input;
}

// ---------------------------------------------------------------------------------------------
// A minimal browser: cookie jar, manual redirects, HTML form parsing.
// ---------------------------------------------------------------------------------------------

class CookieJar {
  constructor() {
    this.cookies = new Map(); // name -> {value, path}
    this.warnings = [];
  }

  store(response, url) {
    const headers =
      typeof response.headers.getSetCookie === "function" ? response.headers.getSetCookie() : [];
    for (const line of headers) {
      const [pair, ...attributes] = line.split(";");
      const eq = pair.indexOf("=");
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let expired = false;
      let path = "/";
      for (const attribute of attributes) {
        const [rawKey, ...rest] = attribute.split("=");
        const key = rawKey.trim().toLowerCase();
        const attrValue = rest.join("=").trim();
        if (key === "max-age" && Number(attrValue) <= 0) expired = true;
        if (key === "expires" && Date.parse(attrValue) < Date.now()) expired = true;
        if (key === "path" && attrValue.startsWith("/")) path = attrValue;
        if (key === "secure" && url.protocol === "http:") {
          this.warnings.push(`cookie ${name} is marked Secure on ${url.origin}`);
        }
      }
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, { value, path });
    }
  }

  header(url) {
    const pairs = [];
    for (const [name, { value, path }] of this.cookies) {
      const prefix = path.endsWith("/") ? path : `${path}/`;
      if (url.pathname === path || url.pathname.startsWith(prefix)) pairs.push(`${name}=${value}`);
    }
    return pairs.join("; ");
  }
}

const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

function unescapeHtml(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, entity) => {
    if (entity[0] === "#") {
      const code =
        entity[1] === "x" || entity[1] === "X"
          ? parseInt(entity.slice(2), 16)
          : parseInt(entity.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[entity.toLowerCase()] ?? whole;
  });
}

function parseAttributes(tag) {
  const attributes = {};
  const body = tag.replace(/^<\s*[a-z0-9]+/i, "").replace(/\/?>$/, "");
  const pattern = /([^\s"'=<>`/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  for (const match of body.matchAll(pattern)) {
    const name = match[1].toLowerCase();
    const value = match[2] ?? match[3] ?? match[4] ?? "";
    if (!(name in attributes)) attributes[name] = unescapeHtml(value);
  }
  return attributes;
}

function parseForms(html) {
  const withoutComments = html.replace(/<!--[\s\S]*?-->/g, "");
  const forms = [];
  for (const match of withoutComments.matchAll(/<form\b[^>]*>([\s\S]*?)<\/form\s*>/gi)) {
    const openTag = match[0].match(/^<form\b[^>]*>/i)[0];
    const attributes = parseAttributes(openTag);
    const inputs = [];
    const buttons = [];
    for (const tag of match[1].matchAll(/<(input|button)\b[^>]*>/gi)) {
      const attrs = parseAttributes(tag[0]);
      if (tag[1].toLowerCase() === "input") inputs.push(attrs);
      else buttons.push(attrs);
    }
    forms.push({
      method: (attributes.method ?? "get").toLowerCase(),
      action: attributes.action ?? "",
      inputs,
      buttons,
    });
  }
  return forms;
}

function snippet(html) {
  return html
    .replace(/<script[\s\S]*?<\/script>/gi, "")
    .replace(/<style[\s\S]*?<\/style>/gi, "")
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 600);
}

class Browser {
  constructor() {
    this.jar = new CookieJar();
    this.trail = [];
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers ?? {});
    const cookie = this.jar.header(url);
    if (cookie) headers.set("cookie", cookie);
    headers.set("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
    const response = await fetch(url, { ...init, headers, redirect: "manual" });
    this.jar.store(response, url);
    this.trail.push(`${init.method ?? "GET"} ${url.pathname} -> ${response.status}`);
    return response;
  }

  async submit(pageUrl, form, extra) {
    check(form.method === "post", `form on ${pageUrl.pathname} is not method=post`, form);
    const action = new URL(form.action || pageUrl.href, pageUrl);
    const body = new URLSearchParams();
    for (const input of form.inputs) {
      const type = (input.type ?? "text").toLowerCase();
      if (!input.name || ["submit", "button", "image", "reset"].includes(type)) continue;
      if ((type === "checkbox" || type === "radio") && !("checked" in input)) continue;
      if (input.name in extra) continue;
      body.append(input.name, input.value ?? "");
    }
    for (const [name, value] of Object.entries(extra)) body.append(name, value);
    return [
      action,
      await this.request(action, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", origin: action.origin },
        body: body.toString(),
      }),
    ];
  }

  /**
   * Follows redirects, signs in and consents, until the user agent would be sent to a URL
   * starting with `stopAt`. Returns that URL and what happened on the way.
   */
  async navigate(start, stopAt, { email, password, allowLogin = true }) {
    let url = new URL(start);
    let response = await this.request(url);
    const seen = { login: 0, consent: 0, passkeyPrompt: 0 };
    for (let hop = 0; hop < MAX_HOPS; hop += 1) {
      if ([301, 302, 303, 307, 308].includes(response.status)) {
        const location = response.headers.get("location");
        check(location, `redirect from ${url.pathname} without a Location header`);
        const next = new URL(location, url);
        if (next.href.startsWith(stopAt)) return { url: next, seen };
        url = next;
        response = await this.request(url);
        continue;
      }
      const text = await response.text();
      check(
        response.status === 200,
        `unexpected HTTP ${response.status} at ${url.pathname}: ${snippet(text)}`,
        { trail: this.trail },
      );
      const forms = parseForms(text);
      const login = forms.find((form) => form.inputs.some((input) => input.name === "password"));
      const consent = forms.find((form) =>
        form.buttons.some((button) => button.name === "decision" && button.value === "allow"),
      );
      const passkeyPrompt = forms.find((form) =>
        form.buttons.some((button) => button.name === "choice" && button.value === "later"),
      );
      if (login) {
        if (!allowLogin) return { url, seen, loginPage: true };
        seen.login += 1;
        check(seen.login === 1, `sign-in form shown again (wrong credentials?): ${snippet(text)}`);
        check(
          login.inputs.some((input) => input.name === "csrf_token"),
          "login form has no csrf_token",
        );
        [url, response] = await this.submit(url, login, { email, password });
      } else if (consent) {
        seen.consent += 1;
        check(seen.consent === 1, `consent form shown again: ${snippet(text)}`);
        [url, response] = await this.submit(url, consent, { decision: "allow" });
      } else if (passkeyPrompt) {
        // After a password sign-in idp offers to create a passkey; this user has no
        // authenticator and answers "Not now".
        seen.passkeyPrompt += 1;
        check(seen.passkeyPrompt === 1, `passkey offer shown again: ${snippet(text)}`);
        [url, response] = await this.submit(url, passkeyPrompt, { choice: "later" });
      } else {
        throw new InteropFailure(
          `page at ${url.pathname} has neither a sign-in nor a consent form: ${snippet(text)}`,
          { trail: this.trail },
        );
      }
    }
    throw new InteropFailure(`more than ${MAX_HOPS} hops`, { trail: this.trail });
  }
}

// ---------------------------------------------------------------------------------------------

function b64urlDecodeJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

// OIDC Core 3.1.3.6: base64url of the left half of the hash of the access token's ASCII octets,
// the hash being the one of the ID token's alg.
function halfHash(value, alg) {
  const bits = { 256: "sha256", 384: "sha384", 512: "sha512" }[alg.slice(-3)];
  check(bits, `no hash known for alg ${alg}`);
  const digest = createHash(bits).update(value, "ascii").digest();
  return digest.subarray(0, digest.length / 2).toString("base64url");
}

function describeError(err) {
  if (err instanceof InteropFailure) return err.message;
  const parts = [`${err?.name ?? "Error"}: ${err?.message ?? String(err)}`];
  if (err?.code) parts.push(`code=${err.code}`);
  if (err?.status) parts.push(`status=${err.status}`);
  if (err?.error) parts.push(`error=${err.error}`);
  if (err?.error_description) parts.push(`error_description=${err.error_description}`);
  if (err?.cause !== undefined) {
    let cause = err.cause;
    if (cause instanceof Response) cause = `HTTP ${cause.status} from ${cause.url}`;
    else if (cause instanceof URLSearchParams) cause = Object.fromEntries(cause);
    else if (cause instanceof Error) cause = `${cause.name}: ${cause.message}`;
    try {
      parts.push(`cause=${JSON.stringify(cause)}`);
    } catch {
      parts.push(`cause=${String(cause)}`);
    }
  }
  return parts.join(" ");
}

async function expectFailure(promise) {
  try {
    const value = await promise;
    return { failed: false, value };
  } catch (err) {
    return {
      failed: true,
      name: err?.name,
      status: err?.status ?? err?.response?.status,
      error: err?.error ?? err?.cause?.[0]?.parameters?.error,
      message: describeError(err),
    };
  }
}

// The address the browser is sent to: the parameters in it, or with "par" pushed to the PAR
// endpoint first (RFC 9126 2, authenticated as at the token endpoint) and only client_id and
// request_uri in it (RFC 9126 4).
async function authorizationUrlOf(config, input, parameters) {
  if (!input.par) return client.buildAuthorizationUrl(config, parameters);
  const url = await client.buildAuthorizationUrlWithPAR(config, parameters);
  const names = [...url.searchParams.keys()].sort();
  check(
    names.join(" ") === "client_id request_uri",
    `the PAR authorization URL carries ${names.join(", ")}`,
  );
  check(
    url.searchParams.get("request_uri").startsWith("urn:ietf:params:oauth:request_uri:"),
    `request_uri ${url.searchParams.get("request_uri")}`,
  );
  return url;
}

async function main() {
  const input = readInput();
  const issuer = input.issuer;
  const expectedAlg = input.expected_alg;
  const isPublic = input.auth_method === "none";

  // 1. Discovery. openid-client checks that the metadata's issuer is exactly this one.
  step("discovery");
  const clientAuth = {
    client_secret_basic: () => client.ClientSecretBasic(input.client_secret),
    client_secret_post: () => client.ClientSecretPost(input.client_secret),
    none: () => client.None(),
  }[input.auth_method];
  check(clientAuth, `unsupported auth_method ${input.auth_method}`);
  const config = await client.discovery(
    new URL(issuer),
    input.client_id,
    {
      // Pin the ID token alg: openid-client refuses any other alg in the header.
      id_token_signed_response_alg: expectedAlg,
      redirect_uris: [input.redirect_uri],
      response_types: ["code"],
    },
    clientAuth(),
    { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks] },
  );
  const metadata = config.serverMetadata();
  check(metadata.issuer === issuer, `issuer ${metadata.issuer} != ${issuer}`);
  check(
    metadata.code_challenge_methods_supported?.includes("S256"),
    "discovery does not advertise PKCE S256",
  );
  check(
    metadata.authorization_response_iss_parameter_supported === true,
    "discovery does not advertise authorization_response_iss_parameter_supported (RFC 9207)",
  );
  check(
    metadata.id_token_signing_alg_values_supported?.includes(expectedAlg),
    `discovery does not list ${expectedAlg} in id_token_signing_alg_values_supported`,
  );
  // RFC 9449 5.1: the algorithms idp takes; openid-client signs with ES256 by default.
  const DPoP = input.dpop
    ? client.getDPoPHandle(config, await client.randomDPoPKeyPair())
    : undefined;
  if (input.dpop) {
    check(
      metadata.dpop_signing_alg_values_supported?.includes("ES256"),
      "discovery does not list ES256 in dpop_signing_alg_values_supported (RFC 9449 5.1)",
    );
  }
  if (input.par) {
    check(
      typeof metadata.pushed_authorization_request_endpoint === "string",
      "discovery lacks pushed_authorization_request_endpoint (RFC 9126 5)",
    );
  }
  for (const endpoint of [
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "revocation_endpoint",
    "introspection_endpoint",
    "end_session_endpoint",
  ]) {
    check(typeof metadata[endpoint] === "string", `discovery lacks ${endpoint}`);
  }
  result.discovery = {
    issuer: metadata.issuer,
    supportsPKCE: metadata.supportsPKCE(),
    authorization_response_iss_parameter_supported:
      metadata.authorization_response_iss_parameter_supported,
  };
  passed();

  // 2. Authorization request: PKCE S256, nonce, state.
  step("authorization request");
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const nonce = client.randomNonce();
  const state = client.randomState();
  const authorizationUrl = await authorizationUrlOf(config, input, {
    redirect_uri: input.redirect_uri,
    scope: SCOPE,
    code_challenge: codeChallenge,
    code_challenge_method: "S256",
    nonce,
    state,
  });
  result.authorization_url_parameters = [...authorizationUrl.searchParams.keys()].sort();
  passed();

  // 3. The user signs in (and consents when asked) in our minimal browser.
  step("sign-in");
  const browser = new Browser();
  const landing = await browser.navigate(authorizationUrl, input.redirect_uri, input);
  const callbackUrl = landing.url;
  check(
    !callbackUrl.searchParams.has("error"),
    `authorization error: ${callbackUrl.searchParams.get("error")} ` +
      `${callbackUrl.searchParams.get("error_description") ?? ""}`,
  );
  check(callbackUrl.searchParams.get("iss") === issuer, "callback lacks iss (RFC 9207)", {
    callback: callbackUrl.href,
  });
  result.sign_in = {
    login_pages: landing.seen.login,
    consent_pages: landing.seen.consent,
    passkey_prompts: landing.seen.passkeyPrompt,
    trail: browser.trail,
    cookie_warnings: browser.jar.warnings,
  };
  passed();

  // 4. Code exchange. openid-client checks state, iss (RFC 9207), the ID token's signature
  //    against the JWKS (non-repudiation checks), alg (pinned above), iss, aud, exp, iat, nonce.
  step("authorization code grant");
  const tokens = await client.authorizationCodeGrant(
    config,
    callbackUrl,
    {
      pkceCodeVerifier: codeVerifier,
      expectedNonce: nonce,
      expectedState: state,
      idTokenExpected: true,
    },
    undefined,
    { DPoP },
  );
  check(typeof tokens.access_token === "string", "no access_token");
  check(typeof tokens.id_token === "string", "no id_token");
  check(typeof tokens.refresh_token === "string", "no refresh_token despite offline_access");
  const tokenType = input.dpop ? "dpop" : "bearer";
  check(tokens.token_type?.toLowerCase() === tokenType, `token_type ${tokens.token_type}`);
  const idClaims = tokens.claims();
  check(idClaims, "no ID token claims");
  const idHeader = b64urlDecodeJson(tokens.id_token.split(".")[0]);
  check(idHeader.alg === expectedAlg, `ID token alg ${idHeader.alg} != ${expectedAlg}`);
  check(typeof idHeader.kid === "string", "ID token header has no kid");
  check(idClaims.iss === issuer, "ID token iss");
  check(
    idClaims.aud === input.client_id ||
      (Array.isArray(idClaims.aud) && idClaims.aud.includes(input.client_id)),
    "ID token aud",
  );
  check(idClaims.nonce === nonce, "ID token nonce");
  const now = Math.floor(Date.now() / 1000);
  check(idClaims.exp > now, "ID token already expired");
  check(idClaims.iat <= now + 60, "ID token iat in the future");
  check(typeof idClaims.at_hash === "string", "ID token lacks at_hash");
  check(
    idClaims.at_hash === halfHash(tokens.access_token, idHeader.alg),
    `at_hash ${idClaims.at_hash} != ${halfHash(tokens.access_token, idHeader.alg)}`,
  );
  result.id_token = { header: idHeader, claims: idClaims };
  result.token_response = {
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expires_in,
    has_refresh_token: true,
  };
  passed();

  // 5. The access token is a JWT per RFC 9068, verified with jose against the JWKS.
  step("access token (RFC 9068)");
  const jwks = jose.createRemoteJWKSet(new URL(metadata.jwks_uri));
  const atVerified = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer,
    typ: "at+jwt",
    requiredClaims: ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"],
  });
  check(atVerified.payload.client_id === input.client_id, "access token client_id");
  check(atVerified.payload.sub === idClaims.sub, "access token sub != ID token sub");
  if (input.dpop) {
    // RFC 9449 6.1: bound to the key, by its RFC 7638 thumbprint.
    check(typeof atVerified.payload.cnf?.jkt === "string", "access token lacks cnf.jkt");
  }
  result.access_token = { header: atVerified.protectedHeader, claims: atVerified.payload };
  passed();

  // 6. UserInfo, bound to the ID token's subject.
  step("userinfo");
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub, {
    DPoP,
  });
  check(userinfo.sub === idClaims.sub, "userinfo sub");
  check(userinfo.email === input.email.toLowerCase(), `userinfo email ${userinfo.email}`);
  result.userinfo = userinfo;
  if (input.dpop) {
    // RFC 9449 7.1: the same token presented as a bearer token, without a proof, is refused.
    const stolen = await fetch(metadata.userinfo_endpoint, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    check(stolen.status === 401, `a bound token as bearer: HTTP ${stolen.status}`);
    result.bound_token_as_bearer = {
      status: stolen.status,
      challenge: stolen.headers.get("www-authenticate"),
    };
  }
  passed();

  // 7. Refresh: the refresh token rotates.
  step("refresh token grant");
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, {
    DPoP,
  });
  check(refreshed.token_type?.toLowerCase() === tokenType, `token_type ${refreshed.token_type}`);
  check(typeof refreshed.access_token === "string", "refresh gave no access_token");
  check(typeof refreshed.refresh_token === "string", "refresh gave no new refresh_token");
  check(refreshed.refresh_token !== tokens.refresh_token, "refresh token did not rotate");
  check(refreshed.access_token !== tokens.access_token, "access token did not change");
  const refreshedClaims = refreshed.claims();
  if (refreshedClaims) {
    // OIDC Core 12.2: a refreshed ID token keeps iss, sub and aud.
    check(refreshedClaims.sub === idClaims.sub, "refreshed ID token sub changed");
  }
  result.refresh = {
    rotated: true,
    access_token_changed: true,
    id_token_returned: Boolean(refreshedClaims),
  };
  passed();

  // 8. Introspection (RFC 7662). Only confidential clients may introspect.
  step("introspection");
  if (isPublic) {
    const attempt = await expectFailure(client.tokenIntrospection(config, refreshed.access_token));
    result.introspection_active = attempt.failed
      ? { refused: true, status: attempt.status, error: attempt.error }
      : attempt.value;
    if (!attempt.failed) {
      check(attempt.value.active === true, "introspection: refreshed access token not active");
    }
  } else {
    const active = await client.tokenIntrospection(config, refreshed.access_token);
    check(active.active === true, "introspection: refreshed access token not active", active);
    check(active.client_id === undefined || active.client_id === input.client_id, "client_id");
    check(active.sub === undefined || active.sub === idClaims.sub, "introspection sub");
    result.introspection_active = active;
  }
  passed();

  // 9. Revocation (RFC 7009) of the access token.
  step("revocation");
  await client.tokenRevocation(config, refreshed.access_token, { token_type_hint: "access_token" });
  passed();

  step("introspection after revocation");
  if (isPublic) {
    result.introspection_revoked = { skipped: "public client" };
  } else {
    const inactive = await client.tokenIntrospection(config, refreshed.access_token);
    check(inactive.active === false, "revoked access token still active", inactive);
    result.introspection_revoked = inactive;
  }
  passed();

  step("userinfo after revocation");
  const afterRevoke = await expectFailure(
    client.fetchUserInfo(config, refreshed.access_token, idClaims.sub, { DPoP }),
  );
  check(afterRevoke.failed, "userinfo still answers with a revoked access token");
  check(afterRevoke.status === 401, `userinfo after revocation: HTTP ${afterRevoke.status}`);
  result.userinfo_after_revoke = afterRevoke;
  passed();

  // 10. RP-initiated logout with id_token_hint and state.
  step("end session");
  const logoutState = client.randomState();
  const endSessionUrl = client.buildEndSessionUrl(config, {
    id_token_hint: refreshed.id_token ?? tokens.id_token,
    post_logout_redirect_uri: input.post_logout_redirect_uri,
    state: logoutState,
  });
  const loggedOut = await browser.navigate(endSessionUrl, input.post_logout_redirect_uri, {
    ...input,
    allowLogin: false,
  });
  check(!loggedOut.loginPage, "logout led to a sign-in page");
  check(
    loggedOut.url.searchParams.get("state") === logoutState,
    `post-logout redirect does not echo state: ${loggedOut.url.href}`,
  );
  result.logout = {
    redirect: loggedOut.url.href,
    state_echoed: true,
  };
  passed();

  // 11. The browser session is gone: a new authorization request must ask to sign in again.
  step("session ended");
  const again = await authorizationUrlOf(config, input, {
    redirect_uri: input.redirect_uri,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
    code_challenge_method: "S256",
    nonce: client.randomNonce(),
    state: client.randomState(),
  });
  const reauth = await browser.navigate(again, input.redirect_uri, { ...input, allowLogin: false });
  check(
    reauth.loginPage === true,
    `after logout the authorization endpoint answered without sign-in: ${reauth.url.href}`,
  );
  result.session_ended = true;
  passed();

  result.ok = true;
}

// The body of the HTTP response behind an error, when there is one and it is still unread.
async function responseBody(err) {
  const response = [err?.response, err?.cause].find((value) => value instanceof Response);
  if (!response) return undefined;
  try {
    return (await response.clone().text()).slice(0, 2000);
  } catch {
    return undefined;
  }
}

main().then(
  () => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  },
  async (err) => {
    result.ok = false;
    result.failed_step = currentStep;
    result.error = describeError(err);
    const body = await responseBody(err);
    if (body !== undefined) result.error += ` body=${JSON.stringify(body)}`;
    if (err?.details !== undefined) result.details = err.details;
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.stderr.write(`openid-client interop failed at "${currentStep}": ${result.error}\n`);
    process.exitCode = 1;
  },
);
