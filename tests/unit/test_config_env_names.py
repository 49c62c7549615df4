"""The config loader says which environment variables it resolved (the supervisor keeps
them out of its workers' environment)."""

from __future__ import annotations

from stream.config import load_config


def test_env_names_are_the_resolved_references_and_only_those():
    base = {"sources": [{"id": "cam", "type": "rtsp", "url": "rtsp://u:${ENV:CAM_PASSWORD}@h/x"}],
            "name": "${ENV:SITE}-${ENV:SITE}"}
    cfg = load_config(None, env={"CAM_PASSWORD": "pw", "SITE": "north", "OTHER": "x"}, base=base)
    assert cfg.env_names == frozenset({"CAM_PASSWORD", "SITE"})
    assert cfg.name == "north-north"
    assert cfg.model_copy().env_names == cfg.env_names
    assert load_config(None, env={"CAM_PASSWORD": "pw"}, base={"sources": [{"id": "a", "type": "pattern"}]}) \
        .env_names == frozenset()
