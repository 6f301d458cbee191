// The live panel: join through headquarters, answer the media server's offer, keep the viewer
// token alive, and show latency and quality. Latency: a stream whose camera burns the capture's
// UTC millisecond as a strip of 64 cells along the bottom edge (the simulated camera's time code,
// drivers/sim_timecode.py) is read from decoded frames on a canvas; otherwise the panel shows the
// receiver's jitter-buffer delay. window.bodycamLive holds the figures for tests and the bench.
"use strict";
(function () {
  const panel = document.getElementById("live-panel");
  if (!panel) return;
  const device = panel.dataset.device;
  const base = panel.dataset.prefix + "/live";
  const video = document.getElementById("live-video");
  const show = function (id, text) { document.getElementById(id).textContent = text; };
  const stats = { latencies: [], frames: 0, decodedCodes: 0, token: null, state: "connecting", error: null };
  window.bodycamLive = stats;
  let pc = null;
  let keepalive = null;

  function post(path, body) {
    return window.bodycam.fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}), keepalive: true }).then(function (r) {
      return r.json().then(function (doc) {
        if (!r.ok) throw new Error((doc.error && doc.error.message) || ("HTTP " + r.status));
        return doc;
      });
    });
  }

  function readCode(ctx, w, h) {
    // 64 cells: 48 bits of UTC ms, 8 of frame index, 8 of checksum (sum of the 7 bytes before);
    // the canvas holds only the strip (its rows at the bottom of the frame)
    const rows = Math.max(8, Math.floor(h / 20) & ~1);
    const y = rows - Math.max(2, Math.floor(rows / 2));
    const line = ctx.getImageData(0, y, w, 1).data;
    const bytes = new Array(8).fill(0);
    for (let i = 0; i < 64; i++) {
      const x = Math.floor((i + 0.5) * w / 64);
      const luma = 0.299 * line[4 * x] + 0.587 * line[4 * x + 1] + 0.114 * line[4 * x + 2];
      bytes[i >> 3] = (bytes[i >> 3] << 1) | (luma >= 128 ? 1 : 0);
    }
    let sum = 0;
    for (let i = 0; i < 7; i++) sum = (sum + bytes[i]) & 255;
    if (sum !== bytes[7]) return null;
    let ms = 0;
    for (let i = 0; i < 6; i++) ms = ms * 256 + bytes[i];
    return { ms: ms, index: bytes[6] };
  }

  function watchFrames() {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = function () {
      stats.frames += 1;
      const w = video.videoWidth, h = video.videoHeight;
      if (w && h) {
        const rows = Math.max(8, Math.floor(h / 20) & ~1);
        if (canvas.width !== w || canvas.height !== rows) { canvas.width = w; canvas.height = rows; }
        ctx.drawImage(video, 0, h - rows, w, rows, 0, 0, w, rows);  // only the time-code strip
        const code = readCode(ctx, w, h);
        if (code) {
          const now = Date.now();
          const lat = now % 281474976710656 - code.ms;  // 2^48
          if (lat > -1000 && lat < 60000) {
            stats.decodedCodes += 1;
            stats.latencies.push({ at: now, ms: lat, index: code.index });
            if (stats.latencies.length > 2000) stats.latencies.shift();
          }
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  function quality() {
    if (!pc) return;
    pc.getStats().then(function (report) {
      report.forEach(function (s) {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          const lost = s.packetsLost || 0, got = s.packetsReceived || 0;
          const lossPct = got + lost > 0 ? (100 * lost / (got + lost)).toFixed(1) : "0.0";
          show("live-quality", (s.frameWidth || "?") + "x" + (s.frameHeight || "?") + ", " +
            Math.round(s.framesPerSecond || 0) + " fps, " + lossPct + " % lost");
          const recent = stats.latencies.filter(function (l) { return Date.now() - l.at < 3000; });
          if (recent.length) {
            const sorted = recent.map(function (l) { return l.ms; }).sort(function (a, b) { return a - b; });
            show("live-latency", sorted[Math.floor(sorted.length / 2)] + " ms glass to glass");
          } else if (s.jitterBufferEmittedCount) {
            show("live-latency", Math.round(1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount) + " ms buffered");
          }
        }
      });
    });
    window.bodycam.fetch(base + "/" + encodeURIComponent(device) + "/status").then(function (r) {
      return r.json();
    }).then(function (doc) {
      show("live-recording", doc.recording_state || "unknown");
      show("live-viewers", String(doc.viewers));
    }).catch(function () {});
  }

  function leave() {
    if (keepalive) clearInterval(keepalive);
    keepalive = null;
    if (stats.token) post(base + "-viewer/leave", { token: stats.token }).catch(function () {});
    stats.token = null;
    if (pc) pc.close();
    pc = null;
    stats.state = "left";
    show("live-state", "not watching");
  }

  function join() {
    // a unit that is not streaming is asked to start (headquarters waits up to 20 s for it)
    show("live-state", "asking the unit to stream…");
    post(base + "/" + encodeURIComponent(device) + "/join").then(function (grant) {
      stats.token = grant.token;
      pc = new RTCPeerConnection({ iceServers: grant.ice_servers.map(function (s) {
        return { urls: s.urls, username: s.username, credential: s.credential };
      }) });
      pc.ontrack = function (ev) { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
      pc.onconnectionstatechange = function () {
        stats.state = pc ? pc.connectionState : "left";
        show("live-state", stats.state === "connected" ? "watching" : stats.state);
      };
      return pc.setRemoteDescription({ type: "offer", sdp: grant.sdp })
        .then(function () { return pc.createAnswer(); })
        .then(function (answer) { return pc.setLocalDescription(answer); })
        .then(function () { return post(base + "-viewer/answer", { token: stats.token, sdp: pc.localDescription.sdp }); })
        .then(function () {
          keepalive = setInterval(function () {
            post(base + "-viewer/keepalive", { token: stats.token }).then(function (doc) {
              show("live-viewers", String(doc.viewers));
            }).catch(function (e) { stats.error = String(e.message || e); leave(); });
          }, Math.max(2000, 1000 * grant.expires_in_s / 3));
          setInterval(quality, 1000);
        });
    }).catch(function (e) {
      stats.state = "refused";
      stats.error = String(e.message || e);
      show("live-state", "not available: " + stats.error);
    });
  }

  document.getElementById("live-leave").addEventListener("click", leave);
  // the page starts muted (browsers play sound only after a click); units send sound only when
  // their policy says so ([live] audio), and never while the wearer has muted
  const sound = document.getElementById("live-sound");
  sound.addEventListener("click", function () {
    video.muted = !video.muted;
    sound.setAttribute("aria-pressed", String(!video.muted));
    sound.textContent = video.muted ? "Sound on" : "Sound off";
  });
  window.addEventListener("pagehide", leave);
  video.muted = true;
  watchFrames();
  join();
})();
