// Download, Copy and Print for new backup codes (templates/account/_backup_codes.html): on the
// backup codes page, and for the codes static/account.js shows after a first passkey.
"use strict";

const idpBackupCodes = (() => {
  const listed = (root) =>
    Array.from(root.querySelectorAll("#backup-codes code"), (c) => c.textContent.trim());

  // Put ``codes`` into a fresh copy of the partial (account.js: the codes came as JSON).
  const fill = (root, codes) => {
    const list = root.querySelector("#backup-codes");
    list.replaceChildren();
    for (const code of codes) {
      const item = document.createElement("li");
      const text = document.createElement("code");
      text.textContent = code;
      item.append(text);
      list.append(item);
    }
    root.querySelector("#download-codes").href =
      "data:text/plain;charset=utf-8," + encodeURIComponent(codes.join("\n"));
  };

  const wire = (root) => {
    const copy = root.querySelector("#copy-codes");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(listed(root).join("\n"));
        copy.textContent = "Copied";
      } catch (_) {
        copy.textContent = "Copy failed: select the codes instead";
      }
    });
    // The print style sheet (style.css, @media print) prints only the codes.
    const print = root.querySelector("#print-codes");
    print.addEventListener("click", () => window.print());
    // Served disabled (templates/account/_backup_codes.html) until their clicks do something.
    copy.disabled = false;
    print.disabled = false;
  };

  for (const root of document.querySelectorAll("[data-backup-codes]")) wire(root);
  return { fill, wire };
})();
