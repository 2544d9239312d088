// A Copy button beside a value shown only once (a client secret, an API token, a sign-in link):
// templates/_copy.html ``copy_button`` (a button with data-copy="ELEMENT_ID", hidden). It is shown
// only where this script runs; the value itself stays selectable text, which is the way left when
// the browser refuses the clipboard.
"use strict";

(() => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
        button.setAttribute("aria-label", "Copied");
      } catch (_) {
        button.textContent = "Copy failed: select it instead";
      }
    });
  }
})();
