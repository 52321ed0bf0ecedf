// crowdmed annotator page: one item at a time, votes sent with a client-generated id so that a
// retried submission counts once. No framework, no build step.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const img = document.getElementById("image");
  const status = document.getElementById("status");
  const buttons = Array.from(document.querySelectorAll("button.answer"));
  const zoomLevel = document.getElementById("zoom-level");
  let current = null; // {key, image}
  let busy = false;
  let zoom = 1;

  function newVoteId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const a = new Uint8Array(16);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setZoom(z) {
    zoom = Math.min(8, Math.max(0.25, z));
    img.style.transform = "scale(" + zoom + ")";
    zoomLevel.textContent = Math.round(zoom * 100) + "%";
  }

  function enable(on) {
    buttons.forEach((b) => { b.disabled = !on; });
  }

  async function loadNext() {
    enable(false);
    const r = await fetch("/api/next", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const data = await r.json();
    if (!r.ok) { status.textContent = data.detail || "Error " + r.status; return; }
    show(data);
  }

  function show(data) {
    status.textContent = data.message;
    document.body.dataset.phase = data.phase;
    current = data.item;
    if (!current) { img.hidden = true; return; }
    img.onload = () => { enable(true); };
    img.src = current.image;
    img.hidden = false;
    setZoom(1);
  }

  async function send(label) {
    if (busy || !current) return;
    busy = true;
    enable(false);
    // The same vote id on every retry: the server counts the answer once.
    const body = JSON.stringify({ item: current.key, label: label, vote_id: newVoteId() });
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch("/api/votes", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
          body: body,
        });
        const d = await r.json();
        busy = false;
        if (r.ok) { show(d.next); return; }
        if (r.status < 500) { status.textContent = d.detail; await loadNext(); return; }
      } catch (e) {
        status.textContent = "Connection lost; retrying…";
      }
      await new Promise((res) => setTimeout(res, Math.min(5000, 500 * (attempt + 1))));
    }
  }

  buttons.forEach((b) => b.addEventListener("click", () => {
    const v = b.dataset.label;
    send(v === "unsure" ? "unsure" : parseInt(v, 10));
  }));
  document.getElementById("zoom-in").addEventListener("click", () => setZoom(zoom * 1.5));
  document.getElementById("zoom-out").addEventListener("click", () => setZoom(zoom / 1.5));
  document.getElementById("zoom-reset").addEventListener("click", () => setZoom(1));
  document.getElementById("viewer").addEventListener("wheel", (e) => {
    e.preventDefault();
    setZoom(zoom * (e.deltaY < 0 ? 1.2 : 1 / 1.2));
  }, { passive: false });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "+" || e.key === "=") { setZoom(zoom * 1.5); return; }
    if (e.key === "-") { setZoom(zoom / 1.5); return; }
    if (e.key === "r") { setZoom(1); return; }
    if (e.key === "u" || e.key === "U") { if (!buttons[0].disabled) send("unsure"); return; }
    const n = parseInt(e.key, 10);
    if (n >= 1 && n < buttons.length) {
      if (!buttons[0].disabled) send(n - 1);
    }
  });
  loadNext();
})();
