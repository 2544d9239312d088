// The sign-in page: passkey autofill (conditional mediation) on load, a "Sign in with a passkey"
// button, email-first passkeys, and the password as the calm fallback. A failed or cancelled
// ceremony is never retried in a loop: the user decides what happens next.
"use strict";

(() => {
  const form = document.getElementById("login-form");
  const email = document.getElementById("email");
  const passwordStep = document.getElementById("password-step");
  const password = document.getElementById("password");
  const errors = document.getElementById("form-errors");
  const passkeyButton = document.getElementById("passkey-button");
  const divider = document.getElementById("passkey-divider");
  const usePasswordWrap = document.getElementById("use-password-wrap");
  const usePassword = document.getElementById("use-password");
  const submit = document.getElementById("continue");
  const W = idpWebAuthn;
  // A passwordless-only deployment renders no password step (sign-in policy).
  const passwordsAllowed = passwordStep !== null;

  const field = (name) => {
    const input = form.querySelector(`input[name="${name}"]`);
    return input ? input.value : "";
  };
  const say = (message) => {
    errors.replaceChildren();
    if (!message) return;
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = message;
    errors.append(p);
  };
  const showPassword = () => {
    if (!passwordsAllowed) return;
    passwordStep.hidden = false;
    password.required = true;
    usePasswordWrap.hidden = true;
    submit.textContent = "Sign in";
    form.dataset.step = "password";
    (email.value ? password : email).focus();
  };

  // Without WebAuthn the page is the plain email + password form.
  if (!W.supported()) return;

  // Email first: the password field waits until the user asks for it or no passkey works.
  const passwordAlreadyShown = errors.querySelector(".error") !== null;
  if (!passwordsAllowed) {
    form.dataset.step = "email";
  } else if (!passwordAlreadyShown) {
    passwordStep.hidden = true;
    password.required = false;
    submit.textContent = "Continue";
    form.dataset.step = "email";
    usePasswordWrap.hidden = false;
  }
  passkeyButton.hidden = false;
  divider.hidden = false;

  let pending = null; // the AbortController of the ceremony in flight
  // The page's own request options (no options request first). Its challenge serves until an
  // answer is posted or it is about to expire; then each ceremony asks for new options.
  const embedded = document.getElementById("passkey-options");
  let pageOptions = embedded ? JSON.parse(embedded.textContent) : null;
  const loadedAt = Date.now();
  const ceremonyOptions = async (body) => {
    const lifetime = pageOptions ? (pageOptions.publicKey.timeout || 300000) - 30000 : 0;
    if (pageOptions && Date.now() - loadedAt < lifetime) return pageOptions;
    pageOptions = null;
    const options = await W.postJSON(form.dataset.optionsUrl, body);
    if (!options.ok) throw new Error("options");
    return options.data;
  };

  const finish = async (ceremony, credential) => {
    if (ceremony === pageOptions) pageOptions = null; // the answer spends it, or it failed
    const result = await W.postJSON(form.dataset.verifyUrl, {
      challenge_id: ceremony.challenge_id,
      credential: W.credentialJSON(credential),
      request: field("request"),
      next: field("next"),
    });
    if (result.ok && result.data.redirect) {
      window.location.assign(result.data.redirect);
      return true;
    }
    // Signal API: the server is certain no account owns this credential.
    if (result.data.unknown_credential_id && PublicKeyCredential.signalUnknownCredential) {
      PublicKeyCredential.signalUnknownCredential({
        rpId: ceremony.publicKey.rpId,
        credentialId: result.data.unknown_credential_id,
      }).catch(() => {});
    }
    say(passwordsAllowed ? (result.data.message || "That passkey didn't work. Use your password instead.")
      : "That passkey didn't work. Try again.");
    showPassword();
    return false;
  };

  const run = async (mediation, body) => {
    if (pending) pending.abort();
    const controller = new AbortController();
    pending = controller;
    const ceremony = await ceremonyOptions(body);
    const request = { publicKey: W.requestOptions(ceremony.publicKey), signal: controller.signal };
    if (mediation) request.mediation = mediation;
    const credential = await navigator.credentials.get(request);
    if (pending === controller) pending = null;
    return finish(ceremony, credential);
  };

  // Conditional mediation: the browser's autofill offers passkeys in the email field.
  const startAutofill = async () => {
    if (!PublicKeyCredential.isConditionalMediationAvailable) return;
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    try {
      await run("conditional", {});
    } catch (error) {
      // Aborted by the button or email step, cancelled, or no passkey here: stay quiet.
    }
  };

  const modal = async (body) => {
    say("");
    try {
      await run(null, body);
    } catch (error) {
      if (error && error.name === "AbortError") return;
      say(passwordsAllowed
        ? "No passkey was used. You can try again, or use your password instead."
        : "No passkey was used. You can try again, or use another device with your passkey.");
      showPassword();
    }
  };

  passkeyButton.addEventListener("click", () => modal({}));
  if (usePassword) {
    usePassword.addEventListener("click", () => {
      if (pending) pending.abort();
      showPassword();
    });
  }
  form.addEventListener("submit", (event) => {
    if (form.dataset.step !== "email") return; // the password step submits normally
    event.preventDefault();
    if (!email.reportValidity()) return;
    // Email-first asks for a discoverable credential like the button: the server never lists
    // an email's credentials to an anonymous page (it would reveal which accounts exist).
    modal({});
  });

  startAutofill();
})();
