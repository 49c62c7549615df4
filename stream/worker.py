"""Entry point of every stage and capture process: ``python -m stream.worker``.

The supervisor writes one JSON object to our stdin: {"role": "capture"|"stage",
"config": {...}, "spec": {...}, "log_level": "info"}. Config travels on stdin,
never on the command line, so secrets in it (RTSP passwords) never show in
/proc/*/cmdline.

A stage that fails with a StreamError before it is ready (building it or its
``start()``: a config, device, port or weights error) cannot fix itself by
restarting: it reports the one-line error on the heartbeat channel and exits
with ``STARTUP_EXIT_BASE + exit_code``; the supervisor then stops the run.
Until ready, SIGTERM ends the process at once (see ``StopFlag``). While the stage is
built (models loaded) the process heartbeats ``loading`` (``stream.loading``).

``--spare``: import what a capture needs first, then wait for the request. The
supervisor keeps one such process ready so that a camera added at runtime (the
control API) starts capturing without paying for the imports (seconds on a busy host).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from stream.errors import STARTUP_EXIT_BASE, StreamError


def _die_with_parent() -> None:
    """Linux: if the supervisor is killed (SIGKILL leaves it no chance to clean up),
    its workers go too instead of running on as orphans."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _mmap_large_buffers(threshold: int = 128 * 1024) -> None:
    """glibc: serve every allocation of ``threshold`` bytes or more by its own mmap, so that
    freeing it gives its pages back to the system.

    By default glibc raises that threshold each time such a buffer is freed (up to 32 MiB);
    from then on large buffers come from the threads' malloc arenas, where short-lived big
    ones between long-lived small ones fragment the arenas and RSS only grows. The output
    process does exactly that: each record segment opens a new H.264 encoder (~7 MB of
    buffers at 320×240) and closes it at the rotation; ``stream bench soak`` measured its
    RSS growing 338–423 MB/h with 5 s segments, 48 MB/h with the threshold fixed. Setting
    the threshold turns the dynamic adjustment off. Not glibc (musl, macOS), or glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` set in the environment (it wins): nothing to do."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, threshold)


def main() -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor orchestrates Ctrl-C
    if "--spare" in sys.argv[1:]:
        import stream.capture
        import stream.config
        import stream.sources.rtsp  # noqa: F401 — PyAV: what a camera's capture spends its start on
    raw = sys.stdin.read()
    if not raw:  # a spare the supervisor did not need
        return 0
    request = json.loads(raw)
    logging.basicConfig(
        level=getattr(logging, request.get("log_level", "info").upper()),
        format="%(asctime)s %(levelname)s [%(worker)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("super_gradients", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    role = request["role"]
    if role == "stage" and request["spec"].get("output") is None:
        _mmap_large_buffers()  # the last stage: its sinks open and close encoders for weeks
    worker_name = request["spec"].get("name") or f"capture:{request['spec'].get('source_id')}"
    old_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = old_factory(*args, **kwargs)
        record.worker = worker_name
        return record

    logging.setLogRecordFactory(factory)
    from stream.config import Config

    config = Config.model_validate(request["config"])
    try:
        if role == "capture":
            from stream.capture import CaptureRunner, CaptureSpec
            from stream.sources import open_source

            cspec = CaptureSpec(**request["spec"])
            source_cfg = next(s for s in config.sources if s.id == cspec.source_id)
            return CaptureRunner(open_source(source_cfg), cspec).run()
        from stream.loading import loading_heartbeat
        from stream.runner import StageRunner, WorkerSpec
        from stream.runtime import one_line, report_failed_start
        from stream.stages import build_stage

        spec = WorkerSpec(**{**request["spec"], "sources": tuple(request["spec"]["sources"])})
        runner: StageRunner | None = None
        try:
            sent = None
            if spec.report and spec.output is not None:  # upstream of a split: what crossed the hop
                from stream.stages.output import OutputStage

                sent = OutputStage([])
            with loading_heartbeat(request["spec"]):  # building loads models: minutes, under load
                runner = StageRunner(build_stage(spec.name.split("#")[0], config), spec, sent=sent)
            rc = runner.run()
            # Done, sockets closed, last heartbeat sent: leave now. Interpreter shutdown after a model
            # ran can take seconds (native threads), and a stage that ends by itself (upstream of a
            # split) is still watched: silent that long, it was taken for frozen and killed.
            logging.shutdown()
            sys.stderr.flush()
            os._exit(rc)
        except StreamError as exc:
            if runner is not None and runner.ready:
                raise
            logging.getLogger("stream.worker").error("cannot start: %s", exc)
            hb = getattr(runner, "hb", None)
            if hb is None or hb.state != "failed":  # else the runner's last heartbeat carried it
                report_failed_start(spec.heartbeat, spec.name, one_line(exc))
            # Nothing to finalize before ready, and interpreter shutdown after a failed model
            # load was seen to hang for seconds (native threads): leave now.
            logging.shutdown()
            sys.stderr.flush()
            os._exit(STARTUP_EXIT_BASE + exc.exit_code)
    except StreamError as exc:
        logging.getLogger("stream.worker").error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
