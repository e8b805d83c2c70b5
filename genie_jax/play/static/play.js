// genie play: the page side of the WebSocket protocol in genie_jax/play/protocol.py.
// One request is in flight at a time; keys pressed meanwhile wait in a short queue (repeated steps coalesce), so
// holding a key plays as fast as the server generates and never piles up work.
"use strict";

const DIRECTIONS = [
  ["left", "\u2190 / A", ["ArrowLeft", "a"]],
  ["right", "\u2192 / D", ["ArrowRight", "d"]],
  ["up", "\u2191 / W", ["ArrowUp", "w"]],
  ["down", "\u2193 / S", ["ArrowDown", "s"]],
];
const COLORS = ["#5aa9ff", "#ffb454", "#4fd18b", "#ff6b9a", "#c792ea", "#f78c6c", "#89ddff", "#c3e88d",
                "#ffcb6b", "#82aaff", "#f07178", "#b2ccd6"];
const MAX_QUEUE = 8;

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, hello: null, mapping: {}, inFlight: false, queue: [], arrivals: [], started: false,
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => setConnection("connected", "ok");
  ws.onclose = () => { setConnection("disconnected: reload the page", "error"); setControls(false); };
  ws.onmessage = (event) => onMessage(JSON.parse(event.data));
}

function setConnection(text, kind) {
  const pill = $("connection");
  pill.textContent = text;
  pill.className = `pill ${kind}`;
}

function onMessage(message) {
  if (message.type === "hello") return onHello(message);
  if (message.type === "frame") onFrame(message);
  else if (message.type === "error") showMessage(message.message, true);
  state.inFlight = false;
  pump();
}

function onHello(hello) {
  state.hello = hello;
  state.mapping = Object.assign({}, hello.mapping);
  const canvas = $("screen");
  canvas.width = hello.width;
  canvas.height = hello.height;
  $("max-key").textContent = Math.min(hello.num_actions, 10) === 10 ? "9, 0" : String(hello.num_actions);
  buildActions(hello);
  buildMapping(hello);
  $("start-clip").disabled = hello.clips === 0;
  for (const fmt of ["gif", "mp4"]) $(`download-${fmt}`).addEventListener("click", () => setDownload(fmt));
  if (hello.clips > 0) request({ type: "start", source: "clip" });
  else showMessage("No dataset clips on this server: upload an image to start.", false);
}

function buildActions(hello) {
  const box = $("actions");
  box.replaceChildren();
  for (let a = 0; a < hello.num_actions; a++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.action = String(a);
    const label = hello.action_labels[a] ? ` \u00b7 ${hello.action_labels[a]}` : "";
    button.title = `latent action ${a}${label}`;
    button.innerHTML = `<span class="key"></span><span class="label"></span>`;
    button.querySelector(".key").textContent = a < 10 ? String((a + 1) % 10) : "\u2013";
    button.querySelector(".label").textContent = `id ${a}${label}`;
    button.style.borderBottom = `3px solid ${color(a)}`;
    button.addEventListener("click", () => step(a));
    box.appendChild(button);
  }
}

function buildMapping(hello) {
  const body = $("mapping");
  body.replaceChildren();
  for (const [direction, keys] of DIRECTIONS) {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = keys;
    const cell = document.createElement("td");
    const select = document.createElement("select");
    select.id = `map-${direction}`;
    select.add(new Option("\u2014 nothing", ""));
    for (let a = 0; a < hello.num_actions; a++) {
      const label = hello.action_labels[a] ? ` (${hello.action_labels[a]})` : "";
      select.add(new Option(`key ${(a + 1) % 10 || 10}: id ${a}${label}`, String(a)));
    }
    select.value = state.mapping[direction] == null ? "" : String(state.mapping[direction]);
    select.addEventListener("change", () => {
      state.mapping[direction] = select.value === "" ? null : Number(select.value);
      select.blur();  // arrow keys steer the world again, not the list
    });
    cell.appendChild(select);
    row.append(name, cell);
    body.appendChild(row);
  }
  const suggested = Object.values(hello.mapping).some((a) => a != null);
  $("mapping-hint").textContent = suggested
    ? "Suggested from the dataset\u2019s true actions or the \u2011\u2011mapping file: change it here."
    : "No true actions to suggest from: pick the latent action each key plays.";
}

function color(action) { return COLORS[action % COLORS.length]; }

// ---- requests: one in flight, a short queue behind it --------------------------------------------------------
function request(message) {
  const last = state.queue[state.queue.length - 1];
  if (message.type === "step" && last && last.type === "step") state.queue[state.queue.length - 1] = message;
  else if (state.queue.length < MAX_QUEUE) state.queue.push(message);
  pump();
}

function pump() {
  if (state.inFlight || !state.queue.length || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.inFlight = true;
  state.ws.send(JSON.stringify(state.queue.shift()));
}

function step(action) {
  if (!state.started) return showMessage("Start a world first: a random clip or an uploaded image.", true);
  request({ type: "step", action });
  flash(action);
}

function flash(action) {
  const button = document.querySelector(`#actions button[data-action="${action}"]`);
  if (!button) return;
  button.classList.add("active");
  setTimeout(() => button.classList.remove("active"), 120);
}

// ---- frames ----------------------------------------------------------------------------------------------------
function onFrame(frame) {
  const image = new Image();
  image.onload = () => {
    const canvas = $("screen");
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    canvas.dataset.frame = String(frame.index);
  };
  image.src = frame.image;
  state.started = true;
  setControls(true);
  $("frame-index").textContent = String(frame.index);
  $("start-name").textContent = frame.start;
  if (frame.generate_ms != null) {
    $("generate-ms").textContent = frame.generate_ms.toFixed(0);
    const now = performance.now();
    state.arrivals = state.arrivals.filter((t) => now - t < 2000).concat([now]);
    const span = (now - state.arrivals[0]) / 1000;
    if (state.arrivals.length > 1 && span > 0) $("fps").textContent = ((state.arrivals.length - 1) / span).toFixed(1);
  }
  renderHistory(frame);
  showMessage("", false);
}

function renderHistory(frame) {
  const box = $("history");
  const shown = frame.history.slice(-64);
  box.replaceChildren(...shown.map((a) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = color(a);
    chip.textContent = String((a + 1) % 10 || 10);
    chip.title = `latent action ${a}`;
    return chip;
  }));
  const more = frame.index > frame.history.length ? "\u2026," : "";
  $("history-ids").textContent = frame.index ? `--actions ${more}${frame.history.join(",")}` : "";
}

function setControls(enabled) {
  for (const id of ["rewind", "reset"]) $(id).disabled = !enabled;
  for (const fmt of ["gif", "mp4"]) $(`download-${fmt}`).classList.toggle("disabled", !enabled);
  if (enabled) for (const fmt of ["gif", "mp4"]) setDownload(fmt);
}

function setDownload(fmt) {
  if (!state.hello) return;
  const fps = Math.max(1, Math.min(60, Number($("record-fps").value) || 10));
  const query = new URLSearchParams({ session: state.hello.session, format: fmt, fps: String(fps) });
  $(`download-${fmt}`).href = `/download?${query}`;
}

function showMessage(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "message error" : "message";
}

// ---- input -------------------------------------------------------------------------------------------------------
async function upload(file) {
  const limit = state.hello ? state.hello.max_upload_bytes : Infinity;
  if (file.size > limit) return showMessage(`${file.name} is ${file.size} bytes: the limit is ${limit}.`, true);
  showMessage(`uploading ${file.name}\u2026`, false);
  const response = await fetch("/upload", { method: "POST", body: file,
                                            headers: { "Content-Type": file.type || "application/octet-stream" } });
  const reply = await response.json().catch(() => ({ error: `upload failed (HTTP ${response.status})` }));
  if (!response.ok) return showMessage(reply.error, true);
  request({ type: "start", source: "upload", upload: reply.upload });
}

function onKey(event) {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  let handled = true;
  if (/^[0-9]$/.test(key) && state.hello) {
    const action = (Number(key) + 9) % 10;  // 1 -> 0, ..., 9 -> 8, 0 -> 9
    if (action < state.hello.num_actions) step(action);
    else showMessage(`key ${key}: this world has only ${state.hello.num_actions} latent actions`, true);
  } else if (key === "Backspace" || key === "z") {
    request({ type: "rewind" });
  } else if (key === "r") {
    request({ type: "reset" });
  } else if (key === "n") {
    if (state.hello && state.hello.clips > 0) request({ type: "start", source: "clip" });
  } else {
    const entry = DIRECTIONS.find(([, , keys]) => keys.includes(key));
    if (!entry) handled = false;
    else if (state.mapping[entry[0]] == null) showMessage(`no latent action is mapped to ${entry[1]}`, true);
    else step(state.mapping[entry[0]]);
  }
  if (handled) event.preventDefault();  // arrows and space must not scroll the page
}

document.addEventListener("DOMContentLoaded", () => {
  $("start-clip").addEventListener("click", () => request({ type: "start", source: "clip" }));
  $("upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) upload(file);
  });
  $("rewind").addEventListener("click", () => request({ type: "rewind" }));
  $("reset").addEventListener("click", () => request({ type: "reset" }));
  $("record-fps").addEventListener("change", () => { setDownload("gif"); setDownload("mp4"); });
  document.addEventListener("keydown", onKey);
  setControls(false);
  connect();
});
