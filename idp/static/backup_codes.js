// Copy and print for the backup codes page.
"use strict";

(() => {
  const codes = () =>
    Array.from(document.querySelectorAll("#backup-codes code"), (c) => c.textContent).join("\n");
  const copy = document.getElementById("copy-codes");
  const print = document.getElementById("print-codes");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(codes());
      copy.textContent = "Copied";
    } catch (_) {
      copy.textContent = "Copy failed: select the codes instead";
    }
  });
  print.addEventListener("click", () => window.print());
})();
