// The second step after a password. The password step's answer is this page (login/views.py):
// its history entry takes the page's own address (history.replaceState), so that a reload or a
// return to it asks for the second step (a GET) instead of posting the password again
// (tests/browser/test_fallback.py holds a browser to it).
// "Use a passkey" asks for this user's passkeys (the server knows the user from the pending
// sign-in, not from anything the page sends).
"use strict";

(() => {
  const address = document.currentScript && document.currentScript.dataset.address;
  if (address && window.location.pathname !== address) {
    window.history.replaceState(null, "", address);
  }
  const button = document.getElementById("passkey-button");
  const errors = document.getElementById("form-errors");
  if (!button || typeof idpWebAuthn === "undefined" || !idpWebAuthn.supported()) {
    if (button) button.hidden = true;
    return;
  }
  const W = idpWebAuthn;
  const say = (message) => {
    errors.replaceChildren();
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = message;
    errors.append(p);
  };
  // What went wrong, in the user's terms: "No passkey was used" is a cancelled or timed-out
  // dialog (NotAllowedError, WebAuthn L3 5.1.4.1) only; an answer or a request that never
  // reached idp is said as such (webauthn.js names it IdpNetworkError).
  const failure = (error) => {
    if (error && error.name === "IdpNetworkError") {
      return "The passkey check did not reach idp (no connection). Check your connection and " +
        "try again, or use a code instead.";
    }
    if (error && error.name === "IdpOptionsError" && error.message) return error.message;
    if (error && error.name === "NotAllowedError") return "No passkey was used. Use a code instead.";
    return "The passkey check did not work. Try again, or use a code instead.";
  };
  button.addEventListener("click", async () => {
    button.disabled = true; // one ceremony at a time: a second would be refused as pending
    try {
      const options = await W.postJSON(button.dataset.optionsUrl, { partial: true });
      if (!options.ok) {
        const error = new Error(options.data.message || "");
        error.name = "IdpOptionsError";
        throw error;
      }
      const credential = await navigator.credentials.get({
        publicKey: W.requestOptions(options.data.publicKey),
      });
      const result = await W.postJSON(button.dataset.verifyUrl, {
        challenge_id: options.data.challenge_id,
        credential: W.credentialJSON(credential),
        partial: true,
      });
      if (result.ok && result.data.redirect) {
        window.location.assign(result.data.redirect);
        return;
      }
      say(result.data.message || "That passkey didn't work. Use a code instead.");
    } catch (error) {
      say(failure(error));
    } finally {
      button.disabled = false;
    }
  });
  button.disabled = false; // served disabled (templates/login/second_step.html) until now
})();
