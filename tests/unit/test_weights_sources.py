"""The weights mirror, import and verify against super-gradients' real YOLO-NAS architecture.

A local HTTP server stands in for the Hugging Face mirror (``<repo>/resolve/main/<file>``)
and serves safetensors files this test makes from super-gradients' own state dict, with
the prefixes the mirror's files carry. The weights are seeded random ones: nothing here
is a detection. Imports super-gradients once for the module (~25 s the first time).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stream.cli import main
from stream.errors import ModelError
from stream.models.weights import DownloadError, get_spec, pull, resolve_weights, sidecar_path
from stream.models.yolo_nas import build_network, build_yolo_nas, prepare_for_inference
from stream.models.yolo_nas_export import load_yolo_nas
from stream.transport import free_port

REPO_PATH = "/CondadosAI/detectors"


@dataclass
class Hub:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    requests: list[str] = field(default_factory=list)
    base: str = ""


class _HubHandler(http.server.BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hub.requests.append(self.path)
        body = self.hub.files.get(self.path)
        if body is None:
            self.send_error(404, "Entry not found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hub() -> Iterator[Hub]:
    state = Hub()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_HubHandler,), {"hub": state}))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def sg_state() -> dict[str, torch.Tensor]:
    """super-gradients' own yolo_nas_s state dict (80 classes, seed 0)."""
    return {
        k: v.detach().clone() for k, v in build_network("yolo_nas_s", 80, random_seed=0).state_dict().items()
    }


def _safetensors(path: Path, state: dict[str, torch.Tensor], prefix: str, **metadata: str) -> bytes:
    save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata or None)
    return path.read_bytes()


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/yolo_nas_s_coco.pth"


def _outputs(module: object, x: torch.Tensor) -> torch.Tensor:
    boxes, scores = module(x)  # type: ignore[operator]
    return torch.cat([boxes, scores], dim=-1)


def test_pull_takes_the_mirror_safetensors_and_it_loads_as_the_model(
    hub: Hub,
    sg_state: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = _safetensors(tmp_path / "f.safetensors", sg_state, "net.module.")
    hub.files[f"{REPO_PATH}/resolve/main/yolo-nas-s.safetensors"] = body
    cache = tmp_path / "cache"
    monkeypatch.setenv("STREAM_CACHE", str(cache))
    monkeypatch.setenv("STREAM_WEIGHTS_MIRROR", hub.base + REPO_PATH)
    assert main(["weights", "pull", "yolo_nas_s", "--no-progress"]) == 0
    path = cache / "weights" / "yolo-nas-s.safetensors"
    assert hub.requests == [f"{REPO_PATH}/resolve/main/yolo-nas-s.safetensors"]  # mirror first, nothing else
    assert path.read_bytes() == body
    assert sidecar_path(path).read_text().split()[0] == hashlib.sha256(body).hexdigest()
    assert resolve_weights("yolo_nas_s", cache) == path

    # without names: what a config needs (here a detector only), into another cache
    config = tmp_path / "detect.yaml"
    config.write_text("sources: [{id: s, type: synthetic}]\npipeline: [detect]\n")
    other = tmp_path / "other"
    assert main(["weights", "--cache-dir", str(other), "pull", "--config", str(config), "--no-progress"]) == 0
    assert (other / "weights" / "yolo-nas-s.safetensors").read_bytes() == body

    capsys.readouterr()
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok        yolo_nas_s: {path}" in out and "loads as yolo_nas_s (921 tensors)" in out

    # The pulled file gives the same network as super-gradients' own weights.
    model = build_yolo_nas("yolo_nas_s", checkpoint=path, device="cpu", input_size=320)
    reference = build_network("yolo_nas_s", 80, random_seed=0)
    ref_module, _ = prepare_for_inference(reference, input_size=320, device=torch.device("cpu"))
    x = torch.rand(1, 3, 320, 320).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(_outputs(model.module, x), _outputs(ref_module, x))
    assert model.num_classes == 80 and model.class_names[0] == "person"


def test_every_source_is_tried_in_order_and_each_failure_is_reported(hub: Hub, tmp_path: Path) -> None:
    html = b"<html><body>403 Forbidden!</body></html>\n"
    hub.files["/bucket/yolo_nas_s_coco.pth"] = html  # answers 200 with a page, as a proxy might
    dead = _closed_url()
    spec = replace(get_spec("yolo_nas_s"), url=dead, mirrors=(f"{hub.base}/bucket/yolo_nas_s_coco.pth",))
    with pytest.raises(DownloadError) as info:
        pull(spec, tmp_path, progress=False, timeout_s=5, mirror=hub.base + REPO_PATH)
    message = str(info.value)
    assert "\n" not in message
    assert "any of its 3 sources" in message
    assert "(1) could not download" in message and "404" in message  # the mirror lacks the file
    assert f"(2) could not download {dead}" in message and "refused" in message
    assert "(3)" in message and "not the yolo_nas_s checkpoint" in message
    assert hub.requests == [f"{REPO_PATH}/resolve/main/yolo-nas-s.safetensors", "/bucket/yolo_nas_s_coco.pth"]
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # the page was not kept


@pytest.mark.parametrize("damage", ["shape", "missing", "unexpected"])
def test_a_file_that_does_not_fit_the_architecture_is_refused(
    damage: str,
    sg_state: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = dict(sg_state)
    key = next(k for k, v in state.items() if k.startswith("backbone.stage1") and v.ndim == 4)
    want = tuple(state[key].shape)
    if damage == "shape":
        state[key] = torch.zeros(want[0], want[1] + 1, *want[2:])
        expected = f"{key} expected {want}, got {(want[0], want[1] + 1, *want[2:])}"
    elif damage == "missing":
        del state[key]
        expected = f"1 missing keys (e.g. {key})"
    else:
        state["backbone.extra.weight"] = torch.zeros(3)
        expected = "1 unexpected keys (e.g. backbone.extra.weight)"
    path = tmp_path / "weights" / "yolo-nas-s.safetensors"
    path.parent.mkdir(parents=True)
    _safetensors(path, state, "ema_model.")
    with pytest.raises(ModelError) as info:
        build_yolo_nas("yolo_nas_s", checkpoint=path, device="cpu", input_size=320)
    assert expected in str(info.value) and "\n" not in str(info.value)

    monkeypatch.setenv("STREAM_CACHE", str(tmp_path))
    capsys.readouterr()
    assert main(["weights", "verify", "yolo_nas_s"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID   yolo_nas_s") and expected in out


def test_import_super_gradients_pth_with_ema(
    sg_state: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "ckpt_best.pth"
    stale = {k: torch.zeros_like(v) for k, v in sg_state.items()}
    torch.save({"net": stale, "ema_net": sg_state, "epoch": 99, "processing_params": {"iou": 0.7}}, src)
    cache = tmp_path / "cache"
    monkeypatch.setenv("STREAM_CACHE", str(cache))
    assert main(["weights", "import", str(src)]) == 0
    out = capsys.readouterr().out
    dest = cache / "weights" / "yolo_nas_s_coco.pth"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert f"as yolo_nas_s (yolo_nas_s, 80 classes, pth): {dest}" in out
    assert f"sha256 {digest}" in out and "NON-COMMERCIAL" in out
    assert sidecar_path(dest).read_text().split()[0] == digest
    assert main(["weights", "verify", "yolo_nas_s"]) == 0
    assert "sha256 matches the trust-on-first-use record" in capsys.readouterr().out
    # importing again is refused without --force
    assert main(["weights", "import", str(src)]) != 0
    assert "--force" in capsys.readouterr().err


def test_import_fine_tuned_safetensors_reads_its_class_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = build_network("yolo_nas_s", 3, random_seed=1).state_dict()
    src = tmp_path / "pets.safetensors"
    _safetensors(src, state, "ema_model.module.", class_names=json.dumps(["cat", "dog", "bird"]))
    cache = tmp_path / "cache"
    monkeypatch.setenv("STREAM_CACHE", str(cache))
    # the official name is refused for a 3-class model
    assert main(["weights", "import", str(src), "--name", "yolo_nas_s"]) != 0
    assert "3 classes" in capsys.readouterr().err
    assert main(["weights", "import", str(src)]) == 0
    out = capsys.readouterr().out
    assert "as pets (yolo_nas_s, 3 classes, safetensors)" in out and "cat, dog, bird" in out
    assert f"sha256 {hashlib.sha256(src.read_bytes()).hexdigest()}" in out
    assert main(["weights", "verify", "pets"]) == 0
    assert "loads as yolo_nas_s" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    assert "yolo_nas_s, 3 classes" in capsys.readouterr().out

    path = resolve_weights("pets", cache)
    # what the detect stage does: build and export (miss), then load the artifact (hit)
    for _ in range(2):
        model = load_yolo_nas("yolo_nas_s", cache_dir=cache, checkpoint=path, device="cpu", input_size=320)
        assert model.class_names == ("cat", "dog", "bird")
    assert isinstance(model.module, torch.jit.ScriptModule)
    # a damaged copy in the cache is caught by verify
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    assert main(["weights", "verify", "pets"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_cli_pull_reports_every_failure_and_fetches_the_rest(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.models.yolo_nas import HEAD_CLS_KEY

    # yolo_nas_m is cached but damaged (its trust-on-first-use record disagrees): pull refuses it;
    # yolo_nas_s is still fetched from the mirror (a head-only file: pull checks what arrived by its head).
    bad = tmp_path / "weights" / "yolo_nas_m_coco.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"damaged")
    sidecar_path(bad).write_text(f"{'0' * 64}  {bad.name}\n")
    head = {HEAD_CLS_KEY: torch.zeros(80, 64, 1, 1), "heads.head1.cls_pred.bias": torch.zeros(80)}
    hub.files[f"{REPO_PATH}/resolve/main/yolo-nas-s.safetensors"] = _safetensors(
        tmp_path / "h.st", head, "net."
    )
    monkeypatch.setenv("STREAM_CACHE", str(tmp_path))
    monkeypatch.setenv("STREAM_WEIGHTS_MIRROR", hub.base + REPO_PATH)
    assert main(["weights", "pull", "yolo_nas_m", "yolo_nas_s", "--no-progress"]) != 0
    out = capsys.readouterr()
    assert "FAILED yolo_nas_m" in out.err and "--force" in out.err
    assert "could not fetch 1 of 2: yolo_nas_m" in out.err
    assert f"yolo_nas_s: {tmp_path / 'weights' / 'yolo-nas-s.safetensors'}" in out.out
    assert main(["weights", "pull", "nope"]) != 0  # unknown names are refused before anything is fetched
    assert "unknown weights 'nope'" in capsys.readouterr().err
