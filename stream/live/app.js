// stream live view: one card per source with its MJPEG picture, a status line and
// the object table, updated from Server-Sent Events. No external resources.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const cards = new Map(); // source id -> {root, img, tbody, last}
const STALE_MS = 3000;

function el(root, selector) { return root.querySelector(selector); }

function setConn(text, cls) {
  const conn = document.getElementById("conn");
  conn.textContent = text;
  conn.className = "conn " + cls;
}

function startPicture(card, streamPath) {
  // a stream that ends (server restart, network) is reopened after a pause
  card.img.onerror = () => setTimeout(() => { card.img.src = streamPath + query + (query ? "&" : "?") + "r=" + Date.now(); }, 1000);
  card.img.src = streamPath + query;
}

function addCard(source) {
  const root = document.getElementById("card").content.firstElementChild.cloneNode(true);
  root.dataset.source = source.id;
  el(root, ".title").textContent = source.id;
  const card = { root, img: el(root, ".picture"), tbody: el(root, "tbody"), last: 0 };
  card.img.alt = "live picture of " + source.id;
  document.getElementById("sources").appendChild(root);
  cards.set(source.id, card);
  startPicture(card, source.stream);
}

function cell(tr, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  tr.appendChild(td);
}

function update(ev) {
  const card = cards.get(ev.source);
  if (!card) return;
  const root = card.root;
  card.last = Date.now();
  root.classList.remove("stale");
  el(root, ".badge.ended").hidden = !ev.ended;
  if (ev.ended) return;
  el(root, ".badge.random").hidden = !ev.random_weights;
  el(root, ".fps").textContent = ev.fps.toFixed(1) + " fps";
  el(root, ".latency").textContent = "latency " + ev.latency_ms.toFixed(0) + " ms";
  el(root, ".seq").textContent = "seq " + ev.seq;
  el(root, ".count").textContent = ev.objects.length + (ev.objects.length === 1 ? " object" : " objects");
  const objects = ev.objects.slice().sort((a, b) => (a.track_id ?? 1e18) - (b.track_id ?? 1e18));
  const rows = objects.map((o) => {
    const tr = document.createElement("tr");
    if (o.track_id !== null) tr.dataset.trackId = String(o.track_id);
    cell(tr, o.track_id === null ? "–" : String(o.track_id), true);
    cell(tr, o.class, false);
    cell(tr, o.score.toFixed(2), true);
    cell(tr, o.mask_age === null ? "–" : String(o.mask_age) + (o.mask_kind === "keyframe" ? " (key)" : ""), true);
    return tr;
  });
  card.tbody.replaceChildren(...rows);
}

function listen() {
  const events = new EventSource("/events" + query);
  events.onopen = () => setConn("connected", "ok");
  events.onerror = () => setConn("reconnecting…", "bad");
  events.onmessage = (msg) => update(JSON.parse(msg.data));
}

function watchStale() {
  setInterval(() => {
    const now = Date.now();
    for (const card of cards.values()) {
      if (card.last && now - card.last > STALE_MS) card.root.classList.add("stale");
    }
  }, 1000);
}

async function main() {
  let response;
  try {
    response = await fetch("/api/sources" + query, { cache: "no-store" });
  } catch (err) {
    setConn("cannot reach the live view", "bad");
    return;
  }
  if (!response.ok) {
    setConn(response.status === 401 ? "unauthorized: open this page with ?token=…" : "error " + response.status, "bad");
    return;
  }
  const info = await response.json();
  info.sources.forEach(addCard);
  listen();
  watchStale();
}

main();
