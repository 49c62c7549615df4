"""Every shell command in README.md and docs/*.md runs as written (pasted into a shell with the
project environment active, from the repository root).

Which lines are run:

* Fenced blocks marked ``sh``, ``bash``, ``shell`` or ``console`` hold commands; output and
  file examples go in ``text`` (or ``yaml``, ``json`` …) blocks. A fence with no language is
  refused (the test cannot tell commands from output).
* Each line is one command (a line ending in ``\\`` continues on the next). Blank lines and
  comment lines are skipped.
* **Marker**: a line whose trailing comment contains ``needs: WHAT`` (e.g.
  ``make test  # needs: minutes``, ``stream run x.yaml  # needs: weights``) is not run, nor is
  a whole block whose first line is such a comment (``# needs: network``). WHAT names what is
  missing here: ``camera``, ``network``, ``gpu``, ``weights``, ``your data``, ``docker``,
  ``minutes`` (longer than this test allows), ``a broker`` …

Each command runs with ``bash -c`` in the repository root, ``.venv/bin`` first on PATH (what
``source .venv/bin/activate`` does), an empty weights cache, and a short timeout. It fails on
``command not found``, a usage error, or any other non-zero exit before the timeout; a
command still running at its timeout (a server, a live pipeline, a long benchmark) passes:
it started without complaint. The whole test stays within about two minutes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)

COMMAND_LANGS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
NEEDS = re.compile(r"#.*\bneeds:\s*(.+)$")
TIMEOUT_S = 8.0


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def extract(path: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """(line number, command) for every command line to run, and the problems found
    (fences without a language)."""
    commands: list[tuple[int, str]] = []
    problems: list[str] = []
    fence: str | None = None
    lang = ""
    first = False
    skip_block = False
    pending: tuple[int, str] | None = None
    for no, raw in enumerate(path.read_text().splitlines(), start=1):
        m = FENCE.match(raw)
        if fence is None:
            if m:
                fence, lang, first, skip_block = m.group(2), m.group(3).lower(), True, False
                if not lang:
                    problems.append(f"{path.name}:{no}: fenced block without a language (sh for commands, text for output)")
            continue
        if m and m.group(2).startswith(fence[:3]) and not m.group(3):
            fence = None
            continue
        if lang not in COMMAND_LANGS:
            continue
        line = raw.strip()
        if first:
            first = False
            if line.startswith("#") and NEEDS.search(line):
                skip_block = True
        if skip_block:
            continue
        if pending is not None:
            pending = (pending[0], pending[1][:-1] + " " + line)
        elif line and not line.startswith("#"):
            pending = (no, line)
        if pending is not None and not pending[1].endswith("\\"):
            if line.startswith("$ "):
                pending = (pending[0], pending[1][2:])
            if not NEEDS.search(pending[1]):
                commands.append(pending)
            pending = None
    return commands, problems


def _run(doc: str, no: int, cmd: str, *, env: dict[str, str]) -> str | None:
    """Run one command as a user would paste it; None when it passed, else why it failed."""
    proc = subprocess.Popen(
        ["bash", "-c", cmd], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the pipeline stops in order
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        return None  # still running at its timeout: it started without complaint
    if proc.returncode == 0:
        return None
    tail = (err.strip() or out.strip()).splitlines()[-3:]
    return f"{doc}:{no}: `{cmd}` exited {proc.returncode}: " + " | ".join(tail)


def _all() -> list[tuple[str, int, str]]:
    return [(p.name, no, cmd) for p in documents() for no, cmd in extract(p)[0]]


def test_the_marker_convention_is_what_the_extractor_does(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "```sh\nstream check a.yaml   # validate\nmake test  # needs: minutes\nstream run b.yaml \\\n"
        "    --set x=1\n```\n\n```text\nnot a command\n```\n\n```sh\n# needs: network\ncurl -LO x\n```\n"
        "```\nbare\n```\n"
    )
    commands, problems = extract(doc)
    assert commands == [(2, "stream check a.yaml   # validate"), (4, "stream run b.yaml  --set x=1")]
    assert len(problems) == 1 and "x.md:16" in problems[0]


def test_every_fenced_block_says_what_it_holds() -> None:
    problems = [p for doc in documents() for p in extract(doc)[1]]
    assert not problems, "\n".join(problems)


def test_every_readme_and_docs_command_runs_as_written(tmp_path: Path) -> None:
    commands = _all()
    assert len(commands) >= 10, commands
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "STREAM_CACHE": str(tmp_path / "cache"),  # no weights: what a fresh clone has
    }
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:  # most of the time is spent importing: overlap it
        results = list(pool.map(lambda c: _run(*c, env=env), commands))
    failures = [r for r in results if r]
    assert not failures, f"{len(failures)} of {len(commands)} commands failed:\n" + "\n".join(failures)
    assert time.monotonic() - started < 200, "the README commands took too long: mark slow ones"
