"""``stream demo``'s choice of weights and of random-weight settings (stream.commands.demo,
stream.random_weights). The network is the one stand-in: ``pull`` raises as it does offline
(a real attempt would download 375 MB where a network exists)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import stream.models.weights as weights
from stream import random_weights
from stream.commands import demo
from stream.errors import WeightsError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_CACHE", str(tmp_path))  # where the CLI looks for weights


def _config(tmp_path: Path, *overrides: str):
    config = demo._load(argparse.Namespace(overrides=list(overrides), random_weights=False), [])
    assert config.cache_dir == str(tmp_path)
    return config


def test_missing_weights_are_fetched_once_and_an_offline_machine_falls_back_with_the_reason(tmp_path, monkeypatch):
    tried: list[str] = []

    def offline(spec, cache, **_kw):
        tried.append(spec.name)
        raise weights.DownloadError(f"could not download {spec.name}: Name or service not known")

    monkeypatch.setattr(weights, "pull", offline)
    why = demo._missing_weights(_config(tmp_path))
    assert tried == ["yolo_nas_s", "sam_vit_b"]
    assert why is not None and "yolo_nas_s and sam_vit_b" in why and "could not be fetched" in why


def test_cached_weights_are_used_without_fetching(tmp_path, monkeypatch):
    for name in ("yolo_nas_s", "sam_vit_b"):
        path = weights.weights_path(weights.get_spec(name), tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    monkeypatch.setattr(weights, "pull", lambda *a, **k: pytest.fail("fetched weights that are cached"))
    assert demo._missing_weights(_config(tmp_path)) is None


def test_a_missing_checkpoint_path_the_user_gave_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        demo._missing_weights(_config(tmp_path, f"detect.weights={tmp_path / 'mine.pth'}"))


def test_on_a_cpu_the_demo_takes_the_shared_random_weight_settings_and_the_users_set_wins(tmp_path):
    chosen = {c.key: c.value for c in demo._random_choices(_config(tmp_path), ["detect.conf=0.2"])}
    assert "detect.conf" not in chosen  # the user's --set
    assert chosen["detect.input_size"] == 320 and chosen["segment.model"] == "tiny"
    assert chosen["track.track_activation_threshold"] == 0.0 and chosen["track.frame_rate"] == 10.0
    assert chosen["segment.async_keyframes"] == "always" and chosen["segment.max_lag_frames"] == 30
    config = demo._load(argparse.Namespace(overrides=["detect.conf=0.2"], random_weights=False),
                        [c.override() for c in demo._random_choices(_config(tmp_path), ["detect.conf=0.2"])])
    assert config.detect.conf == 0.2 and config.detect.input_size == 320 and config.segment.model == "tiny"


def test_bench_pipeline_builds_its_settings_from_the_same_choices():
    from stream.bench import pipeline

    p = argparse.ArgumentParser()
    pipeline.add_arguments(p)
    args = p.parse_args(["--device", "cpu"])
    plan = {"cuda_index": None, "fps": 30.0, "input_size": 320, "sam": "tiny"}
    expected = random_weights.sections(random_weights.choices("cpu", fps=30.0))
    assert pipeline._sections(args, plan) == expected
    assert expected["detect"]["conf"] == 0.01 and expected["detect"]["random_seed"] == 2
    on_cuda = random_weights.sections(random_weights.choices("cuda", fps=30.0))
    assert on_cuda["detect"]["input_size"] == 640 and on_cuda["segment"]["model"] == "vit_b"
