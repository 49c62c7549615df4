"""stream.jsonout: with --json, stdout holds the JSON alone, whoever else writes there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_prints_fd_writes_and_child_processes_go_to_stderr_and_nan_becomes_null():
    script = textwrap.dedent("""
        import argparse, os, subprocess, sys
        from stream.jsonout import emit_json, json_stdout
        args = argparse.Namespace(json=True)
        with json_stdout(args):
            print("The console stream is logged into console.log")   # what super-gradients does
            os.write(1, b"a C library writing to fd 1\\n")
            subprocess.run([sys.executable, "-c", "print('a worker process')"], check=True)
            emit_json(args, {"fps": float("nan"), "rows": [{"p99": float("inf")}, 1.5]})
        print("after")   # stdout is back to normal once the command is done
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, after = r.stdout.splitlines()
    assert json.loads(first) == {"fps": None, "rows": [{"p99": None}, 1.5]}
    assert after == "after"
    for line in ("console.log", "a C library", "a worker process"):
        assert line in r.stderr


def test_without_json_nothing_moves():
    script = textwrap.dedent("""
        import argparse
        from stream.jsonout import json_stdout
        with json_stdout(argparse.Namespace(json=False)):
            print("table")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.stdout == "table\n" and r.stderr == ""
