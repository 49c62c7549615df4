"""Every ``--json`` output of every command parses: a real subprocess per command at tiny
scale, its stdout read as ONE strict JSON document (no NaN, no stray console line from
super-gradients or a worker process); logs go to stderr.

``stream subscribe --json`` (one JSON object per line, for as long as it runs) is run
against a real publisher in tests/integration/test_publish.py
(``test_subscribe_command_prints_records_with_masks``), which parses every line;
``stream bench pipeline --json`` (minutes even at tiny scale) in
tests/integration/test_bench_pipeline.py and ``stream bench live --json`` (a browser) in
tests/integration/test_bench_live.py, and ``stream bench detect --json`` (it imports
super-gradients, which prints on stdout) in tests/integration/test_detect_track_pipeline.py
(``test_bench_detect_times_the_pipelines_own_cached_artifact``), which parse their stdout as
one strict JSON object. ``stream sources --json`` needs a running pipeline: it is run against
one in tests/integration/test_sources_api.py.
"""

from __future__ import annotations

import json
import shutil

import pytest

from stream.cli import build_parser
from tests.conftest import REPO, run_stream

pytestmark = pytest.mark.timeout(900)

EXAMPLES = REPO / "examples" / "eval"
# command -> tiny-scale arguments
COMMANDS: dict[str, tuple[str, ...]] = {
    "bench transport": ("--stages", "1", "--width", "64", "--height", "48", "--frames", "20",
                        "--paced-frames", "10", "--paced-fps", "50"),
    "bench track": ("--sizes", "5", "--frames", "5", "--warmup", "1"),
    "bench segment": ("--arch", "tiny", "--device", "cpu", "--width", "64", "--height", "48", "--skip-sam",
                      "--tracks", "2", "--frames", "3"),
    "bench outputs": ("--width", "64", "--height", "48", "--objects", "2", "--frames", "3", "--min-crop", "4",
                      "--max-crop", "8", "--no-record", "--full-rle-frames", "1"),
    "bench sources": ("--seconds", "1", "--outages", "1", "--outage-s", "0.5", "--size", "64x48", "--fps", "10"),
    "bench preprocess": ("--width", "64", "--height", "48", "--frames", "3"),
    "bench soak": ("--minutes", "0.1", "--interval-s", "2", "--streams", "1", "--fps", "5", "--resolution", "64x48",
                   "--pipeline", "passthrough",  # growth bounds off: 6 s cannot meet per-hour slopes
                   "--max-rss-mb-per-h", "1e6", "--max-fds-per-h", "1e6", "--max-shm-mb-per-h", "1e6",
                   "--max-scrape-ms", "0.001"),  # broken on purpose: a failed soak still prints its JSON
    "eval detect": ("--data", str(EXAMPLES / "detect"), "--pred", str(EXAMPLES / "detect" / "predictions.json")),
    "eval track": ("--gt", str(EXAMPLES / "track" / "gt.txt"), "--det", str(EXAMPLES / "track" / "det.txt")),
    "eval masks": ("--width", "160", "--height", "120", "--frames", "20", "--no-adaptive"),
}  # fmt: skip
ELSEWHERE = {"subscribe", "bench pipeline", "bench live", "bench detect", "sources"}  # see the module docstring
# needs root and two network namespaces (stream.testing.netns), and six `stream run`s even at
# 64x48 × 20 frames: 51 s here, too long for this test. It printed its JSON (one strict line) when
# run by hand; the StopIteration once reported here was the upstream host's status line looking
# for an output stage (tests/unit/test_split.py covers it).
NOT_RUN_HERE = {"bench crosshost"}


def _strict(text: str) -> object:
    def bad(constant: str) -> object:
        raise AssertionError(f"{constant} in --json output: not JSON")

    return json.loads(text, parse_constant=bad)


def _json_commands() -> set[str]:
    """Every command whose parser has a --json flag, e.g. 'bench detect'."""
    found: set[str] = set()

    def walk(parser, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for action in parser._actions:
            if "--json" in getattr(action, "option_strings", ()):
                found.add(prefix.strip())
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):  # a sub-command group
                for name, sub in choices.items():
                    walk(sub, f"{prefix} {name}")

    walk(build_parser(), "")
    return found


def test_every_json_command_is_covered_here():
    assert _json_commands() == set(COMMANDS) | ELSEWHERE | NOT_RUN_HERE

# commands run here past a bound they set: they print their figures all the same, then the
# bound they broke on stderr, and exit 1
FAILS = {"bench soak": "stream: soak failed: a /metrics scrape took"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_json_output_is_one_strict_json_document_on_stdout(command, artifact_cache, tmp_path):
    if command == "bench sources" and shutil.which("gst-inspect-1.0") is None:
        pytest.skip("GStreamer's RTSP server is not installed: run scripts/system-deps.sh")
    extra = ("--out", str(tmp_path / "out")) if command == "eval detect" else ()
    r = run_stream(*command.split(), *COMMANDS[command], *extra, "--json",
                   env={"STREAM_CACHE": str(artifact_cache)}, timeout=600)  # fmt: skip
    failed = FAILS.get(command)
    assert r.returncode == (1 if failed else 0), r.stderr[-3000:]
    if failed:
        assert failed in r.stderr, r.stderr[-3000:]
    value = _strict(r.stdout)
    assert isinstance(value, dict) and value, r.stdout[:500]
    assert r.stdout.count("\n") == 1, "more than one line on stdout"
    if command.startswith("bench"):
        assert isinstance(value.get("rows"), list)
