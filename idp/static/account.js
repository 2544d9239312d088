// Adding a passkey (account page, recovery page, and the prompt after a password sign-in):
// the platform's modal ceremony, or a conditional create where the browser offers one so that the
// password manager can add a passkey without a prompt.
"use strict";

(() => {
  const button = document.getElementById("add-passkey");
  const status = document.getElementById("passkey-status");
  const nameInput = document.getElementById("passkey-name");
  const W = idpWebAuthn;
  if (!button) return;
  // The name typed before "Add a passkey" went to sign in again (a step-up), kept in this tab
  // only, until the page comes back ready to add it (the server's #passkey-resume line).
  const SAVED_NAME = "idp-add-passkey-name";
  const store = (() => {
    try {
      return window.sessionStorage;
    } catch (error) {
      return null; // storage refused (a privacy setting): the name is not kept
    }
  })();
  const savedName = store ? store.getItem(SAVED_NAME) : null;
  if (store) store.removeItem(SAVED_NAME);
  const say = (message, kind) => {
    status.replaceChildren();
    const p = document.createElement("p");
    p.className = kind || "muted";
    p.setAttribute("role", kind === "error" ? "alert" : "status");
    p.textContent = message;
    status.append(p);
  };
  const done = () => {
    if (button.dataset.then) window.location.assign(button.dataset.then);
    else window.location.reload();
  };
  // The first passkey of an account comes with backup codes: shown once, here, in the same
  // partial (and with the same Download, Copy and Print) as the backup codes page.
  const showCodes = (codes) => {
    status.replaceChildren();
    // The page's heading says what happened ("Add a passkey" would now be wrong).
    const pageHeading = document.querySelector("h1[data-after-passkey]");
    if (pageHeading) pageHeading.textContent = pageHeading.dataset.afterPasskey;
    // Nor do "No passkeys yet", the new passkey's name field or a page's invitation to add one
    // (data-before-passkey) apply any more.
    for (const stale of document.querySelectorAll(
      '#no-passkeys, label[for="passkey-name"], #passkey-name, [data-before-passkey]',
    )) {
      stale.hidden = true;
    }
    const heading = document.createElement("h2");
    // Under a page heading that now says "Passkey added", the codes' own heading says the rest.
    heading.textContent = pageHeading
      ? "Save your backup codes"
      : "Passkey added: save your backup codes";
    const intro = document.createElement("p");
    intro.setAttribute("role", "status");
    intro.textContent =
      "Each backup code signs you in once if you lose your devices. They are shown only now.";
    const block = document.getElementById("backup-codes-template").content.cloneNode(true);
    const root = block.querySelector("[data-backup-codes]");
    idpBackupCodes.fill(root, codes);
    idpBackupCodes.wire(root);
    const saved = document.createElement("button");
    saved.type = "button";
    saved.className = "primary";
    saved.id = "codes-saved";
    saved.textContent = "I saved them";
    saved.addEventListener("click", done);
    status.append(heading, intro, root, saved);
    button.hidden = true;
  };

  if (!W.supported()) {
    button.disabled = true;
    say("This browser cannot create passkeys.", "error");
    return;
  }

  let conditional = null; // the AbortController of a pending conditional create

  const register = async (mediation, signal) => {
    // A conditional create's challenge is of its own kind: its answer may come without user
    // presence and verification (WebAuthn L3 5.1.3), which the server accepts for it alone.
    const ceremony = mediation ? { mediation } : {};
    const options = await W.postJSON(button.dataset.optionsUrl, ceremony);
    if ((options.status === 401 || options.status === 403) && options.data.redirect) {
      // The session ended (signed out elsewhere, idle too long), or the step-up: adding a
      // sign-in method needs a recent sign-in. Either way, sign in and come back, to this button
      // with the name typed so far.
      if (store && nameInput && nameInput.value) store.setItem(SAVED_NAME, nameInput.value);
      window.location.assign(options.data.redirect);
      return null;
    }
    if (!options.ok) throw new Error("options");
    const request = { publicKey: W.creationOptions(options.data.publicKey) };
    if (mediation) request.mediation = mediation;
    if (signal) request.signal = signal;
    const credential = await navigator.credentials.create(request);
    const result = await W.postJSON(button.dataset.registerUrl, {
      ...ceremony,
      challenge_id: options.data.challenge_id,
      credential: W.credentialJSON(credential),
      name: nameInput ? nameInput.value : "",
    });
    if (!result.ok) {
      // idp did not store the credential the authenticator just made (and no account holds its
      // id): the credential manager is told to forget it, so that its autofill does not offer a
      // passkey that signs nobody in (WebAuthn L3 5.1.10). Never on a request that got no
      // answer: the server may have stored it.
      const unknown = result.data.unknown_credential_id;
      if (unknown && PublicKeyCredential.signalUnknownCredential) {
        PublicKeyCredential.signalUnknownCredential({
          rpId: options.data.publicKey.rp.id,
          credentialId: unknown,
        }).catch(() => {});
      }
      // idp's own words for the refusal (a rule of the deployment says why trying again will not
      // help), shown as they are by the click's handler.
      const refusal = new Error(result.data.message || "");
      refusal.name = "IdpRefusal";
      throw refusal;
    }
    return result.data;
  };
  const finish = (data) => {
    if (!data) return;
    if (data.backup_codes && data.backup_codes.length) showCodes(data.backup_codes);
    else {
      say(`Passkey “${data.name}” added.`, "info");
      done();
    }
  };

  button.addEventListener("click", async () => {
    // One WebAuthn request at a time: Chromium refuses the click's modal create while a
    // conditional one is pending ("A request is already pending").
    if (conditional) conditional.abort();
    conditional = null;
    button.disabled = true;
    try {
      finish(await register(null));
    } catch (error) {
      // WebAuthn L3 6.3.2 step 3: an authenticator that holds one of excludeCredentials (this
      // account's passkeys) refuses with InvalidStateError. Trying again would not help.
      if (error && error.name === "InvalidStateError") {
        say(
          "This device already has a passkey for this account: you can sign in with it. " +
            "To add another, use a different device, phone or security key.",
          "error",
        );
        return;
      }
      if (error && error.name === "NotAllowedError") {
        say("The passkey was not added (cancelled or timed out). You can try again.", "error");
        return;
      }
      if (error && error.name === "IdpNetworkError") {
        say("The passkey was not added: idp could not be reached. Check your connection and " +
          "try again.", "error");
        return;
      }
      if (error && error.name === "IdpRefusal" && error.message) {
        say(error.message, "error");
        return;
      }
      say("The passkey was not added. You can try again.", "error");
    } finally {
      button.disabled = false;
    }
  });
  // The page serves the button disabled (templates/account/_add_passkey.html): a click before
  // this script ran would have done nothing, silently.
  button.disabled = false;

  // Back from the sign-in the button asked for: its name again, the button in view, and the
  // address without ?resume (a reload once the passkey is added would say "continue" again).
  if (document.getElementById("passkey-resume")) {
    if (savedName && nameInput && !nameInput.value) nameInput.value = savedName;
    const url = new URL(window.location.href);
    url.searchParams.delete("resume");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    button.scrollIntoView({ block: "center" });
    button.focus({ preventScroll: true });
  }

  // WebAuthn L3 5.1.3 conditional create: only on the prompt right after a password sign-in.
  if ("conditionalCreate" in button.dataset && PublicKeyCredential.getClientCapabilities) {
    conditional = new AbortController();
    const { signal } = conditional;
    PublicKeyCredential.getClientCapabilities()
      .then((caps) =>
        caps && caps.conditionalCreate && !signal.aborted ? register("conditional", signal) : null,
      )
      .then(finish)
      .catch(() => {});
  }
})();
