"""``stream demo`` (``make demo``): the bundled street clip through every stage, live in the browser.

The clip loops as a live camera (frames are dropped at the edge when the machine
is behind, never queued) until Ctrl-C; the live view's URL is printed before
anything slow happens. Weights, in order:

1. the official YOLO-NAS and SAM weights in the cache (``stream weights pull``);
2. if they are missing, one attempt to fetch them;
3. if that fails, or with ``--random-weights``: the same pipeline on RANDOM WEIGHTS,
   said once, plainly, with the settings from ``stream.random_weights`` that put boxes
   and masks on screen and keep up with a live source on a CPU (printed, each with why). Every
   output is then marked RANDOM WEIGHTS (overlay banner, live page badge, published
   records, summary). ``--set`` overrides win over those choices.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from stream import random_weights
from stream.commands.pipeline import _cli_overrides, _run
from stream.config import Config, load_config
from stream.errors import WeightsError

DEMO_BOXES = 10  # random boxes kept per frame: enough to see tracking and masks work, few enough to read
REPO_DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"

# Used when the package is installed without the repository's configs/ folder.
_DEMO: dict[str, Any] = {
    "name": "demo",
    "sources": [{"id": "street", "type": "file", "path": "", "live": True, "loop": True}],
    "pipeline": [],
    "sinks": {"jsonl": {"path": "out/demo/frames.jsonl"}},
    "metrics": {"port": 0},
}


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the bundled street clip through the whole pipeline, live in the browser")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a key of configs/demo.yaml (wins over the random-weights choices)")
    demo.add_argument("--random-weights", action="store_true",
                      help="run on random weights even if real ones are cached (outputs are NOT detections)")
    demo.add_argument("--summary-json", type=Path, help="also write the end-of-run summary as JSON here")
    demo.set_defaults(handler=cmd_demo)


def say(line: str) -> None:
    print(f"stream demo: {line}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace, extra: list[str]) -> Config:
    from stream.data import demo_clip_path

    overrides = [f"sources.0.path={demo_clip_path()}", *extra, *_cli_overrides(args)]
    if REPO_DEMO.is_file():
        return load_config(REPO_DEMO, overrides, env=os.environ)
    return load_config(None, overrides, env=os.environ, base=_DEMO)


def cmd_demo(args: argparse.Namespace) -> int:
    config = _load(args, [])
    _announce(config)
    why = "--random-weights" if config.random_weights else _missing_weights(config)
    if why is not None:
        say(f"RANDOM WEIGHTS ({why}). The models are untrained: the boxes and masks on screen are NOT "
            "detections. For real ones: `stream weights pull yolo_nas_s sam_vit_b`, then run the demo again.")
        chosen = _random_choices(config, args.overrides)
        config = _load(args, [c.override() for c in chosen] + ["random_weights=true"])
        say("settings chosen so that random weights put boxes and masks on screen and keep up with the clip:")
        for line in random_weights.describe(chosen):
            print(line, file=sys.stderr, flush=True)
    return _run(config, args)


def _announce(config: Config) -> None:
    """What runs and where to look: printed first, before models load."""
    src = config.sources[0]
    loop = " (looping as a live camera; Ctrl-C stops)" if src.loop else ""
    say(f"{Path(src.path or '').name}{loop} through capture → {' → '.join([*config.pipeline, 'output'])}")
    sinks = config.sinks
    if sinks.live is not None and sinks.live.enabled:
        say(f"live view:  http://{sinks.live.host}:{sinks.live.port}/")
    if sinks.record is not None and sinks.record.enabled:
        say(f"recording:  {sinks.record.root}/")
    if sinks.publish is not None and sinks.publish.enabled:
        say(f"masks:      stream subscribe {sinks.publish.endpoint}")


def _missing_weights(config: Config) -> str | None:
    """None when every model's weights are cached (fetching them once if needed); else why not."""
    from stream.models.weights import OFFICIAL, get_spec, pull
    from stream.stages import detect, segment

    needed: list[tuple[str, Any]] = []
    if "detect" in config.pipeline:
        p = detect.params(config)
        needed.append((p.weights or p.model, detect.checkpoint_path))
    if "segment" in config.pipeline:
        s = segment.params(config)
        if s.model != "tiny":
            needed.append((s.weights or f"sam_{s.model}", segment.checkpoint_path))
    failed: list[str] = []
    for name, resolve in needed:
        try:
            resolve(config)
            continue
        except WeightsError:
            if name not in OFFICIAL:
                raise  # a checkpoint path the user gave: an error, not a reason to run untrained
        say(f"{name} weights are not in the cache {config.cache_dir}: fetching them (first use)")
        quiet = logging.getLogger("stream.models.weights")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # one line below says what happened, not one per mirror
        try:
            pull(get_spec(name), Path(config.cache_dir), timeout_s=20.0)
        except WeightsError as exc:
            logging.getLogger(__name__).debug("fetching %s failed: %s", name, exc)
            failed.append(name)
        finally:
            quiet.setLevel(level)
    if failed:
        return f"the {' and '.join(failed)} weights are not cached and could not be fetched from here"
    return None


def _random_choices(config: Config, user_overrides: list[str]) -> list[random_weights.Choice]:
    """stream.random_weights' settings for this machine, plus SAM beside the stream; the keys
    the user set with --set are left out (theirs win)."""
    from stream.sources import open_source
    from stream.stages import detect

    device = _device_type(detect.params(config).device)
    src = open_source(config.sources[0])
    try:
        fps = float(src.open().fps or 10.0)
    finally:
        src.close()
    chosen = random_weights.choices(device, fps=fps, boxes=DEMO_BOXES)
    chosen.append(random_weights.Choice(
        "segment.async_keyframes", "always", "SAM runs beside the stream: no frame waits for a keyframe"))
    lag = max(15, round(3 * fps))
    chosen.append(random_weights.Choice(
        "segment.max_lag_frames", lag, f"a keyframe's masks may land up to {lag} frames (3 s) after the frame SAM saw"))
    mine = {o.partition("=")[0].strip() for o in user_overrides}
    return [c for c in chosen if c.key not in mine]


def _device_type(device: str) -> str:
    """'cuda' or 'cpu' for detect.device. Without an NVIDIA driver 'auto' is the CPU, known
    without importing torch (seconds on a busy machine, before the first frame)."""
    if device == "auto" and not Path("/dev/nvidiactl").exists():
        return "cpu"
    from stream.models.yolo_nas import resolve_device

    return resolve_device(device).type
