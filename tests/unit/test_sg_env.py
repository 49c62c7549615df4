"""super-gradients imported through ``stream.models.sg_env``: nothing on stdout, no red environment
check, no update nag, no ``~/sg_logs``, and the caller's logging and streams untouched.

A fresh interpreter, because the side effects happen on the first import only (~25 s here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
before = list(logging.getLogger().handlers)
from stream.models.sg_env import import_super_gradients
models = import_super_gradients()
assert callable(models.get)
root = logging.getLogger()
print("kept", root.handlers == before, root.level, sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__,
      file=sys.stderr)
logging.getLogger("stream.check").info("after the import")
"""


@pytest.mark.slow
def test_super_gradients_import_is_quiet_and_leaves_no_files(tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SUPER_GRADIENTS_LOG_DIR"}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""  # super-gradients prints "The console stream is logged into …/sg_logs/…" here
    for noise in (
        "Failed to verify",
        "Albumentations",
        "pkg_resources",
        "Crash tips",
        "sg_logs",
        "console stream",
    ):
        assert noise not in proc.stderr, noise
    assert f"kept True {20} True True" in proc.stderr  # root handlers, level INFO, stdout, stderr
    assert "stream.check: after the import" in proc.stderr
    assert not (home / "sg_logs").exists()
    assert not list(tmp.glob("stream-sg-logs-*"))  # removed, and not recreated at exit
