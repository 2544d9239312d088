// WebAuthn Signal API (L3 5.1.10): keep credential managers in step with the account.
// Feature-detected: a no-op where the browser has no such method.
"use strict";

(() => {
  const node = document.getElementById("signal-details");
  if (!node || typeof window.PublicKeyCredential !== "function") return;
  const wanted = (node.dataset.signal || "").split(" ");
  const { rpId, userId } = node.dataset;
  if (wanted.includes("accepted") && PublicKeyCredential.signalAllAcceptedCredentials) {
    const ids = (node.dataset.accepted || "").split(",").filter(Boolean);
    PublicKeyCredential.signalAllAcceptedCredentials({
      rpId,
      userId,
      allAcceptedCredentialIds: ids,
    }).catch(() => {});
  }
  if (wanted.includes("details") && PublicKeyCredential.signalCurrentUserDetails) {
    PublicKeyCredential.signalCurrentUserDetails({
      rpId,
      userId,
      name: node.dataset.name,
      displayName: node.dataset.displayName,
    }).catch(() => {});
  }
})();
