"""The stage registry: which stages exist, what each needs and provides.

``check_pipeline`` refuses a config whose stages don't connect (a tracker with
no boxes before it, masks with no tracks) with a message naming the fix.
``build_stage`` imports a stage's module only in the process that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from stream.errors import ConfigError

if TYPE_CHECKING:
    from stream.config import Config
    from stream.stage import Stage


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str  # defines build(config: Config) -> Stage
    needs: frozenset[str]
    provides: frozenset[str]
    hint: str = ""


STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec("passthrough", "stream.stages.passthrough", frozenset({"pixels"}), frozenset()),
        StageSpec("preprocess", "stream.stages.preprocess", frozenset({"pixels"}), frozenset()),
        StageSpec("detect", "stream.stages.detect", frozenset({"pixels"}), frozenset({"boxes"})),
        StageSpec("track", "stream.stages.track", frozenset({"boxes"}), frozenset({"tracks"}),
                  "add 'detect' before it, or use a source of type 'mot' (public detections)"),
        StageSpec("segment", "stream.stages.segment", frozenset({"pixels", "tracks"}), frozenset({"masks"}),
                  "add 'track' before it"),
    )
}

SOURCE_PROVIDES = {"mot": frozenset({"pixels", "boxes"})}

# the last stage of every pipeline: built like the others, never named in ``pipeline``
OUTPUT = StageSpec("output", "stream.stages.output", frozenset(), frozenset())


def check_pipeline(config: Config) -> None:
    for i, name in enumerate(config.pipeline):
        if name not in STAGES:
            raise ConfigError(f"config error: pipeline.{i}: unknown stage {name!r} (allowed: {', '.join(STAGES)})")
        if config.pipeline.count(name) > 1 and name != "passthrough":
            raise ConfigError(f"config error: pipeline.{i}: stage {name!r} appears twice")
    for source in config.sources:
        have = set(SOURCE_PROVIDES.get(source.type, frozenset({"pixels"})))
        for i, name in enumerate(config.pipeline):
            spec = STAGES[name]
            missing = spec.needs - have
            if missing:
                raise ConfigError(
                    f"config error: pipeline.{i}: stage {name!r} needs {', '.join(sorted(missing))}, which "
                    f"nothing before it provides for source {source.id!r}" + (f"; {spec.hint}" if spec.hint else "")
                )
            have |= spec.provides


def build_stage(name: str, config: Config) -> Stage:
    module: Any = import_module(OUTPUT.module if name == OUTPUT.name else STAGES[name].module)
    return module.build(config)  # type: ignore[no-any-return]
