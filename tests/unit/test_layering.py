"""The code's map holds: forbidden ties between modules fail here (imports at any depth of a
module, lazy ones inside functions included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PKG = REPO / "stream"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside functions (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    mod = ".".join(path.relative_to(REPO).with_suffix("").parts)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = mod.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def _modules(*parts: str) -> list[Path]:
    paths: list[Path] = []
    for part in parts:
        p = PKG / part
        paths.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")])
    return paths


def _hits(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


PIPELINE = ("stream.stages", "stream.sinks", "stream.sources", "stream.models", "stream.masks", "stream.supervisor",
            "stream.worker", "stream.capture", "stream.stage", "stream.runner", "stream.runtime", "stream.transport",
            "stream.cli", "stream.commands", "stream.bench", "stream.eval", "stream.render", "stream.live")  # fmt: skip


def test_config_is_a_leaf() -> None:
    assert _hits(_modules("config"), PIPELINE) == []


def test_stages_sources_and_sinks_never_reach_up_to_the_supervisor_or_the_cli() -> None:
    paths = _modules("stages", "sources", "sinks")
    assert _hits(paths, ("stream.supervisor", "stream.cli", "stream.commands", "stream.bench")) == []


def test_a_stage_knows_the_protocol_not_the_loop_that_runs_it() -> None:
    """Stages, sources and sinks see ``stream.stage`` (the protocol); only the worker builds the
    runner, and the protocol module itself opens no socket."""
    assert _hits(_modules("stages", "sources", "sinks"), ("stream.runner", "stream.worker")) == []
    assert _hits(_modules("stage"), ("zmq", "socket", "stream.transport", "stream.runtime", "stream.runner")) == []


def test_models_and_masks_open_no_sockets_and_know_no_stages() -> None:
    forbidden = ("zmq", "socket", "stream.transport", "stream.stages", "stream.stage", "stream.runner", "stream.runtime",
                 "stream.sinks", "stream.supervisor")  # fmt: skip
    assert _hits(_modules("models", "masks"), forbidden) == []


def test_the_client_knows_no_stages_and_pulls_in_no_torch() -> None:
    assert _hits(_modules("client"), ("stream.stages", "stream.sinks", "stream.models", "torch")) == []
    code = "import sys, stream.client; bad = [m for m in ('torch', 'cv2', 'av') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing stream.client loads {out.stdout.strip()}"


def test_the_scanner_sees_imports_inside_functions() -> None:
    """An empty ``_hits`` means something only if the scan sees lazy imports too: the output
    stage imports the annotator and the jsonl sink inside ``build``."""
    seen = _imports(PKG / "stages" / "output.py")
    assert {"stream.render.build_annotator", "stream.sinks.jsonl.JsonlSink", "stream.config"} <= seen


def test_the_publish_sink_and_the_client_share_the_record_schema_not_each_other() -> None:
    """The schema lives in stream.published; the sinks never import the consumers' client."""
    assert _hits(_modules("sinks"), ("stream.client",)) == []
    forbidden = ("stream.client", "stream.sinks", "stream.stages", "stream.models", "stream.transport", "torch", "cv2")
    assert _hits(_modules("published"), forbidden) == []
    assert "stream.published" in _imports(PKG / "sinks" / "publish.py")


def test_one_definition_each() -> None:
    """Each of these is defined in one module of the package and imported everywhere else."""
    homes: dict[str, list[str]] = {}
    names = {"COCO_CLASSES", "free_port", "is_loopback", "LOOPBACK_NAMES", "Backoff", "doubling", "FrameRecord"}
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            targets = [node.name] if isinstance(node, ast.FunctionDef | ast.ClassDef) else [
                t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
            for name in set(targets) & names:
                homes.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert {n: h for n, h in homes.items() if len(h) > 1} == {}
    assert set(homes) == names


ENV_ALLOWED = {
    "stream/supervisor.py": "hands its environment to its workers, minus the names that hold secrets",
    "stream/models/sg_env.py": "super-gradients' only switches are variables it reads at import",
    "stream/bench/probes.py": "OMP_NUM_THREADS for the worker processes a benchmark starts",
    "stream/testing/rtsp_server.py": "the test server's own Python (STREAM_TEST_GI_PYTHON)",
}


def test_the_environment_is_read_and_written_only_at_entry_points() -> None:
    """``os.environ`` / ``os.getenv`` only in the CLI, its commands and the worker's main (they
    pass the values in), and where a named reason keeps it (``ENV_ALLOWED``)."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in ENV_ALLOWED or rel in ("stream/cli.py", "stream/worker.py") or rel.startswith("stream/commands/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                bad.append(f"{rel}:{node.lineno}")
    assert bad == []
