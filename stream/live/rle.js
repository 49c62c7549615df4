// COCO run-length encoded masks ({"size": [H, W], "counts": "<compressed string>"}),
// decoded and painted onto a canvas. Same format as pycocotools' rleFrString.
"use strict";

// compressed counts string -> run lengths (alternating 0s and 1s, column-major)
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// paint the mask's pixels into an ImageData of the same size with [r, g, b, a]
function paintRle(image, rle, rgba) {
  const h = rle.size[0], w = rle.size[1];
  if (image.width !== w || image.height !== h) return false;
  const counts = rleCounts(rle.counts);
  const data = image.data;
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const n = counts[r];
    if (r % 2 === 1) {
      for (let j = i; j < i + n; j++) {
        const o = ((j % h) * w + Math.floor(j / h)) * 4;
        data[o] = rgba[0]; data[o + 1] = rgba[1]; data[o + 2] = rgba[2]; data[o + 3] = rgba[3];
      }
    }
    i += n;
  }
  return true;
}

const PALETTE = [[255, 64, 64], [64, 200, 255], [255, 210, 0], [120, 255, 120], [255, 120, 255], [255, 150, 40]];
function colorOf(id) { return PALETTE[Math.abs(id ?? 0) % PALETTE.length]; }

// draw masks (alpha 110) and box outlines of objects onto a canvas of the picture's size
function drawObjects(canvas, width, height, objects, lineWidth) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (const o of objects) if (o.mask) paintRle(image, o.mask, [...colorOf(o.track_id), 110]);
  ctx.putImageData(image, 0, 0);
  ctx.lineWidth = lineWidth || 2;
  for (const o of objects) {
    if (!o.box) continue;
    const [x1, y1, x2, y2] = o.box;
    const [r, g, b] = colorOf(o.track_id);
    ctx.strokeStyle = `rgb(${r},${g},${b})`;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
}
