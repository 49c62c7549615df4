// stream live view: a camera wall (every source over ONE connection: a multipart
// stream from /wall parsed with fetch() + ReadableStream), a camera page (#cam=<id>)
// with the object list where clicking an object highlights its box and mask, and the
// recordings (#recordings, see player.js). No external resources.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const STALE_MS = 2000; // no picture for this long: the tile says "stalled"
// H.264 over one WebSocket where the browser plays it (MSE with avc1), else MJPEG;
// ?transport=mjpeg (or h264) chooses
const transport = params.get("transport") === "mjpeg" || !h264Supported() ? "mjpeg" : "h264";
document.documentElement.dataset.transport = transport;
const cards = new Map(); // source id -> card
let sources = [];
let wall = null; // AbortController of the open /wall stream
let selected = null; // camera page: the highlighted track id

function el(root, selector) { return root.querySelector(selector); }
function withQuery(path, extra) {
  const q = new URLSearchParams(extra || {});
  if (token) q.set("token", token);
  const s = q.toString();
  return s ? path + "?" + s : path;
}

function setConn(text, cls) {
  const conn = document.getElementById("conn");
  conn.textContent = text;
  conn.className = "conn " + cls;
}

function makeCard(source) {
  const root = document.getElementById("card").content.firstElementChild.cloneNode(true);
  root.dataset.source = source.id;
  const open = el(root, ".open");
  open.textContent = source.id;
  open.href = "#cam=" + encodeURIComponent(source.id);
  const card = {
    root, img: el(root, ".picture"), video: el(root, ".video"), player: null,
    tbody: el(root, "tbody"), canvas: el(root, ".highlight"),
    lastPicture: 0, ageAtArrival: 0, ended: false, frames: 0, event: null, url: null,
    sourceState: source.state ?? null, // the supervisor's capture state (connecting/streaming/stalled/failed/done)
  };
  card.img.alt = "live picture of " + source.id;
  if (transport === "h264") {
    card.img.hidden = true;
    card.video.hidden = false;
    card.player = new TilePlayer(card.video, (meta, latencyMs) => {
      card.frames++;
      card.root.dataset.frames = String(card.frames);
      // capture → shown of the frame on screen (for benchmarks: data-shown-latency-ms)
      if (latencyMs !== null) card.root.dataset.shownLatencyMs = String(Math.round(latencyMs));
    });
  }
  card.tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (!tr || tr.dataset.trackId === undefined) return;
    selected = selected === Number(tr.dataset.trackId) ? null : Number(tr.dataset.trackId);
    highlight(card);
  });
  return card;
}

// ---- the one connection: multipart parts tagged by source ----------------------

const CRLF2 = [13, 10, 13, 10];
function indexOf(buf, pattern, from) {
  outer: for (let i = from; i <= buf.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

function parseHeaders(text) {
  const h = {};
  for (const line of text.split("\r\n")) {
    const c = line.indexOf(":");
    if (c > 0) h[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
  }
  return h;
}

async function readWall(path, signal, onPart) {
  const response = await fetch(path, { cache: "no-store", signal });
  if (!response.ok) throw new Error(response.status === 401 ? "unauthorized: open this page with ?token=…" : "error " + response.status);
  setConn("connected", "ok");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf); joined.set(value, buf.length);
    buf = joined;
    let pos = 0;
    for (;;) {
      const end = indexOf(buf, CRLF2, pos);
      if (end < 0) break;
      const headers = parseHeaders(decoder.decode(buf.subarray(pos, end)));
      const length = parseInt(headers["content-length"], 10);
      if (!(length >= 0)) throw new Error("malformed part");
      if (buf.length < end + 4 + length + 2) break;
      onPart(headers, buf.slice(end + 4, end + 4 + length));
      pos = end + 4 + length + 2;
    }
    buf = buf.slice(pos);
  }
}

// H.264: the same tiles and events over one WebSocket (h264.js)
function openLive(ids, detail) {
  if (wall) wall.abort();
  const extra = { sources: ids.join(",") };
  if (detail) extra.detail = detail;
  wall = openLiveSocket(withQuery("/live", extra), {
    onOpen: () => setConn("connected · H.264", "ok"),
    onLost: () => setConn("reconnecting…", "bad"),
    onEvent: (ev) => { const card = cards.get(ev.source); if (card) update(card, ev); },
    onInit: (source, codec, data) => { const card = cards.get(source); if (card) card.player.init(codec, data); },
    onMedia: (source, h, data) => {
      const card = cards.get(source);
      if (!card) return;
      card.player.media(data, h.key, h.ageMs);
      card.lastPicture = Date.now();
      card.ageAtArrival = h.ageMs;
      el(card.root, ".seq").textContent = "seq " + h.seq;
    },
  });
}

async function openWall(ids, detail) {
  if (transport === "h264") return openLive(ids, detail);
  if (wall) wall.abort();
  const controller = new AbortController();
  wall = controller;
  const extra = { sources: ids.join(",") };
  if (detail) extra.detail = detail;
  while (!controller.signal.aborted) {
    try {
      await readWall(withQuery("/wall", extra), controller.signal, onPart);
    } catch (err) {
      if (controller.signal.aborted) return;
      if (String(err.message).startsWith("unauthorized")) { setConn(err.message, "bad"); return; }
    }
    setConn("reconnecting…", "bad");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function onPart(headers, body) {
  const type = headers["content-type"] || "";
  if (type.startsWith("image/jpeg")) {
    const card = cards.get(headers["x-source"]);
    if (!card) return;
    const url = URL.createObjectURL(new Blob([body], { type: "image/jpeg" }));
    const old = card.url;
    card.url = url;
    card.img.src = url;
    if (old) URL.revokeObjectURL(old);
    card.lastPicture = Date.now();
    card.ageAtArrival = Number(headers["x-age-ms"]) || 0;
    const arrived = card.lastPicture, age = card.ageAtArrival;
    card.img.decode().then(() => { card.root.dataset.shownLatencyMs = String(Math.round(age + Date.now() - arrived)); }, () => {});
    card.frames++;
    card.root.dataset.frames = String(card.frames);
    el(card.root, ".seq").textContent = "seq " + headers["x-seq"];
  } else if (type.startsWith("application/json")) {
    const ev = JSON.parse(new TextDecoder().decode(body));
    const card = cards.get(ev.source);
    if (card) update(card, ev);
  }
}

// ---- tiles and the camera page ------------------------------------------------------

function cell(tr, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  tr.appendChild(td);
}

function update(card, ev) {
  const root = card.root;
  if ("source_state" in ev) card.sourceState = ev.source_state;
  if (ev.objects === undefined && ev.ended === undefined) { tick(); return; } // a state change only
  card.ended = !!ev.ended;
  el(root, ".badge.ended").hidden = !ev.ended;
  if (ev.ended) { tick(); return; }
  card.event = ev;
  el(root, ".badge.random").hidden = !ev.random_weights;
  el(root, ".fps").textContent = ev.fps.toFixed(1) + " fps";
  el(root, ".latency").textContent = "latency " + ev.latency_ms.toFixed(0) + " ms";
  el(root, ".count").textContent = ev.objects.length + (ev.objects.length === 1 ? " object" : " objects");
  if (!root.classList.contains("detail")) return;
  const objects = ev.objects.slice().sort((a, b) => (a.track_id ?? 1e18) - (b.track_id ?? 1e18));
  const rows = objects.map((o) => {
    const tr = document.createElement("tr");
    if (o.track_id !== null) tr.dataset.trackId = String(o.track_id);
    if (o.track_id !== null && o.track_id === selected) tr.className = "selected";
    cell(tr, o.track_id === null ? "–" : String(o.track_id), true);
    cell(tr, o.class, false);
    cell(tr, o.score.toFixed(2), true);
    cell(tr, o.mask_age === null ? "–" : String(o.mask_age) + (o.mask_kind === "keyframe" ? " (key)" : ""), true);
    return tr;
  });
  card.tbody.replaceChildren(...rows);
  highlight(card);
}

// camera page: the selected object's box and mask over the picture (source pixels)
function highlight(card) {
  for (const tr of card.tbody.rows) tr.classList.toggle("selected", Number(tr.dataset.trackId) === selected);
  const ev = card.event;
  const w = card.img.naturalWidth || card.video.videoWidth, h = card.img.naturalHeight || card.video.videoHeight;
  if (!ev || !w) return;
  const chosen = ev.objects.filter((o) => o.track_id !== null && o.track_id === selected);
  drawObjects(card.canvas, w, h, chosen, 3);
  card.root.dataset.highlighted = chosen.length ? String(selected) : "";
}

function tick() {
  const now = Date.now();
  for (const card of cards.values()) {
    // pictures arriving beat everything; without them the supervisor's capture state says why
    const fresh = card.lastPicture && now - card.lastPicture <= STALE_MS;
    const src = card.sourceState;
    let state = "waiting";
    if (card.ended || src === "done") state = "ended";
    else if (fresh) state = "streaming";
    else if (src === "failed") state = "failed";
    else if (src === "connecting" || src === "stalled") state = "reconnecting";
    else if (card.lastPicture) state = "stalled";
    const badge = el(card.root, ".state");
    if (badge.textContent !== state) { badge.textContent = state; badge.className = "state " + state; }
    card.root.dataset.state = state;
    if (card.lastPicture) el(card.root, ".age").textContent = "age " + (card.ageAtArrival + now - card.lastPicture).toFixed(0) + " ms";
  }
}

function closePlayers() {
  for (const card of cards.values()) if (card.player) card.player.close();
  cards.clear();
}

function showWall() {
  selected = null;
  const main = document.getElementById("sources");
  main.className = "wall";
  closePlayers();
  const tiles = sources.map((s) => { const c = makeCard(s); cards.set(s.id, c); return c.root; });
  main.replaceChildren(...tiles);
  openWall(sources.map((s) => s.id), null);
}

function showCamera(id) {
  selected = null;
  const main = document.getElementById("sources");
  main.className = "camera";
  closePlayers();
  const card = makeCard(sources.find((s) => s.id === id));
  card.root.classList.add("detail");
  cards.set(id, card);
  main.replaceChildren(card.root);
  openWall([id], id);
}

function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  const rec = hash === "recordings";
  document.getElementById("sources").hidden = rec;
  document.getElementById("recordings").hidden = !rec;
  if (rec) {
    if (wall) { wall.abort(); wall = null; }
    closePlayers();
    showRecordings(withQuery);
  } else if (hash.startsWith("cam=") && sources.some((s) => s.id === hash.slice(4))) {
    showCamera(hash.slice(4));
  } else {
    showWall();
  }
}

async function main() {
  let response;
  try {
    response = await fetch(withQuery("/api/sources"), { cache: "no-store" });
  } catch (err) {
    setConn("cannot reach the live view", "bad");
    return;
  }
  if (!response.ok) {
    setConn(response.status === 401 ? "unauthorized: open this page with ?token=…" : "error " + response.status, "bad");
    return;
  }
  sources = (await response.json()).sources;
  window.addEventListener("hashchange", route);
  route();
  setInterval(tick, 500);
  setInterval(refreshSources, 2000);
}

// sources added or removed at runtime (the control API): the wall follows without a reload
async function refreshSources() {
  let fresh;
  try {
    const response = await fetch(withQuery("/api/sources"), { cache: "no-store" });
    if (!response.ok) return;
    fresh = (await response.json()).sources;
  } catch (err) {
    return;
  }
  const ids = (list) => list.map((s) => s.id).join(",");
  if (ids(fresh) === ids(sources)) return;
  sources = fresh;
  const main = document.getElementById("sources");
  if (!main.hidden && main.className === "wall") showWall();
}

main();
