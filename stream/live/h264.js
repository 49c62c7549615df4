// H.264 live view: every watched camera's fragmented MP4 over ONE WebSocket (/live),
// each camera into its own MediaSource in its tile's <video>. Binary messages are
// video (see stream/live/server.py _video_message), text messages the object events.
// Low latency: one fragment per frame, "sequence" mode (a skipped frame or a late one
// leaves no gap), and the play position follows the newest frame (a jump when far
// behind, a slightly faster rate when a little behind); the buffer behind it is trimmed.
"use strict";

const H264_PROBE = 'video/mp4; codecs="avc1.42E01F"';
const LIVE_BEHIND_S = 0.5; // further behind the newest frame than this: jump to it
const EDGE_S = 0.04; // where to play: this far before the newest frame's end
const KEEP_S = 3; // seconds of video kept behind the play position
const MAX_QUEUE = 30; // fragments waiting for the SourceBuffer before the backlog is dropped to a keyframe

function h264Supported() {
  return !!(window.MediaSource && MediaSource.isTypeSupported(H264_PROBE));
}

class TilePlayer {
  constructor(video, onFrame) {
    this.video = video;
    this.ms = null;
    this.sb = null;
    this.queue = [];
    this.initData = null;
    this.codec = "";
    this.appending = null; // the fragment in the SourceBuffer's hands
    this.spans = []; // {end: media time its frame ends, arrival: Date.now() when it came, ageMs then}
    if ("requestVideoFrameCallback" in video) {
      const each = (now, meta) => { onFrame(meta, this.latencyAt(meta.mediaTime)); video.requestVideoFrameCallback(each); };
      video.requestVideoFrameCallback(each);
    }
  }

  // a new stream (first one, new size, source restarted): a fresh MediaSource
  init(codec, data) {
    this.close();
    const ms = new MediaSource();
    this.ms = ms;
    this.codec = codec;
    this.initData = data;
    const url = URL.createObjectURL(ms);
    ms.addEventListener("sourceopen", () => {
      URL.revokeObjectURL(url);
      if (this.ms !== ms) return;
      this.sb = ms.addSourceBuffer('video/mp4; codecs="' + codec + '"');
      this.sb.mode = "sequence";
      this.sb.addEventListener("updateend", () => this.pump());
      this.pump();
    }, { once: true });
    this.video.src = url;
  }

  // capture → shown for the frame at mediaTime: its age when it arrived plus the time since
  latencyAt(mediaTime) {
    const span = this.spans.find((s) => s.end > mediaTime + 1e-4);
    return span ? span.ageMs + Date.now() - span.arrival : null;
  }

  media(data, key, ageMs) {
    if (!this.ms) return; // no init segment yet: the server sends one first
    this.queue.push({ data, key, ageMs: ageMs || 0, arrival: Date.now() });
    if (this.queue.length > MAX_QUEUE) this.dropToKeyframe();
    this.pump();
  }

  // behind: drop the backlog before the newest queued keyframe
  dropToKeyframe() {
    for (let i = this.queue.length - 1; i > 0; i--) {
      if (this.queue[i].key) { this.queue.splice(0, i); return; }
    }
  }

  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || this.ms.readyState !== "open") return;
    if (this.appending) { // the fragment just appended ends where the buffer now ends
      const b = sb.buffered;
      if (b.length) this.spans.push({ end: b.end(b.length - 1), arrival: this.appending.arrival, ageMs: this.appending.ageMs });
      if (this.spans.length > 200) this.spans.splice(0, 100);
      this.appending = null;
    }
    if (this.initData) {
      const data = this.initData;
      this.initData = null;
      sb.appendBuffer(data);
      return; // continues on updateend
    }
    const v = this.video;
    const b = sb.buffered;
    if (b.length && v.currentTime - b.start(0) > 2 * KEEP_S) {
      sb.remove(0, v.currentTime - KEEP_S);
      return;
    }
    const next = this.queue.shift();
    if (!next) { this.chase(); return; }
    try {
      sb.appendBuffer(next.data);
      this.appending = next;
    } catch (err) { // QuotaExceededError and the like: go on from the next keyframe
      const k = this.queue.findIndex((q) => q.key);
      this.queue = k < 0 ? [] : this.queue.slice(k);
    }
  }

  // the live edge: play the newest frame, not a backlog. Far behind: jump; a little
  // behind: play slightly faster until caught up (no visible jump)
  chase() {
    const v = this.video, b = v.buffered;
    if (!b.length) return;
    const start = b.start(b.length - 1), end = b.end(b.length - 1);
    const behind = end - v.currentTime;
    if (v.currentTime < start || behind > LIVE_BEHIND_S) v.currentTime = Math.max(start, end - EDGE_S);
    else v.playbackRate = behind > 2 * EDGE_S ? 1.25 : 1.0;
    if (v.paused) v.play().catch(() => {});
  }

  close() {
    this.sb = null;
    this.spans = [];
    this.appending = null;
    this.queue = [];
    this.initData = null;
    if (this.ms) {
      this.ms = null;
      this.video.removeAttribute("src");
      this.video.load();
    }
  }
}

// One WebSocket for every tile: onVideo(source, kind, header, payload) for binary
// messages, onEvent(json) for text ones. Reconnects after a second until aborted.
function openLiveSocket(path, handlers) {
  const state = { ws: null, closed: false };
  const connect = () => {
    if (state.closed) return;
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + path);
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.onopen = () => handlers.onOpen();
    ws.onmessage = (e) => {
      if (typeof e.data === "string") { handlers.onEvent(JSON.parse(e.data)); return; }
      const buf = new Uint8Array(e.data);
      const kind = buf[0], n = buf[1];
      const source = new TextDecoder().decode(buf.subarray(2, 2 + n));
      let pos = 2 + n;
      if (kind === 1) {
        const c = buf[pos];
        const codec = new TextDecoder().decode(buf.subarray(pos + 1, pos + 1 + c));
        handlers.onInit(source, codec, buf.slice(pos + 1 + c));
      } else if (kind === 2) {
        const view = new DataView(e.data, pos, 9);
        handlers.onMedia(source, { seq: view.getUint32(0), ageMs: view.getUint32(4), key: !!(view.getUint8(8) & 1) }, buf.slice(pos + 9));
      }
    };
    ws.onclose = () => {
      if (state.closed) return;
      handlers.onLost();
      setTimeout(connect, 1000);
    };
  };
  connect();
  return { abort() { state.closed = true; if (state.ws) state.ws.close(); } };
}
