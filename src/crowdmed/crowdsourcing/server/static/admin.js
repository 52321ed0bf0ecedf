// crowdmed admin page: reload when new votes arrived (every 15 s), unless a form is being filled.
"use strict";
(function () {
  const progress = document.getElementById("progress");
  const seen = progress ? progress.dataset.votes : null;
  function busy() {
    return Array.from(document.querySelectorAll("input:not([type=hidden])")).some(
      (i) => i.value !== "" || i === document.activeElement
    );
  }
  async function poll() {
    try {
      const r = await fetch("/admin/api/progress", { credentials: "same-origin" });
      if (r.ok) {
        const data = await r.json();
        if (String(data.votes) !== seen && !busy()) { window.location.assign("/admin"); return; }
      }
    } catch (e) { /* the server may be restarting; try again later */ }
    setTimeout(poll, 15000);
  }
  setTimeout(poll, 15000);
})();
