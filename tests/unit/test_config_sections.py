"""Every stage, sink and render section is validated at load: ``stream check`` refuses
what ``stream run`` would, with one line naming the dotted key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream.cli import main
from stream.config import load_config

BASE = {"sources": [{"id": "cam", "type": "synthetic", "max_frames": 2}], "metrics": {"enabled": False}}


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], **sections: object) -> tuple[int, str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections}))
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"pipeline": ["detect"], "detect": {"confidence": 0.5}}, "detect.confidence: unknown key (allowed: "),
        ({"segment": {"model": "vit_bb"}}, "segment.model: 'vit_bb' is not allowed (allowed: 'vit_b'"),
        ({"sinks": {"record": {"segment_secs": 5}}}, "sinks.record.segment_secs: unknown key (allowed: "),
        ({"sinks": {"record": {"segment_s": -1}}}, "sinks.record.segment_s: Input should be greater than 0 (got -1)"),
        ({"sinks": {"record": {"encoder": {"preset": "warp"}}}}, "sinks.record.encoder.preset: 'warp' is not allowed"),
        ({"sinks": {"publish": {"endpoint": "udp://x"}}}, "sinks.publish.endpoint: must be tcp://HOST:PORT"),
        ({"sinks": {"live": {"port": 70000}}}, "sinks.live.port: Input should be less than or equal to 65535"),
        ({"sinks": {"restream": {"urll": "rtsp://h/x"}}}, "sinks.restream.url: required key is missing"),
        ({"render": {"mask_colour": 1}}, "render.mask_colour: unknown key (allowed: boxes,"),
        ({"track": {"frame_rate": 0}}, "track.frame_rate: Input should be greater than 0"),
        ({"detect": {"device": "gpu0"}}, "detect.device: must be 'auto', 'cpu', 'cuda' or 'cuda:N' (got 'gpu0')"),
        ({"preprocess": {"cam": {"gama": 2}}}, "preprocess.cam.gama: unknown key (allowed: bilateral_diameter,"),
        ({"preprocess": {"cam9": {"gamma": 2}}}, "preprocess.cam9: no source has this id (sources: cam;"),
        ({"sinks": {"record": {"sources": ["cam7"]}}}, "sinks.record.sources: cam7 not among the configured sources"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_check_refuses_a_bad_section_with_one_line_naming_the_key(tmp_path, capsys, sections, message):
    code, out, err = check(tmp_path, capsys, **sections)
    assert code == 2, out + err
    assert "config ok" not in out
    lines = [ln for ln in err.splitlines() if ln.startswith("stream: ")]
    assert len(lines) == 1 and message in lines[0], err


def test_secrets_never_show_in_a_section_error(tmp_path, capsys):
    code, _, err = check(tmp_path, capsys, sinks={"restream": {"url": "http://u:hunter2@h/x"}})
    assert code == 2 and "sinks.restream.url: 'http://u:***@h/x' is not an RTSP url" in err
    code, _, err = check(tmp_path, capsys, sinks={"live": {"token": 98765432123}})
    assert code == 2 and "sinks.live.token: must be a string" in err
    assert "hunter2" not in err and "98765432123" not in err


def test_sections_are_typed_and_an_empty_sink_section_is_off(tmp_path, capsys):
    code, out, _ = check(tmp_path, capsys, sinks={"record": {}}, preprocess={"*": {"gamma": 1.5}})
    assert code == 0 and "config ok" in out
    c = load_config(None, ["sinks.live.port=0", "sinks.live.token=${ENV:T}", "detect.class_names=[a, b]"],
                    base=BASE, env={"T": "x" * 20})
    assert c.sinks.record is None and c.sinks.live is not None and c.sinks.live.port == 0
    assert c.detect.class_names == ["a", "b"] and c.render.mask_alpha == 0.45
    # the config reaches the workers as JSON: the token must survive it, and only it
    again = type(c).model_validate(c.model_dump(mode="json"))
    assert again.model_dump() == c.model_dump() and again.sinks.live is not None
    assert again.sinks.live.token is not None and again.sinks.live.token.get_secret_value() == "x" * 20


def test_config_and_its_sections_import_no_pipeline_code():
    code = (
        "import sys, stream.config, stream.sections.sinks, stream.sections.stages; "
        "heavy = [m for m in ('torch', 'av', 'cv2', 'zmq', 'numpy') if m in sys.modules]; "
        "ours = [m for m in sys.modules if m.startswith(('stream.stages', 'stream.sinks', 'stream.models'))]; "
        "print(heavy, ours)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


def test_check_refuses_a_sink_folder_that_run_could_not_make(tmp_path, capsys):
    # `stream run` stops at start with this error (tests/integration/test_fail_fast.py); check says it first
    (tmp_path / "disk").write_text("a file, not a folder")
    for sinks, key in (({"record": {"root": str(tmp_path / "disk" / "rec")}}, "sinks.record.root"),
                       ({"jsonl": {"path": str(tmp_path / "disk" / "logs" / "f.jsonl")}}, "sinks.jsonl.path")):
        code, out, err = check(tmp_path, capsys, sinks=sinks)
        assert code == 2 and "config ok" not in out, out + err
        lines = [ln for ln in err.splitlines() if ln.startswith("stream: ")]
        assert len(lines) == 1 and f"{key}: cannot create " in lines[0], err
        assert f"{tmp_path / 'disk'} is not a folder" in lines[0], err
    code, out, _ = check(tmp_path, capsys, sinks={"record": {"root": str(tmp_path / "new" / "rec")}})
    assert code == 0 and "config ok" in out
    assert not (tmp_path / "new").exists()  # check creates nothing
