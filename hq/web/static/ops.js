// The operations room's shared script (no inline script anywhere: the CSP forbids it).
// - bodycam.fetch(url, options): fetch with the session's CSRF token on every non-GET request.
// - After the session's idle timeout without activity the page reloads, so the server's
//   sign-in page replaces a screen whose session has ended.
"use strict";
(function () {
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  function opsFetch(url, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    const method = (opts.method || "GET").toUpperCase();
    const headers = new Headers(opts.headers || {});
    if (!["GET", "HEAD", "OPTIONS"].includes(method)) headers.set("X-CSRF-Token", csrfToken());
    if (!headers.has("Accept")) headers.set("Accept", "application/json");
    opts.headers = headers;
    return fetch(url, opts).then(function (response) {
      if (response.status === 401) window.location.reload();
      return response;
    });
  }
  window.bodycam = { csrfToken: csrfToken, fetch: opsFetch };

  const idle = Number(document.body && document.body.dataset.idleS);
  if (idle > 0) {
    let timer = null;
    const arm = function () {
      if (timer) clearTimeout(timer);
      timer = setTimeout(function () { window.location.reload(); }, (idle + 1) * 1000);
    };
    ["keydown", "pointerdown"].forEach(function (ev) { document.addEventListener(ev, arm, { passive: true }); });
    arm();
  }
})();
