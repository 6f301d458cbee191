// The alerts page follows the live stream: when an alert is raised, cleared or acknowledged
// anywhere, the page reloads (at most every two seconds) unless a button has the focus.
"use strict";
(function () {
  const prefix = document.querySelector('link[rel="icon"]').getAttribute("href").replace(/\/static\/.*$/, "");
  const source = new EventSource(prefix + "/events");
  let due = null;
  source.addEventListener("alert", function () {
    if (due) return;
    due = setTimeout(function () {
      due = null;
      if (document.activeElement && document.activeElement.tagName === "BUTTON") return;
      window.location.reload();
    }, 2000);
  });
  source.addEventListener("end", function () { source.close(); });
  window.addEventListener("beforeunload", function () { source.close(); });
})();
