// The account page: add a passkey with the platform's modal ceremony.
"use strict";

(() => {
  const button = document.getElementById("add-passkey");
  const status = document.getElementById("passkey-status");
  const nameInput = document.getElementById("passkey-name");
  const W = idpWebAuthn;
  const say = (message, kind) => {
    status.replaceChildren();
    const p = document.createElement("p");
    p.className = kind || "muted";
    p.setAttribute("role", kind === "error" ? "alert" : "status");
    p.textContent = message;
    status.append(p);
  };

  if (!W.supported()) {
    button.disabled = true;
    say("This browser cannot create passkeys.", "error");
    return;
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const options = await W.postJSON(button.dataset.optionsUrl, {});
      if (options.status === 403 && options.data.redirect) {
        // Step-up: adding a sign-in method needs a recent sign-in.
        window.location.assign(options.data.redirect);
        return;
      }
      if (!options.ok) throw new Error("options");
      const credential = await navigator.credentials.create({
        publicKey: W.creationOptions(options.data.publicKey),
      });
      const result = await W.postJSON(button.dataset.registerUrl, {
        challenge_id: options.data.challenge_id,
        credential: W.credentialJSON(credential),
        name: nameInput.value,
      });
      if (!result.ok) throw new Error(result.data.message || "register");
      say(`Passkey “${result.data.name}” added.`, "info");
      window.location.reload();
    } catch (error) {
      say("The passkey was not added. You can try again.", "error");
    } finally {
      button.disabled = false;
    }
  });
})();
