"""/healthz verdicts from real counter histories: a stage failing every frame, a
failed only camera, a stage down, a pipeline that works."""

from __future__ import annotations

from stream.health import HealthWindow, verdict


def _stage(up: bool = True, state: str = "running", frames_out: int = 100) -> dict:
    return {"up": up, "state": state, "frames_out": frames_out}


def _window(history: list[dict[str, tuple[int, int, int]]], step_s: float = 1.0, window_s: float = 5.0):
    w = HealthWindow(window_s)
    for i, counters in enumerate(history):
        w.observe(i * step_s, counters)
    return w, (len(history) - 1) * step_s


STAGES = {"capture:cam": _stage(), "detect": _stage(), "output": _stage()}


def test_every_frame_failing_in_detect_is_503_naming_detect():
    # frames enter detect and every one fails there: nothing reaches the output
    history = [{"capture:cam": (0, 10 * i, 0), "detect": (10 * i, 0, 10 * i), "output": (0, 0, 0)} for i in range(8)]
    w, now = _window(history)
    code, body = verdict(STAGES, {"cam": "streaming"}, w, now)
    assert code == 503 and body["status"] == "failing"
    assert "frames failed" in body["failing"]["detect"] and "no frame came through" in body["failing"]["output"]


def test_some_frames_failing_is_degraded_but_200():
    history = [{"capture:cam": (0, 10 * i, 0), "detect": (10 * i, 9 * i, i), "output": (9 * i, 9 * i, 0)}
               for i in range(8)]
    w, now = _window(history)
    code, body = verdict(STAGES, {"cam": "streaming"}, w, now)
    assert (code, body["status"]) == (200, "degraded")
    assert body["failing"]["detect"].startswith("5 of 50 frames failed")


def test_the_only_camera_failed_is_503_naming_it():
    w, now = _window([{"output": (50, 50, 0)}] * 8)
    code, body = verdict(STAGES, {"cam": "failed"}, w, now)
    assert code == 503 and body["failing"]["source:cam"] == "failed"


def test_one_of_two_cameras_failed_is_degraded():
    history = [{"output": (10 * i, 10 * i, 0)} for i in range(8)]
    w, now = _window(history)
    code, body = verdict(STAGES, {"cam": "stalled", "door": "streaming"}, w, now)
    assert (code, body["status"], body["failing"]) == (200, "degraded", {"source:cam": "stalled"})


def test_a_working_pipeline_is_ok_and_a_restarting_stage_is_named():
    history = [{"detect": (10 * i, 10 * i, 0), "output": (10 * i, 10 * i, 0)} for i in range(8)]
    w, now = _window(history)
    assert verdict(STAGES, {"cam": "streaming"}, w, now) == (200, {"status": "ok", "failing": {}})
    down = {**STAGES, "detect": _stage(up=False)}
    assert verdict(down, {"cam": "streaming"}, w, now)[1]["failing"] == {"detect": "down"}


def test_before_any_source_streams_it_is_starting_and_503():
    w, now = _window([{}])
    stages = {k: _stage(up=False, state="starting", frames_out=0) for k in STAGES}
    assert verdict(stages, {"cam": "connecting"}, w, now) == (503, {"status": "starting", "failing": {}})


def test_the_window_keeps_a_bounded_number_of_samples():
    w = HealthWindow(5.0)
    for i in range(100_000):
        w.observe(i * 0.1, {"output": (i, i, 0)})
    assert len(w._samples) <= 5.0 / 0.5 + 2
    assert w.deltas()["output"][1] >= 49  # about 5 s of frames at 10 per second
