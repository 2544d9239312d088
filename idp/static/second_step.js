// The second step after a password: "Use a passkey" asks for this user's passkeys (the server
// knows the user from the pending sign-in, not from anything the page sends).
"use strict";

(() => {
  const button = document.getElementById("passkey-button");
  const errors = document.getElementById("form-errors");
  const W = idpWebAuthn;
  if (!button || !W.supported()) {
    if (button) button.hidden = true;
    return;
  }
  const say = (message) => {
    errors.replaceChildren();
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = message;
    errors.append(p);
  };
  button.addEventListener("click", async () => {
    try {
      const options = await W.postJSON(button.dataset.optionsUrl, { partial: true });
      if (!options.ok) throw new Error("options");
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
      say("No passkey was used. Use a code instead.");
    }
  });
  button.disabled = false; // served disabled (templates/login/second_step.html) until now
})();
