"""The typed models of every stage, sink and render section of the config.

A leaf package: it imports pydantic and stream.errors only (no stage, sink,
model, torch or av), so ``stream.config`` validates every section once, at
load, and ``stream check`` rejects what ``stream run`` would. The stage and
sink modules import their model from here.

- ``base``: ``StrictModel`` (unknown keys refused, frozen).
- ``stages``: detect, track, segment, passthrough.
- ``preprocess``: one source's preprocessing (the ``preprocess`` section maps
  source id or ``"*"`` to one of these).
- ``render``: the annotated picture.
- ``sinks``: jsonl, publish, record, live, restream (and their encoder).
"""
