// sanawm live page: one WebSocket session of /v1/realtime, keyboard and on-screen controls,
// a live canvas, FPS / latency readout, a top-down minimap and recording. Plain JS, no build.
"use strict";

const KEYS = "wasdijkl";
const HOLD_FRAMES = 16;      // while held: longer than a chunk (12 frames), so motion does not stutter
const RELEASE_FRAMES = 8;    // on release: 8 more frames, so a tap moves and motion stops soon after
const FPS_FRAMES = 60;       // the frame rate is measured over this many frames
const REPEAT_MS = 250;       // a held key is re-sent this often, so motion goes on while held
const HEARTBEAT_MS = 5000;   // keeps the session alive when no key is pressed
const MIME = { jpeg: "image/jpeg", webp: "image/webp" };

// Everything the page knows; exposed as window.sanawm for the browser tests.
const state = {
  ws: null, format: "jpeg", size: null, fps: null, connected: false, ended: false,
  frames: 0, lastHeader: null, headers: [], errors: [], held: new Set(),
  arrivals: [], pressedAt: null, latencyMs: null, path: [],
  recording: null, pendingHeader: null, uploadData: null,
};
window.sanawm = state;

const $ = (id) => document.getElementById(id);
const view = $("view").getContext("2d");
const minimap = $("minimap").getContext("2d");
let drawChain = Promise.resolve();
let repeatTimer = null, heartbeatTimer = null, fpsTimer = null;

function token() {
  const typed = $("token").value.trim();
  if (typed) return typed;
  const m = location.hash.match(/token=([A-Za-z0-9._~-]+)/);
  return m ? m[1] : "";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function logMessage(text) {
  state.errors.push(text);
  const li = document.createElement("li");
  li.textContent = text;
  $("log").prepend(li);
}

async function loadModelInfo() {
  try {
    const r = await fetch("/v1/models", { headers: authHeaders() });
    if (!r.ok) { $("model").textContent = "model info: " + r.status + (r.status === 401 ? " (enter the token)" : ""); return; }
    const m = (await r.json()).data[0];
    $("model").textContent = `model ${m.id}, ${m.size[1]}×${m.size[0]}, ${m.fps} fps`;
  } catch (e) { $("model").textContent = "server unreachable"; }
}

// ---- start image ----------------------------------------------------------------------------

$("source").addEventListener("change", () => {
  if ($("source").value === "upload") $("file").click();
  else { state.uploadData = null; $("preview").src = "/example.png"; }
});
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (!f) return;
  const reader = new FileReader();
  reader.onload = () => { state.uploadData = reader.result; $("preview").src = reader.result; };
  reader.readAsDataURL(f);  // a data: URL; the server accepts the prefix
});

// ---- session --------------------------------------------------------------------------------

function start() {
  if (state.ws) return;
  Object.assign(state, { frames: 0, headers: [], path: [], arrivals: [], ended: false, latencyMs: null });
  const protocols = ["sanawm.v1"];
  if (token()) protocols.push("bearer." + token());
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime`, protocols);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setStatus("connecting");
  ws.onopen = () => {
    const init = { type: "init", format: state.format, num_frames: null };
    const steps = parseInt($("steps").value, 10);
    if (steps > 0) init.steps = steps;
    if (state.uploadData) init.image = state.uploadData;
    ws.send(JSON.stringify(init));
    state.connected = true;
    heartbeatTimer = setInterval(() => send({ type: "event", kind: "heartbeat" }), HEARTBEAT_MS);
    fpsTimer = setInterval(updateFps, 500);
    $("start").disabled = true; $("stop").disabled = false; $("record").disabled = false;
    setStatus("starting the model");
  };
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onText(JSON.parse(ev.data)) : onImage(ev.data));
  ws.onclose = (ev) => {
    if (ev.code !== 1000 && ev.code !== 1005 && ev.reason) logMessage(`closed: ${ev.reason}`);
    stopTimers();
    state.ws = null; state.connected = false;
    $("start").disabled = false; $("stop").disabled = true;
    setStatus(state.ended ? "ended" : "disconnected");
  };
}

function stop() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) send({ type: "close" });
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function stopTimers() {
  clearInterval(heartbeatTimer); clearInterval(repeatTimer); clearInterval(fpsTimer);
  heartbeatTimer = repeatTimer = fpsTimer = null;
}

function onText(msg) {
  if (msg.type === "ready") {
    state.size = msg.size; state.fps = msg.fps;
    setStatus(`live: ${msg.model}, ${msg.size[1]}×${msg.size[0]}`);
  } else if (msg.type === "frame") {
    state.pendingHeader = msg;
  } else if (msg.type === "error") {
    logMessage(msg.message);
  } else if (msg.type === "end") {
    state.ended = true;
    setStatus("ended");
  }
}

function onImage(buffer) {
  const header = state.pendingHeader;
  state.pendingHeader = null;
  if (!header) return;
  const now = performance.now();
  state.arrivals.push(now);
  if (state.arrivals.length > FPS_FRAMES) state.arrivals.shift();
  const prev = state.lastHeader;
  state.frames += 1;
  state.lastHeader = header;
  state.headers.push(header);
  if (state.headers.length > 500) state.headers.shift();
  if (state.pressedAt !== null && prev && moved(prev.c2w, header.c2w)) {
    state.latencyMs = now - state.pressedAt;
    state.pressedAt = null;
  }
  state.path.push(header.c2w);
  if (state.recording) state.recording.push({ c2w: header.c2w, data: buffer });
  const blob = new Blob([buffer], { type: MIME[state.format] });
  drawChain = drawChain.then(() => createImageBitmap(blob)).then((bitmap) => {
    view.imageSmoothingEnabled = false;
    view.drawImage(bitmap, 0, 0, $("view").width, $("view").height);
    bitmap.close();
  }).catch((e) => logMessage("could not draw a frame: " + e));
  updateReadout(header);
  drawMinimap();
}

function moved(a, b) {
  return a.some((v, i) => Math.abs(v - b[i]) > 1e-6);
}

// Frames come a chunk at a time, so the rate is taken up to *now* over the last FPS_FRAMES
// frames (several chunks), not between arrivals inside one burst.
function updateFps() {
  const a = state.arrivals, span = (performance.now() - a[0]) / 1000;
  const spread = a.length > 1 && a[a.length - 1] - a[0] > 100;  // more than one burst so far
  $("fps").textContent = spread ? ((a.length - 1) / span).toFixed(2) : "–";
}

function updateReadout(header) {
  $("latency").textContent = state.latencyMs === null ? "–" : `${Math.round(state.latencyMs)} ms`;
  $("index").textContent = header.index;
}

function setStatus(text) { $("status").textContent = text; }

// ---- controls -------------------------------------------------------------------------------

function sendKeys(keys, frames) {
  send({ type: "event", kind: "action", payload: `${[...keys].sort().join("")}-${frames}` });
}

function sendHeld() {
  if (state.held.size) sendKeys(state.held, HOLD_FRAMES);
}

function press(key) {
  if (state.held.has(key)) return;
  if (state.held.size === 0 && state.pressedAt === null) state.pressedAt = performance.now();
  state.held.add(key);
  markKey(key, true);
  sendHeld();  // at once, then repeated while held
  if (!repeatTimer) repeatTimer = setInterval(sendHeld, REPEAT_MS);
}

function release(key) {
  if (!state.held.has(key)) return;
  const before = new Set(state.held);
  state.held.delete(key);
  markKey(key, false);
  if (state.held.size) { sendHeld(); return; }  // the remaining keys replace the queued motion
  clearInterval(repeatTimer);
  repeatTimer = null;
  sendKeys(before, RELEASE_FRAMES);  // replaces the long hold: stop 8 frames into the next chunk
}

function markKey(key, on) {
  document.querySelectorAll(`.key[data-key="${key}"]`).forEach((b) => b.classList.toggle("held", on));
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key.toLowerCase();
  if (KEYS.includes(key) && key.length === 1) { ev.preventDefault(); press(key); }
});
document.addEventListener("keyup", (ev) => release(ev.key.toLowerCase()));
window.addEventListener("blur", () => [...state.held].forEach(release));
document.querySelectorAll(".key").forEach((button) => {
  const key = button.dataset.key;
  button.addEventListener("pointerdown", (ev) => { ev.preventDefault(); press(key); });
  ["pointerup", "pointerleave", "pointercancel"].forEach((t) => button.addEventListener(t, () => release(key)));
});

// ---- minimap: camera centres on the ground plane (x right, z forward), heading as a tick ----

function drawMinimap() {
  const w = $("minimap").width, h = $("minimap").height;
  minimap.fillStyle = "#0d0f12";
  minimap.fillRect(0, 0, w, h);
  const xs = state.path.map((m) => m[3]), zs = state.path.map((m) => m[11]);
  const span = Math.max(0.5, ...xs.map(Math.abs), ...zs.map(Math.abs)) * 1.2;
  const px = (x) => w / 2 + (x / span) * (w / 2), pz = (z) => h / 2 - (z / span) * (h / 2);
  minimap.strokeStyle = "#5aa0ff";
  minimap.beginPath();
  state.path.forEach((m, i) => (i ? minimap.lineTo(px(m[3]), pz(m[11])) : minimap.moveTo(px(m[3]), pz(m[11]))));
  minimap.stroke();
  const last = state.path[state.path.length - 1];
  if (!last) return;
  const fx = last[2], fz = last[10], norm = Math.hypot(fx, fz) || 1;  // forward = third column
  minimap.strokeStyle = "#ffcc44";
  minimap.beginPath();
  minimap.moveTo(px(last[3]), pz(last[11]));
  minimap.lineTo(px(last[3]) + (fx / norm) * 14, pz(last[11]) - (fz / norm) * 14);
  minimap.stroke();
  minimap.fillStyle = "#ffcc44";
  minimap.fillRect(px(last[3]) - 2, pz(last[11]) - 2, 4, 4);
}

// ---- recording: frames as received -> POST /v1/recordings -> MP4 + camera file ---------------

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function toggleRecording() {
  if (!state.recording) {
    state.recording = [];
    $("record").classList.add("on"); $("record").textContent = "■ Stop recording";
    $("recording-status").textContent = "recording…";
    return;
  }
  const frames = state.recording;
  state.recording = null;
  $("record").classList.remove("on"); $("record").textContent = "● Record";
  if (!frames.length) { $("recording-status").textContent = "nothing recorded"; return; }
  $("recording-status").textContent = `encoding ${frames.length} frames…`;
  const body = { fps: state.fps || 16, frames: frames.map((f) => toBase64(f.data)), c2w: frames.map((f) => f.c2w) };
  const r = await fetch("/v1/recordings", {
    method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify(body),
  });
  const doc = await r.json();
  if (!r.ok) { $("recording-status").textContent = ""; logMessage("recording: " + doc.error); return; }
  $("recording-status").textContent = `recorded ${frames.length} frames`;
  for (const [url, label] of [[doc.video_url, "video (MP4)"], [doc.camera_url, "camera file (.camera.npz)"]]) {
    const data = await (await fetch(url, { headers: authHeaders() })).blob();  // fetched: the token travels in a header
    const a = document.createElement("a");
    a.href = URL.createObjectURL(data);
    a.download = url.endsWith("/content") ? `sanawm-${doc.id.slice(0, 8)}.mp4` : `sanawm-${doc.id.slice(0, 8)}.camera.npz`;
    a.textContent = label;
    const li = document.createElement("li");
    li.append(a);
    $("downloads").append(li);
    a.click();
  }
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("record").addEventListener("click", toggleRecording);
$("token").addEventListener("change", loadModelInfo);
loadModelInfo();
drawMinimap();
