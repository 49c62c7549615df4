// stream bench live: capture -> displayed latency read back from the pictures a page shows.
// Run by the bench through WebDriver's execute_script(probe, selector, geometry, sourceWidth):
// on every animation frame each <img> or <canvas> matching `selector`, and on every frame a
// <video> matching it presents (requestVideoFrameCallback), the picture is drawn into a small canvas, the pattern source's capture-time stamp (geometry.bits cells of
// geometry.cell source pixels at (x0, y0), bit 0 first, white = 1, the inverted bits in the
// row below; see stream/sources/pattern.py) is read at the cells' centres, and a stamp not
// seen before on that element gives one sample: Date.now() - stamp (ms, modulo 2^bits).
// Pictures scaled by the transport are read at the same place relative to their width.
"use strict";
(function (selector, g, sourceWidth) {
  if (window.__liveProbe) return;
  const PER_CELL = 3; // destination pixels per cell; pixel 1 of 3 is the cell's centre
  const W = g.bits * PER_CELL, H = 2 * PER_CELL;
  const MOD = 2 ** g.bits;
  const canvas = document.createElement("canvas");
  canvas.width = W; canvas.height = H;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const probe = { samples: [], unreadable: 0, last: new Map() };

  function size(el) {
    if (el.tagName === "VIDEO") return el.readyState >= 2 ? [el.videoWidth, el.videoHeight] : [0, 0];
    if (el.tagName === "IMG") return el.complete ? [el.naturalWidth, el.naturalHeight] : [0, 0];
    return [el.width, el.height];
  }

  // the stamp in ms, -1 when a cell and its complement do not clearly differ, null: no picture yet
  function read(el) {
    const [w, h] = size(el);
    if (!w || !h) return null;
    const s = w / sourceWidth;
    ctx.drawImage(el, g.x0 * s, g.y0 * s, g.bits * g.cell * s, 2 * g.cell * s, 0, 0, W, H);
    const d = ctx.getImageData(0, 0, W, H).data;
    let ms = 0;
    for (let b = 0; b < g.bits; b++) {
      const x = b * PER_CELL + 1;
      const on = 4 * (1 * W + x), off = 4 * ((PER_CELL + 1) * W + x);
      const a = d[on] + d[on + 1] + d[on + 2], c = d[off] + d[off + 1] + d[off + 2];
      if (Math.abs(a - c) < 3 * 96) return -1;
      if (a > c) ms += 2 ** b;
    }
    return ms;
  }

  function tile(el) {
    const card = el.closest("[data-source]");
    return card ? card.dataset.source : "page";
  }

  function sample(el, now) {
    let ms;
    try { ms = read(el); } catch (err) { ms = null; } // e.g. a video between sources
    if (ms === null) return;
    if (ms < 0) { probe.unreadable++; return; }
    const id = tile(el);
    if (probe.last.get(id) === ms) return;
    probe.last.set(id, ms);
    probe.samples.push([id, ((now % MOD) - ms + MOD) % MOD, now]);
  }

  const watched = new WeakSet(); // videos with their own per-frame callback
  function follow(video) {
    watched.add(video);
    const each = () => { sample(video, Date.now()); video.requestVideoFrameCallback(each); };
    video.requestVideoFrameCallback(each);
  }

  function frame() {
    const now = Date.now();
    for (const el of document.querySelectorAll(selector)) {
      if (el.tagName === "VIDEO" && "requestVideoFrameCallback" in el) {
        if (!watched.has(el)) follow(el);
        continue;
      }
      sample(el, now);
    }
    requestAnimationFrame(frame);
  }

  probe.take = function () {
    const out = [probe.samples, probe.unreadable];
    probe.samples = []; probe.unreadable = 0;
    return out;
  };
  window.__liveProbe = probe;
  requestAnimationFrame(frame);
})(arguments[0], arguments[1], arguments[2]);
