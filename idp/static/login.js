// The sign-in page: passkey autofill (conditional mediation) on load, a "Sign in with a passkey"
// button, email-first passkeys, and the password as the calm fallback. A failed or cancelled
// ceremony is never retried in a loop: the user decides what happens next. The autofill offered
// again after a cancelled dialog is no retry: it waits until the user picks a passkey.
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
  // The other ways in this page offers. Nobody is identified yet, so this must be true of every
  // account, one without a password too (a passwordless admin): never "use your password".
  const otherWays = passwordsAllowed
    ? "sign in with your password if you have one, or choose “Can't access your account?” below"
    : "or choose “Can't access your account?” below";

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
  // How long a challenge may still be answered: the server's lifetime (the options' timeout),
  // less a margin for the answer's way back.
  const usableFor = (options, since) =>
    (options.publicKey.timeout || 300000) - 30000 - (Date.now() - since);
  const ceremonyOptions = async (body) => {
    if (pageOptions && usableFor(pageOptions, loadedAt) > 0) {
      return { ceremony: pageOptions, since: loadedAt };
    }
    pageOptions = null;
    const since = Date.now();
    const options = await W.postJSON(form.dataset.optionsUrl, body);
    if (!options.ok) {
      // The server's own words where it has them (too many requests: wait and try again).
      const error = new Error(options.data.message || "");
      error.name = "IdpOptionsError";
      throw error;
    }
    return { ceremony: options.data, since };
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
    say(`That passkey didn't work. Try again, ${otherWays}.`);
    showPassword();
    return false;
  };

  // ``onWaiting(controller, usable)``: the request is now waiting for the user, and its
  // challenge may be answered for ``usable`` milliseconds more.
  const run = async (mediation, body, onWaiting) => {
    if (pending) pending.abort();
    const controller = new AbortController();
    pending = controller;
    const { ceremony, since } = await ceremonyOptions(body);
    if (controller.signal.aborted) throw new DOMException("replaced", "AbortError");
    const request = { publicKey: W.requestOptions(ceremony.publicKey), signal: controller.signal };
    if (mediation) request.mediation = mediation;
    if (onWaiting) onWaiting(controller, usableFor(ceremony, since));
    const credential = await navigator.credentials.get(request);
    if (pending === controller) pending = null;
    return finish(ceremony, credential);
  };

  // What went wrong, in the user's terms: a request that got no answer is no cancelled dialog.
  const failure = (error) => {
    if (error && error.name === "IdpNetworkError") {
      return "The sign-in did not reach idp (no connection). Check your connection and try again.";
    }
    if (error && error.name === "IdpOptionsError" && error.message) return error.message;
    if (error && error.name === "NotAllowedError") {
      return passwordsAllowed
        ? `No passkey was used. You can try again, ${otherWays}.`
        : "No passkey was used. You can try again, or use another device with your passkey.";
    }
    return `The passkey sign-in did not work. You can try again, ${otherWays}.`;
  };

  // Conditional mediation: the browser's autofill offers passkeys in the email field. The request
  // waits for the user as long as the page is open, so it is renewed with fresh options before
  // its challenge expires (the server refuses an answer to an expired one).
  // The deadline is read on the wall clock, every few seconds: a timer does not count the time
  // a computer sleeps (Chromium's run on a clock that stops in suspend), so one timer set for
  // the challenge's lifetime fired minutes after the wake, its challenge long expired meanwhile.
  const RENEWAL_CHECK = 15000;
  let renewal = null;
  let checkRenewal = null; // the waiting autofill request's check, run now when the user is back
  const checkNow = () => {
    if (!checkRenewal || document.visibilityState === "hidden") return;
    clearTimeout(renewal);
    checkRenewal();
  };
  const startAutofill = async () => {
    if (!PublicKeyCredential.isConditionalMediationAvailable) return;
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    clearTimeout(renewal);
    const renewBeforeExpiry = (controller, usable) => {
      const deadline = Date.now() + Math.max(usable, 10000); // never sooner than 10 s
      const check = () => {
        if (pending !== controller) return; // the button or the email step took over
        const left = deadline - Date.now();
        if (left > 0) {
          renewal = setTimeout(check, Math.min(left, RENEWAL_CHECK));
          return;
        }
        checkRenewal = null;
        controller.abort();
        startAutofill();
      };
      checkRenewal = check;
      renewal = setTimeout(check, Math.min(deadline - Date.now(), RENEWAL_CHECK));
    };
    try {
      if (!(await run("conditional", {}, renewBeforeExpiry))) startAutofill();
    } catch (error) {
      // Aborted (the button, the email step, a renewal), or nothing picked: stay quiet. An
      // answer that never reached idp is said (the button tries again; offering the autofill
      // again at once would ask the unreachable server again, and again).
      if (error && error.name === "IdpNetworkError") {
        say(failure(error));
        showPassword();
      }
    }
  };

  // The button and the email step: a modal ceremony, which aborts the autofill's request first.
  const modal = async (body) => {
    say("");
    clearTimeout(renewal);
    try {
      if (await run(null, body)) return;
    } catch (error) {
      if (error && error.name === "AbortError") return; // another ceremony, or the password
      say(failure(error));
      showPassword();
      // Unreached, or refused options (too many requests): the autofill would ask again at once.
      if (error && (error.name === "IdpNetworkError" || error.name === "IdpOptionsError")) return;
    }
    // Cancelled or failed: the autofill is offered again, as before the dialog. No retry: its
    // request waits until the user picks a passkey (WebAuthn L3 5.1.4 conditional mediation).
    startAutofill();
  };

  // Back at the page (after a sleep, say) or at the email field, where the autofill offers
  // passkeys: its challenge is checked at once, not at the next tick of the wall-clock check.
  document.addEventListener("visibilitychange", checkNow);
  window.addEventListener("pageshow", checkNow);
  window.addEventListener("focus", checkNow);
  email.addEventListener("focus", checkNow);

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

  // A passkey the user has just removed in this browser (the account page sent them here): the
  // credential manager is told first, so that the autofill does not offer it (WebAuthn L3
  // 5.1.10). Where the Signal API is missing, the autofill may offer it and idp refuses it.
  const forget = form.dataset.forgetCredential;
  if (forget && PublicKeyCredential.signalUnknownCredential) {
    const rpId = pageOptions ? pageOptions.publicKey.rpId : window.location.hostname;
    PublicKeyCredential.signalUnknownCredential({ rpId, credentialId: forget })
      .catch(() => {})
      .then(startAutofill);
  } else {
    startAutofill();
  }
})();
