// Recordings: each source's segments by start time; a segment plays in a <video>
// (fragmented MP4, served with HTTP Range) and its boxes and masks are drawn on a
// <canvas> over it from the JSONL sidecar (the source of truth, not burned-in
// pixels): for each presented frame (requestVideoFrameCallback's mediaTime, or
// timeupdate where that is missing) the sidecar line whose "t" is nearest.
"use strict";

const player = { lines: [], video: null, canvas: null, shown: -1 };

function nearestLine(lines, t) {
  let lo = 0, hi = lines.length - 1;
  if (hi < 0) return -1;
  while (lo < hi) { // first line with line.t >= t
    const mid = (lo + hi) >> 1;
    if (lines[mid].t < t) lo = mid + 1; else hi = mid;
  }
  if (lo > 0 && Math.abs(lines[lo - 1].t - t) <= Math.abs(lines[lo].t - t)) lo--;
  return lo;
}

// exact: mediaTime is a presented frame's time (nearest line); otherwise a playback
// position (currentTime), which shows the last frame that started at or before it
function drawAt(mediaTime, exact) {
  let i = nearestLine(player.lines, mediaTime);
  if (!exact && i > 0 && player.lines[i].t > mediaTime + 1e-4) i--;
  if (i < 0) return;
  const line = player.lines[i];
  drawObjects(player.canvas, line.width, line.height, line.objects, 2);
  player.shown = i;
  const root = document.querySelector("#recordings .player");
  root.dataset.line = String(line.index);
  root.dataset.mediaTime = String(mediaTime);
  root.querySelector(".rec-frame").textContent = "frame " + line.index + " · seq " + line.seq + " · t " + line.t.toFixed(3) + " s";
  root.querySelector(".rec-count").textContent = line.objects.length + (line.objects.length === 1 ? " object" : " objects");
}

function followFrames(video) {
  if ("requestVideoFrameCallback" in video) {
    const onFrame = (now, meta) => {
      if (player.video !== video) return;
      drawAt(meta.mediaTime, true);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else { // no per-frame callback: the playback position, about 4 times a second, and after seeks
    video.addEventListener("timeupdate", () => drawAt(video.currentTime));
    video.addEventListener("seeked", () => drawAt(video.currentTime));
  }
}

async function playSegment(source, segment, withQuery) {
  const root = document.querySelector("#recordings .player");
  root.hidden = false;
  root.dataset.segment = segment.name;
  root.dataset.ready = "";
  root.querySelector(".rec-title").textContent = source + " · " + segment.start;
  player.lines = [];
  if (segment.sidecar) {
    const r = await fetch(withQuery(segment.sidecar), { cache: "no-store" });
    const text = r.ok ? await r.text() : "";
    player.lines = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }
  const old = root.querySelector(".rec-video");
  const video = old.cloneNode(false); // a fresh element: no callbacks of the previous segment
  old.replaceWith(video);
  player.video = video;
  player.canvas = root.querySelector(".rec-overlay");
  player.shown = -1;
  followFrames(video);
  video.addEventListener("loadeddata", () => { root.dataset.ready = "1"; }, { once: true });
  video.src = withQuery(segment.mp4);
}

async function showRecordings(withQuery) {
  const list = document.getElementById("segments");
  const r = await fetch(withQuery("/api/recordings"), { cache: "no-store" });
  if (!r.ok) {
    setConn(r.status === 401 ? "unauthorized: open this page with ?token=…" : "error " + r.status, "bad");
    return;
  }
  setConn("recordings", "ok");
  const recordings = (await r.json()).recordings;
  const blocks = Object.entries(recordings).map(([source, segments]) => {
    const block = document.createElement("section");
    block.className = "rec-source";
    block.dataset.source = source;
    const h = document.createElement("h2");
    h.textContent = source + " · " + segments.length + (segments.length === 1 ? " segment" : " segments");
    const ul = document.createElement("ul");
    for (const seg of segments) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#recordings";
      a.className = "segment";
      a.dataset.name = seg.name;
      const size = seg.bytes >= 1e6 ? (seg.bytes / 1e6).toFixed(1) + " MB" : Math.ceil(seg.bytes / 1e3) + " kB";
      a.textContent = seg.start + " · seq " + seg.first_seq + " · " + size;
      a.addEventListener("click", (e) => { e.preventDefault(); playSegment(source, seg, withQuery); });
      li.appendChild(a);
      ul.appendChild(li);
    }
    block.append(h, ul);
    return block;
  });
  if (!blocks.length) list.textContent = "no recordings (the record sink is off or has written nothing yet)";
  else list.replaceChildren(...blocks);
}
