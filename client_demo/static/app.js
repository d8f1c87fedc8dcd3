// infinitetalk-live browser demo: microphone -> WebRTC -> avatar video with the speech it was made from.
// Plain JS, no build step; talks only to the server that served this page (docs/protocol.md).
"use strict";

const $ = (id) => document.getElementById(id);

const demo = {
  info: null,           // GET /api/info
  avatar: null,         // selected avatar name
  pc: null,             // RTCPeerConnection
  sessionId: null,      // the offer's session_id, for DELETE /offer/{id} (hang up)
  dc: null,             // data channel "control"
  mic: null,            // MediaStream from getUserMedia
  audioCtx: null,       // mic level meter
  frameTimes: [],       // requestVideoFrameCallback times in the last second
  stats: { rvfcFrames: 0, decodedFrames: 0, latencyS: null, state: "disconnected", messages: 0, stateHistory: [], sessionId: null, readyCount: 0 },
  timers: [],
  generation: 0,        // bumped per connection so stale frame callbacks stop
  urlToken: "",         // ?token= of the page URL, read once (then removed from the address bar)
};
window.avatarDemo = demo; // read by tests and handy in the console

// ---------------------------------------------------------------- helpers
// The access token (docs/security.md): typed in the field, or ?token= in the page URL. The URL's copy
// is taken once and removed from the address bar, so it is not bookmarked, shared or sent as a referrer.
function takeUrlToken() {
  const url = new URL(location.href);
  demo.urlToken = url.searchParams.get("token") || "";
  if (demo.urlToken) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

function token() {
  return $("token").value.trim() || demo.urlToken;
}

function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

// Errors stack up (newest last) until dismissed, so one failure does not hide another.
function showError(message) {
  const box = $("error-text");
  const lines = box.textContent ? box.textContent.split("\n") : [];
  if (!lines.includes(message)) lines.push(message);
  box.textContent = lines.slice(-4).join("\n");
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// Turns a non-2xx response into an Error carrying the server's {"error": {code, message}}.
async function httpError(resp, what) {
  let detail = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error) detail = `${body.error.code}: ${body.error.message}`;
  } catch (_) { /* not JSON */ }
  return new Error(`${what} failed (${detail})`);
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: authHeaders() });
  if (!resp.ok) throw await httpError(resp, `GET ${path}`);
  return resp.json();
}

function setState(state) {
  const h = demo.stats.stateHistory;
  if (h[h.length - 1] !== state) h.push(state);
  demo.stats.state = state;
  $("state").textContent = state;
  $("state").dataset.state = state;
}

function formatMs(seconds) {
  return seconds === null || seconds === undefined || Number.isNaN(seconds) ? "–" : `${Math.round(seconds * 1000)} ms`;
}

// ---------------------------------------------------------------- backend banner, avatars
async function loadInfo() {
  try {
    const info = await getJSON("/api/info");
    demo.info = info;
    const desc = info.backend_description || info.backend;
    $("backend").textContent = `backend: ${desc} · ${info.fps} fps`;
    $("backend").dataset.backend = info.backend;
    $("backend").classList.toggle("real", info.backend === "infinitetalk");
    $("token-box").hidden = !info.auth_required;
    if (info.auth_required && !token()) showError("this server needs an access token: type it in the field on the right");
  } catch (err) {
    $("backend").textContent = "backend: unknown";
    showError(err.message);
  }
}

function selectAvatar(name) {
  demo.avatar = name;
  showStill(name);
  $("avatar-select").value = name;
  for (const el of $("avatar-thumbs").children) el.classList.toggle("selected", el.dataset.name === name);
  if (demo.dc && demo.dc.readyState === "open") {
    demo.dc.send(JSON.stringify({ type: "set_avatar", avatar: name }));
  }
}

async function loadAvatars(preferred) {
  let list;
  try {
    list = await getJSON("/api/avatars");
  } catch (err) {
    showError(err.message);
    return;
  }
  const select = $("avatar-select");
  const thumbs = $("avatar-thumbs");
  select.replaceChildren();
  thumbs.replaceChildren();
  for (const a of list.avatars) {
    const opt = document.createElement("option");
    opt.value = a.name;
    opt.textContent = `${a.name}${a.builtin ? "" : " (uploaded)"}${a.kind === "video" ? " · video" : ""}`;
    select.append(opt);
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "thumb";
    btn.dataset.name = a.name;
    btn.title = `${a.name} (${a.width}×${a.height})`;
    const img = document.createElement("img");
    img.alt = a.name;
    img.loading = "lazy";
    setThumbnail(img, `/api/avatars/${encodeURIComponent(a.name)}/thumbnail`);
    const label = document.createElement("span");
    label.textContent = a.name;
    btn.append(img, label);
    btn.addEventListener("click", () => selectAvatar(a.name));
    thumbs.append(btn);
  }
  const names = list.avatars.map((a) => a.name);
  const pick = [preferred, demo.avatar, list.default].find((n) => n && names.includes(n)) || names[0];
  if (pick) selectAvatar(pick);
}

// An <img src> cannot carry the Authorization header: with a token, fetch the thumbnail and show a blob.
function setThumbnail(img, path) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  if (!token()) { img.src = path; return; }
  fetch(path, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText))))
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = `${img.alt} (no thumbnail)`; });
}

// Before Start (and after Stop) the stage shows the chosen avatar's still, not a black box.
function showStill(name) {
  const still = $("still");
  still.alt = `${name}, the avatar you will talk to`;
  still.dataset.name = name;
  setThumbnail(still, `/api/avatars/${encodeURIComponent(name)}/thumbnail`);
  still.hidden = demo.pc !== null && $("video").srcObject !== null;
}

async function uploadAvatar() {
  clearError();
  const file = $("avatar-file").files[0];
  if (!file) { showError("choose an image file first"); return; }
  let name = $("avatar-name").value.trim() || file.name.replace(/\.[^.]*$/, "");
  name = name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
  const resp = await fetch(`/api/avatars?name=${encodeURIComponent(name)}`, {
    method: "POST",
    headers: authHeaders({ "Content-Type": file.type || "application/octet-stream" }),
    body: file,
  });
  if (!resp.ok) { showError((await httpError(resp, "upload")).message); return; }
  const made = await resp.json();
  await loadAvatars(made.name);
}

// ---------------------------------------------------------------- readouts
function countFrames() {
  const video = $("video");
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return false;
  const generation = demo.generation;
  const onFrame = (now) => {
    if (generation !== demo.generation) return;
    demo.stats.rvfcFrames += 1;
    demo.frameTimes.push(now);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  return true;
}

function startReadouts() {
  const useRvfc = countFrames();
  let lastDecoded = null;
  let lastAt = null;
  demo.timers.push(setInterval(async () => {
    if (!demo.pc) return;
    if (useRvfc) {
      const now = performance.now();
      demo.frameTimes = demo.frameTimes.filter((t) => now - t <= 1000);
      $("fps").textContent = `${demo.frameTimes.length} fps`;
      $("frames").textContent = String(demo.stats.rvfcFrames);
    } else {
      // Fallback without requestVideoFrameCallback: decoded frames from WebRTC stats.
      const report = await demo.pc.getStats();
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          const at = performance.now();
          if (lastDecoded !== null) {
            $("fps").textContent = `${Math.round(((s.framesDecoded - lastDecoded) * 1000) / (at - lastAt))} fps`;
          }
          lastDecoded = s.framesDecoded;
          lastAt = at;
          demo.stats.decodedFrames = s.framesDecoded;
          $("frames").textContent = String(s.framesDecoded);
        }
      });
    }
  }, 500));
}

function startMicMeter(stream) {
  try {
    demo.audioCtx = new AudioContext();
    const analyser = demo.audioCtx.createAnalyser();
    analyser.fftSize = 512;
    demo.audioCtx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    demo.timers.push(setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      $("mic-level").value = Math.min(1, Math.sqrt(sum / buf.length) * 4);
    }, 100));
  } catch (_) { /* the meter is a nicety */ }
}

function onControl(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch (_) { return; }
  demo.stats.messages += 1;
  switch (msg.type) {
    case "ready":
      demo.stats.sessionId = msg.session_id;
      demo.stats.readyCount += 1;
      if (msg.backend_description) $("backend").textContent = `backend: ${msg.backend_description} · ${msg.fps} fps · ${msg.width}×${msg.height}`;
      break;
    case "stats":
      if (msg.state) setState(msg.state);
      if (msg.latency_s !== null && msg.latency_s !== undefined) {
        demo.stats.latencyS = msg.latency_s;
        $("latency").textContent = formatMs(msg.latency_s);
      }
      $("latency-mean").textContent = formatMs(msg.latency_mean_s);
      break;
    case "state":
      setState(msg.state);
      break;
    case "error":
      showError(`server: ${msg.code}: ${msg.message}`);
      break;
    case "warning":
      showError(`server warning: ${msg.code}${msg.message ? `: ${msg.message}` : ""}`);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- session
function waitIceGathering(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

async function start() {
  clearError();
  demo.generation += 1;
  $("start").disabled = true;
  setState("connecting");
  try {
    demo.mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    showError(`microphone unavailable: ${err.message}`);
    setState("disconnected");
    $("start").disabled = false;
    return;
  }
  startMicMeter(demo.mic);
  // STUN/TURN servers come from the server (--ice-server); none: host candidates only (same network).
  let iceServers = [];
  try {
    iceServers = (await getJSON("/api/info")).ice_servers || [];
  } catch (_) { /* connect without them */ }
  const pc = new RTCPeerConnection({ iceServers });
  demo.pc = pc;
  for (const track of demo.mic.getAudioTracks()) pc.addTrack(track, demo.mic);
  pc.addTransceiver("video", { direction: "recvonly" });
  demo.dc = pc.createDataChannel("control");
  demo.dc.onmessage = onControl;

  // Video and the returned speech go into ONE stream on ONE element, so the browser keeps them in sync.
  const remote = new MediaStream();
  const video = $("video");
  pc.ontrack = (event) => {
    remote.addTrack(event.track);
    if (video.srcObject !== remote) video.srcObject = remote;
    video.muted = !$("avatar-audio").checked;
    video.play().catch(() => { /* autoplay: plays once the user interacts */ });
    $("placeholder").hidden = true;
    $("still").hidden = true;
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") showError("connection to the server failed");
    if (pc.connectionState === "failed" || pc.connectionState === "closed") stop(false);
  };

  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc);
    const body = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
    if (demo.avatar) body.avatar = demo.avatar;
    const resp = await fetch("/offer", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (!resp.ok) throw await httpError(resp, "connect");
    const answer = await resp.json();
    demo.sessionId = answer.session_id;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  } catch (err) {
    showError(err.message);
    stop(false);
    return;
  }
  $("stop").disabled = false;
  $("mute").disabled = false;
  $("interrupt").disabled = false;
  startReadouts();
}

function stop(byUser = true) {
  demo.generation += 1;
  for (const t of demo.timers) clearInterval(t);
  demo.timers = [];
  if (demo.pc) { const pc = demo.pc; demo.pc = null; pc.close(); }
  hangUp();
  demo.dc = null;
  if (demo.mic) { for (const t of demo.mic.getTracks()) t.stop(); demo.mic = null; }
  if (demo.audioCtx) { demo.audioCtx.close(); demo.audioCtx = null; }
  demo.frameTimes = [];
  $("video").srcObject = null;
  $("placeholder").hidden = false;
  $("still").hidden = !demo.avatar;
  $("fps").textContent = "–";
  $("latency").textContent = "–";
  $("latency-mean").textContent = "–";
  $("mic-level").value = 0;
  setState("disconnected");
  $("start").disabled = false;
  $("stop").disabled = true;
  $("interrupt").disabled = true;
  setMuted(false);
  $("mute").disabled = true;
  if (byUser) clearError();
}

// Tell the server the call is over, so its session slot is free at once (a peer closed before ICE
// completed sends nothing the server could see). keepalive: it still goes out when the page unloads.
function hangUp() {
  const id = demo.sessionId;
  demo.sessionId = null;
  if (!id) return;
  fetch(`/offer/${encodeURIComponent(id)}`, { method: "DELETE", headers: authHeaders(), keepalive: true })
    .catch(() => { /* the server is gone: nothing to free */ });
}

// A muted microphone keeps sending silence, so the avatar goes idle instead of the call dropping.
function setMuted(muted) {
  if (demo.mic) for (const t of demo.mic.getAudioTracks()) t.enabled = !muted;
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute mic" : "Mute mic";
}

function interrupt() {
  if (demo.dc && demo.dc.readyState === "open") demo.dc.send(JSON.stringify({ type: "interrupt" }));
}

// ---------------------------------------------------------------- wiring
$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stop(true));
$("interrupt").addEventListener("click", interrupt);
$("mute").addEventListener("click", () => setMuted($("mute").getAttribute("aria-pressed") !== "true"));
$("avatar-select").addEventListener("change", (e) => selectAvatar(e.target.value));
$("upload").addEventListener("click", () => uploadAvatar().catch((err) => showError(err.message)));
$("error-close").addEventListener("click", clearError);
$("avatar-audio").addEventListener("change", (e) => { $("video").muted = !e.target.checked; });
$("token").addEventListener("change", () => { clearError(); loadAvatars(); });
window.addEventListener("pagehide", () => { if (demo.pc) stop(false); });
takeUrlToken();
loadInfo().then(() => loadAvatars());
