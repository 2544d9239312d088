// Small WebAuthn helpers shared by the sign-in and account pages. No framework, no inline code:
// the pages load this under a CSP nonce.
"use strict";

const idpWebAuthn = (() => {
  const toBytes = (b64url) => {
    const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  };
  const toB64url = (buffer) => {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (const b of bytes) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  // WebAuthn L3 5.1.10: parse*OptionsFromJSON and toJSON where the browser has them.
  const requestOptions = (json) => {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: toBytes(json.challenge),
      allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) })),
    };
  };
  const creationOptions = (json) => {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: toBytes(json.challenge),
      user: { ...json.user, id: toBytes(json.user.id) },
      excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) })),
    };
  };
  // What reading may throw yields ``fallback``: some credential managers' browser extensions
  // hand back a credential whose fields are copied onto an object that inherits the browser's
  // prototype, so that the inherited toJSON, getTransports or authenticatorAttachment getter
  // throws "Illegal invocation"; such a credential is serialised field by field, as where the
  // browser has no toJSON (WebAuthn L3 5.1.10 names what the JSON holds).
  const attempt = (read, fallback) => {
    try {
      return read();
    } catch (_) {
      return fallback;
    }
  };
  const credentialJSON = (credential) => {
    if (typeof credential.toJSON === "function") {
      const json = attempt(() => credential.toJSON(), null);
      if (json && typeof json === "object") return json;
    }
    const r = credential.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = attempt(() => r.getTransports(), []);
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) response.userHandle = toB64url(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response,
      authenticatorAttachment: attempt(() => credential.authenticatorAttachment, null),
      clientExtensionResults: attempt(() => credential.getClientExtensionResults(), {}),
    };
  };

  const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;
  // A request that never got an answer (offline, the connection cut) rejects with an error named
  // "IdpNetworkError", told apart from the ceremony's own (AbortError, NotAllowedError, ...).
  const postJSON = async (url, body) => {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(body || {}),
      });
    } catch (_) {
      const error = new Error("idp could not be reached");
      error.name = "IdpNetworkError";
      throw error;
    }
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = {};
    }
    return { ok: response.ok, status: response.status, data };
  };

  const supported = () =>
    typeof window.PublicKeyCredential === "function" && !!navigator.credentials;

  return { requestOptions, creationOptions, credentialJSON, postJSON, supported };
})();
