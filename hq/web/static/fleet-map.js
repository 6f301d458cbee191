// The operations room's map: every unit at its last position, coloured by state, clustered when
// dense, moved live by the server's event stream. Tiles come from headquarters (/ops/tiles), never
// from an online service. The table beside the map lists the same units for keyboard and screen
// reader users; "last contact" counts up every second.
"use strict";
(function () {
  const box = document.getElementById("fleet-map");
  if (!box || !window.L) return;
  const prefix = box.dataset.prefix;
  const noContactS = Number(box.dataset.noContactS) || 300;
  const watch = box.dataset.watch === "yes"; // this user may watch live, and headquarters brokers it
  const status = document.getElementById("live-status");
  const tbody = document.querySelector("#unit-table tbody");
  const count = document.getElementById("unit-count");

  const map = L.map(box, { minZoom: Number(box.dataset.minZoom), maxZoom: Number(box.dataset.maxZoom),
                           worldCopyJump: true, keyboard: true }).setView([20, 0], Number(box.dataset.minZoom) + 1);
  L.tileLayer(prefix + "/tiles/{z}/{x}/{y}.png", {
    minZoom: Number(box.dataset.minZoom), maxZoom: Number(box.dataset.maxZoom),
    attribution: box.dataset.attribution,
  }).addTo(map);
  map.attributionControl.setPrefix(false);
  const cluster = L.markerClusterGroup({ maxClusterRadius: 40, spiderfyOnMaxZoom: true });
  map.addLayer(cluster);

  const units = new Map(); // device_id -> {unit, marker, row}
  let fitted = false;

  function since(ns) {
    if (!ns) return "never";
    const s = Math.max(0, Math.round(Date.now() / 1000 - ns / 1e9));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.floor(s / 60) + " min ago";
    if (s < 172800) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " days ago";
  }

  function shownState(unit) {
    // Offline between heartbeats is decided here too, so a silent unit greys without waiting for the sweep.
    if (unit.state !== "alarm" && unit.state !== "revoked" && unit.last_contact_utc_ns &&
        Date.now() / 1000 - unit.last_contact_utc_ns / 1e9 > noContactS) return "offline";
    return unit.state;
  }

  function icon(state) {
    return L.divIcon({ className: "unit-marker state-" + state, html: "<span></span>", iconSize: [18, 18] });
  }

  function label(unit, state) {
    return unit.device_id + ": " + state + ", last contact " + since(unit.last_contact_utc_ns);
  }

  function popup(unit, state) {
    const div = document.createElement("div");
    const a = document.createElement("a");
    a.href = prefix + "/units/" + encodeURIComponent(unit.device_id);
    a.textContent = unit.device_id;
    const p = document.createElement("p");
    p.textContent = state + "; last contact " + since(unit.last_contact_utc_ns) +
      (unit.battery_pct != null ? "; battery " + Math.round(unit.battery_pct) + " %" : "") +
      (unit.alerts.length ? "; alerts: " + unit.alerts.map(function (x) { return x.title; }).join(", ") : "");
    div.append(a, p);
    if (watch) {
      // the live panel asks the unit to stream (a unit not recording or out of coverage may not)
      const w = document.createElement("a");
      w.href = prefix + "/live/" + encodeURIComponent(unit.device_id);
      w.className = "watch-live";
      w.textContent = "Watch live";
      w.setAttribute("aria-label", "Watch " + unit.device_id + " live");
      div.append(w);
    }
    return div;
  }

  function makeRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.unit = id;
    const th = document.createElement("th");
    th.scope = "row";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.textContent = id;
    button.addEventListener("click", function () { focusUnit(id); });
    th.append(button);
    const stateCell = document.createElement("td");
    const badge = document.createElement("span");
    stateCell.append(badge);
    const contact = document.createElement("td");
    tr.append(th, stateCell, contact);
    tbody.append(tr);
    return tr;
  }

  function paintRow(entry) {
    const state = shownState(entry.unit);
    const row = entry.row;
    row.dataset.state = state;
    row.dataset.lat = entry.unit.lat_deg == null ? "" : entry.unit.lat_deg;
    row.dataset.lon = entry.unit.lon_deg == null ? "" : entry.unit.lon_deg;
    const badge = row.children[1].firstChild;
    badge.className = "state state-" + state;
    badge.textContent = state;
    row.children[2].textContent = since(entry.unit.last_contact_utc_ns);
    if (entry.marker) {
      if (entry.marker.options.shownState !== state) {
        entry.marker.setIcon(icon(state));
        entry.marker.options.shownState = state;
      }
      entry.marker.options.title = label(entry.unit, state);
      const el = entry.marker.getElement();
      if (el) { el.title = label(entry.unit, state); el.setAttribute("aria-label", label(entry.unit, state)); }
    }
  }

  function upsert(unit) {
    let entry = units.get(unit.device_id);
    if (!entry) {
      entry = { unit: unit, marker: null, row: makeRow(unit.device_id) };
      units.set(unit.device_id, entry);
    }
    entry.unit = unit;
    const has = unit.lat_deg != null && unit.lon_deg != null;
    const state = shownState(unit);
    if (has && !entry.marker) {
      entry.marker = L.marker([unit.lat_deg, unit.lon_deg], { icon: icon(state), keyboard: true,
                                                              title: label(unit, state), alt: unit.device_id });
      entry.marker.options.shownState = state;
      entry.marker.bindPopup(function () { return popup(entry.unit, shownState(entry.unit)); });
      cluster.addLayer(entry.marker);
    } else if (has) {
      const at = entry.marker.getLatLng();
      if (at.lat !== unit.lat_deg || at.lng !== unit.lon_deg) {
        // markercluster places a moved marker again only when it leaves and rejoins the group.
        cluster.removeLayer(entry.marker);
        entry.marker.setLatLng([unit.lat_deg, unit.lon_deg]);
        cluster.addLayer(entry.marker);
      }
    } else if (entry.marker) {
      cluster.removeLayer(entry.marker);
      entry.marker = null;
    }
    paintRow(entry);
    count.textContent = "(" + units.size + ")";
  }

  function focusUnit(id) {
    const entry = units.get(id);
    if (!entry || !entry.marker) return;
    cluster.zoomToShowLayer(entry.marker, function () { entry.marker.openPopup(); });
  }

  function fit() {
    const points = [];
    units.forEach(function (e) { if (e.marker) points.push(e.marker.getLatLng()); });
    if (points.length) map.fitBounds(L.latLngBounds(points).pad(0.2), { maxZoom: Number(box.dataset.maxZoom) });
    fitted = true;
  }

  function load() {
    return window.bodycam.fetch(prefix + "/api/units").then(function (r) {
      if (!r.ok) throw new Error("units: " + r.status);
      return r.json();
    }).then(function (doc) {
      doc.units.forEach(upsert);
      if (!fitted) fit();
      box.dataset.loaded = "true";
      window.bodycamMap.loadedAt = performance.now();
    });
  }

  let source = null;
  function listen() {
    source = new EventSource(prefix + "/events");
    source.onopen = function () { status.textContent = "Live: updates arrive as units report."; };
    source.addEventListener("unit", function (ev) {
      const doc = JSON.parse(ev.data);
      upsert(doc.unit);
      window.bodycamMap.updates += 1;
      window.bodycamMap.lastUpdate = { id: doc.unit.device_id, at: performance.now(), wall: Date.now() };
    });
    source.addEventListener("alert", function () { window.bodycamMap.alertEvents += 1; });
    source.addEventListener("resync", function () {
      source.close();
      load().then(listen);
    });
    source.addEventListener("end", function (ev) {
      source.close();
      const why = JSON.parse(ev.data).reason;
      status.textContent = "Live updates stopped: " + why + ".";
      if (why === "signed out") window.location.reload();
    });
    source.onerror = function () { status.textContent = "Reconnecting live updates…"; };
  }

  window.bodycamMap = {
    map: map, updates: 0, alertEvents: 0, loadedAt: null, lastUpdate: null,
    position: function (id) {
      const e = units.get(id);
      if (!e || !e.marker) return null;
      const at = e.marker.getLatLng();
      return [at.lat, at.lng];
    },
    state: function (id) { const e = units.get(id); return e ? shownState(e.unit) : null; },
  };
  setInterval(function () { units.forEach(paintRow); }, 1000);
  load().then(listen, function (err) { status.textContent = "Could not load the units: " + err.message; });
})();
