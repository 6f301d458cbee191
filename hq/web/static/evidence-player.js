// A recording's page: the player, its timeline with the marks, and the GNSS trail on the map.
// The server streams a fragmented MP4 from one segment on (play.mp4?from_seq=N) whose time 0 is
// that segment's first keyframe; its answer says where that lies on the recording's timeline
// (X-Bodycam-Start-Ms) and its codecs. The player feeds it to a MediaSource offset by that much,
// so the video's currentTime is the recording's position. A seek outside what is loaded asks for
// the segment holding the target. Without MediaSource it falls back to a plain src (offset by
// the segment's start). window.bodycamPlayer: when play was pressed and the first frame shown
// (read by the browser tests and `make bench`).
"use strict";
(function () {
  const root = document.getElementById("player");
  if (!root) return;
  const tl = JSON.parse(root.dataset.timeline);
  const video = document.getElementById("video");
  const thermal = document.getElementById("thermal");
  const playButton = document.getElementById("play");
  const position = document.getElementById("position");
  const at = document.getElementById("at");
  const atUtc = document.getElementById("at-utc");
  const status = document.getElementById("player-status");
  const line = document.getElementById("timeline");
  const cameraSelect = document.getElementById("camera");  // only when the recording has several
  const AHEAD_S = 60, BEHIND_S = 30;  // what a MediaSource keeps around the playhead
  const state = { seq: null, baseMs: 0, pressedAt: null, firstFrameAt: null, firstFrameMediaS: null,
                  loads: 0, error: null, dragging: false, mode: window.MediaSource ? "mse" : "src" };
  window.bodycamPlayer = state;

  function clock(ms) {
    const tenths = Math.floor(ms / 100) % 10, s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + two(m) : String(m)) + ":" + two(sec) + "." + tenths;
  }
  function segmentAt(ms) {
    let found = tl.segments[0];
    for (const s of tl.segments) if (s.offset_ms <= ms) found = s;
    return found;
  }
  function nowMs() { return state.baseMs + video.currentTime * 1000; }
  function show() {
    const ms = Math.max(0, Math.min(nowMs(), tl.duration_ms));
    if (!state.dragging) position.value = String(Math.round(ms));
    at.textContent = clock(ms);
    const seg = segmentAt(ms);
    atUtc.textContent = new Date(seg.utc_start_ms + ms - seg.offset_ms).toISOString()
      .replace("T", " ").replace("Z", " UTC");
    position.setAttribute("aria-valuetext", clock(ms));
  }
  function say(text) { status.textContent = text; }
  function failed(message) {
    state.error = message;
    say(message);
  }

  function firstFrame() {
    const mark = (now, meta) => {
      if (state.firstFrameAt === null) {
        state.firstFrameAt = now;
        state.firstFrameMediaS = meta ? meta.mediaTime : video.currentTime;
      }
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback((now, meta) => mark(performance.now(), meta));
    else video.addEventListener("playing", () => mark(performance.now(), null), { once: true });
  }

  // -- feeding a video element ---------------------------------------------------------------
  function errorOf(answer) {
    return answer.json().then((doc) => (doc.error ? doc.error.message : "HTTP " + answer.status),
                              () => "HTTP " + answer.status);
  }
  function whenIdle(sb) {
    return sb.updating ? new Promise((resolve) => sb.addEventListener("updateend", resolve, { once: true }))
      : Promise.resolve();
  }
  function append(sb, chunk) {
    return whenIdle(sb).then(() => new Promise(function (resolve, reject) {
      sb.addEventListener("updateend", resolve, { once: true });
      try { sb.appendBuffer(chunk); } catch (err) { reject(err); }
    }));
  }
  function roomFor(el, sb, token) {
    // keep at most AHEAD_S buffered ahead of the playhead; drop what lies far behind it
    return new Promise(function wait(resolve) {
      if (el.feed !== token) return resolve();
      const b = sb.buffered;
      if (b.length && el.currentTime - b.start(0) > BEHIND_S && !sb.updating) {
        sb.remove(b.start(0), el.currentTime - BEHIND_S / 2);
      }
      if (!b.length || b.end(b.length - 1) - el.currentTime < AHEAD_S) return whenIdle(sb).then(resolve);
      setTimeout(() => wait(resolve), 500);
    });
  }
  // Feed ``el`` from ``url``; ``ready(el)`` once its first piece is in.
  function feed(el, url, ready) {
    const token = {};
    el.feed = token;
    if (state.mode === "src") {
      el.src = url;
      el.addEventListener("loadeddata", () => { if (el.feed === token) ready(el); }, { once: true });
      el.load();
      return;
    }
    const source = new MediaSource();
    el.src = URL.createObjectURL(source);
    source.addEventListener("sourceopen", function () {
      URL.revokeObjectURL(el.src);
      fetch(url, { credentials: "same-origin" }).then(function (answer) {
        if (!answer.ok) return errorOf(answer).then((message) => { throw new Error(message); });
        const type = 'video/mp4; codecs="' + (answer.headers.get("X-Bodycam-Codecs") || "") + '"';
        if (!MediaSource.isTypeSupported(type)) throw new Error("This browser cannot play " + type + ".");
        const sb = source.addSourceBuffer(type);
        sb.timestampOffset = Number(answer.headers.get("X-Bodycam-Start-Ms") || 0) / 1000;
        const reader = answer.body.getReader();
        let first = true;
        const pump = function () {
          if (el.feed !== token) return reader.cancel();
          return reader.read().then(function (piece) {
            if (el.feed !== token) return reader.cancel();
            if (piece.done) {
              if (source.readyState === "open") return whenIdle(sb).then(() => source.endOfStream());
              return undefined;
            }
            return roomFor(el, sb, token).then(() => append(sb, piece.value)).then(function () {
              if (first && sb.buffered.length) {
                first = false;
                ready(el);
              }
              return pump();
            });
          });
        };
        return pump();
      }).catch(function (err) { if (el.feed === token) failed(err.message || String(err)); });
    }, { once: true });
  }

  function load(seg, targetMs, autoplay) {
    state.seq = seg.seq;
    state.baseMs = state.mode === "mse" ? 0 : seg.offset_ms;
    state.loads += 1;
    state.error = null;
    const url = root.dataset.src + "?from_seq=" + encodeURIComponent(seg.seq);
    const camera = cameraSelect ? "&camera=" + encodeURIComponent(cameraSelect.value) : "";
    say("Decrypting from segment " + seg.seq + "…");
    feed(video, url + "&rendition=video" + camera, function () {
      say("");
      const first = video.buffered.length ? video.buffered.start(0) * 1000 + state.baseMs : targetMs;
      seekWithin(Math.max(targetMs, first));
      if (autoplay) playBoth();
    });
    if (thermal) feed(thermal, url + "&rendition=thermal", () => { thermal.currentTime = video.currentTime; });
  }
  function seekWithin(ms) {
    video.currentTime = (ms - state.baseMs) / 1000;
    if (thermal) thermal.currentTime = video.currentTime;
  }
  function loaded(ms) {
    if (state.seq === null || ms < state.baseMs) return false;
    const t = (ms - state.baseMs) / 1000;
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= t && t <= video.buffered.end(i)) return true;
    }
    return false;
  }
  function seek(ms, autoplay) {
    ms = Math.max(0, Math.min(ms, tl.duration_ms));
    if (loaded(ms)) {
      seekWithin(ms);
      if (autoplay) playBoth();
    } else {
      load(segmentAt(ms), ms, autoplay);
    }
    show();
  }
  function playBoth() {
    const p = video.play();
    if (thermal) thermal.play().catch(() => {});
    return p.catch((err) => { if (err.name !== "AbortError") say("The browser could not play this: " + err.message); });
  }

  playButton.addEventListener("click", function () {
    if (state.seq === null) {
      state.pressedAt = performance.now();
      firstFrame();
      load(tl.segments[0], 0, true);
    } else if (video.paused) {
      playBoth();
    } else {
      video.pause();
      if (thermal) thermal.pause();
    }
  });
  video.addEventListener("play", () => { playButton.textContent = "Pause"; });
  video.addEventListener("pause", () => { playButton.textContent = "Play"; });
  video.addEventListener("timeupdate", function () {
    show();
    if (thermal && !video.paused && Math.abs(thermal.currentTime - video.currentTime) > 0.3) {
      thermal.currentTime = video.currentTime;
    }
  });
  video.addEventListener("ended", function () {
    // the stream ended before the recording did: a segment without a camera track was skipped
    if (nowMs() + 500 < tl.duration_ms) say("Playback ended at " + clock(nowMs()) + ".");
  });
  video.addEventListener("error", function () {
    if (state.mode !== "src") { failed("The browser could not decode this recording."); return; }
    fetch(video.currentSrc || video.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(errorOf).then(failed, () => failed("Playback failed."));
  });
  position.addEventListener("input", function () {
    state.dragging = true;
    at.textContent = clock(Number(position.value));
  });
  position.addEventListener("change", function () {
    state.dragging = false;
    seek(Number(position.value), !video.paused || state.seq === null);
  });
  if (cameraSelect) {
    cameraSelect.addEventListener("change", function () {
      document.getElementById("camera-name").textContent = cameraSelect.value;
      if (state.seq === null) return;  // the choice applies when play is pressed
      const ms = nowMs();
      load(segmentAt(ms), ms, !video.paused);
    });
  }
  document.querySelectorAll("button.seek").forEach(function (b) {
    b.addEventListener("click", function () {
      if (state.pressedAt === null) { state.pressedAt = performance.now(); firstFrame(); }
      seek(Number(b.dataset.atMs), true);
      video.focus();
    });
  });

  // the timeline: segments as bars, marks as ticks (the marks table holds the same, for keyboards)
  if (line && tl.duration_ms > 0) {
    const pct = (ms) => (100 * ms / tl.duration_ms) + "%";
    for (const s of tl.segments) {
      const bar = document.createElement("span");
      bar.className = "tl-seg";
      bar.style.left = pct(s.offset_ms);
      bar.style.width = pct(s.duration_ms);
      bar.title = "segment " + s.seq;
      line.appendChild(bar);
    }
    for (const m of tl.marks) {
      const tick = document.createElement("button");
      tick.type = "button";
      tick.className = "tl-mark";
      tick.tabIndex = -1;  // the marks table's buttons are the keyboard's way
      tick.style.left = pct(m.at_ms);
      tick.title = "mark " + m.id + " at " + clock(m.at_ms);
      tick.dataset.mark = String(m.id);
      tick.addEventListener("click", () => seek(m.at_ms, true));
      line.appendChild(tick);
    }
    line.addEventListener("click", function (ev) {
      if (ev.target !== line && !ev.target.classList.contains("tl-seg")) return;
      const box = line.getBoundingClientRect();
      seek((ev.clientX - box.left) / box.width * tl.duration_ms, true);
    });
  }
  show();

  // the GNSS trail and the marks' notes (opened by decryptd; the view is audited)
  const trailStatus = document.getElementById("trail-status");
  fetch(root.dataset.trail, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then((r) => r.json().then((doc) => ({ ok: r.ok, doc: doc })))
    .then(function (answer) {
      if (!answer.ok) { trailStatus.textContent = answer.doc.error.message; return; }
      const fixes = answer.doc.fixes;
      for (const [id, note] of Object.entries(answer.doc.notes)) {
        document.querySelectorAll('.mark-note[data-mark="' + id + '"]').forEach((cell) => { cell.textContent = note; });
      }
      trailStatus.textContent = fixes.length === 1 ? "1 GNSS fix." : fixes.length ? fixes.length + " GNSS fixes."
        : "No GNSS fix in this recording.";
      const box = document.getElementById("trail-map");
      if (!box || !window.L || !fixes.length) return;
      const map = L.map(box, { minZoom: Number(box.dataset.minZoom), maxZoom: Number(box.dataset.maxZoom) });
      L.tileLayer(box.dataset.prefix + "/tiles/{z}/{x}/{y}.png", {
        minZoom: Number(box.dataset.minZoom), maxZoom: Number(box.dataset.maxZoom), attribution: box.dataset.attribution,
      }).addTo(map);
      map.attributionControl.setPrefix(false);
      const points = fixes.map((f) => [f.lat_deg, f.lon_deg]);
      const path = L.polyline(points, { color: "#c1121f", weight: 4 }).addTo(map);
      L.circleMarker(points[0], { radius: 6, color: "#1e6b34", fillOpacity: 1 }).bindTooltip("start").addTo(map);
      const here = L.circleMarker(points[0], { radius: 7, color: "#0b5cad", fillOpacity: 1 }).addTo(map);
      map.fitBounds(path.getBounds(), { maxZoom: Number(box.dataset.maxZoom) });
      video.addEventListener("timeupdate", function () {
        const ms = nowMs();
        let fix = fixes[0];
        for (const f of fixes) if (f.at_ms <= ms) fix = f;
        here.setLatLng([fix.lat_deg, fix.lon_deg]);
      });
    })
    .catch(() => { trailStatus.textContent = "The GNSS trail could not be loaded."; });
})();
