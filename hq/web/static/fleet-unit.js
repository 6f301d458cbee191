// A unit's page: its last position on headquarters' own tiles.
"use strict";
(function () {
  const box = document.getElementById("unit-map");
  if (!box || !window.L) return;
  const at = [Number(box.dataset.lat), Number(box.dataset.lon)];
  const map = L.map(box, { minZoom: Number(box.dataset.minZoom), maxZoom: Number(box.dataset.maxZoom) })
    .setView(at, Number(box.dataset.maxZoom));
  L.tileLayer(box.dataset.prefix + "/tiles/{z}/{x}/{y}.png", {
    minZoom: Number(box.dataset.minZoom), maxZoom: Number(box.dataset.maxZoom), attribution: box.dataset.attribution,
  }).addTo(map);
  map.attributionControl.setPrefix(false);
  L.marker(at, { icon: L.divIcon({ className: "unit-marker state-" + box.dataset.state, html: "<span></span>",
                                   iconSize: [18, 18] }), keyboard: false }).addTo(map);
})();
