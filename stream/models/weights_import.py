"""``stream weights import FILE``: a checkpoint obtained elsewhere, checked and put into the cache.

Accepted: super-gradients ``.pth`` (EMA or not, read with weights_only), safetensors
(the mirror's, or any with super-gradients' keys under ``net.``/``module.``/``ema_model.``),
fine-tuned YOLO-NAS with any class count, and SAM checkpoints. The file is checked
against its architecture (every key and shape) before anything is written.

Where it goes:
- an official checkpoint (its architecture, 80 classes for YOLO-NAS) imported under
  its registry name lands where ``stream weights pull`` would put it, with its sha256
  in the trust-on-first-use sidecar ``<file>.sha256``;
- anything else is stored as ``<cache>/weights/imported/<name><suffix>`` with a record
  ``<name>.json`` (family, arch, class count, class names read from the file, sha256,
  where it came from); ``detect.weights: <name>`` then finds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stream.errors import WeightsError
from stream.models.checkpoint import sha256_file
from stream.models.weights import OFFICIAL, WeightSpec, sidecar_path

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ImportedWeights:
    """The record of an imported checkpoint. file: its name inside ``<cache>/weights/imported/``
    (inside ``<cache>/weights/`` for an official name, which has no record: its sidecar holds
    the sha256). num_classes: None for SAM."""

    name: str
    family: str
    arch: str
    num_classes: int | None
    class_names: list[str] | None
    sha256: str
    format: str
    file: str
    imported_from: str


def imported_dir(cache: Path) -> Path:
    return cache / "weights" / "imported"


def _record_path(name: str, cache: Path) -> Path:
    return imported_dir(cache) / f"{name}.json"


def read_record(name: str, cache: Path) -> ImportedWeights | None:
    """The record of imported weights called ``name``, or None when there is none (or it is unreadable)."""
    if not _NAME.match(name):
        return None
    path = _record_path(name, cache)
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return ImportedWeights(**data)
    except (ValueError, TypeError) as exc:
        log.warning("ignoring the unreadable import record %s (%s)", path, exc)
        return None


def imported_path(name: str, cache: Path) -> Path | None:
    """The file of imported weights ``name`` (whether or not it is still there), or None if never imported."""
    record = read_record(name, cache)
    return None if record is None else imported_dir(cache) / record.file


def list_imported(cache: Path) -> list[ImportedWeights]:
    root = imported_dir(cache)
    names = sorted(p.stem for p in root.glob("*.json")) if root.is_dir() else []
    return [r for r in (read_record(n, cache) for n in names) if r is not None]


def _official_for(family: str, arch: str, num_classes: int | None) -> WeightSpec | None:
    if family == "yolo_nas" and num_classes != 80:
        return None
    return next((s for s in OFFICIAL.values() if s.family == family and s.arch == arch), None)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def import_checkpoint(
    src: Path, cache: Path, *, name: str | None = None, force: bool = False
) -> tuple[ImportedWeights, Path]:
    """Check ``src`` against its architecture and copy it into the cache (see module docstring).

    Returns the record and the path the file now has in the cache.

    ``name``: what the config calls it (``detect.weights``); default the registry name for
    an official checkpoint, else the file's stem. Raises WeightsError for a bad name or an
    existing entry (unless ``force``), ModelError for a file that does not load as a
    YOLO-NAS or SAM architecture.
    """
    from stream.models.weights_check import check_architecture

    src = Path(src).expanduser()
    if not src.is_file():
        raise WeightsError(f"cannot import {src}: no such file")
    info = check_architecture(src)
    official = _official_for(info.family, info.arch, info.num_classes)
    if name is None:
        name = official.name if official is not None else re.sub(r"[^A-Za-z0-9_.-]", "_", src.stem)
    if not _NAME.match(name):
        raise WeightsError(
            f"--name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    digest = sha256_file(src)
    suffix = ".safetensors" if info.format == "safetensors" else ".pth"
    spec = OFFICIAL.get(name)
    if spec is not None:
        if official is None or official.name != name:
            what = f"{info.arch} with {info.num_classes} classes" if info.num_classes else info.arch
            raise WeightsError(
                f"--name {name}: that is the official {spec.arch} checkpoint's name, but {src} holds {what}; "
                "choose another --name"
            )
        filename = spec.mirror_file if info.format == "safetensors" and spec.mirror_file else spec.filename
        dest = cache / "weights" / filename
        if dest.suffix != suffix:  # the official file name says .pth: keep the format the file really has
            raise WeightsError(
                f"{src} is a {info.format} file but {name}'s cache file is {dest.name}; convert it or choose "
                "another --name"
            )
        if dest.exists() and not force:
            raise WeightsError(f"{name} is already cached at {dest}; pass --force to replace it")
        _copy(src, dest)
        sidecar_path(dest).write_text(f"{digest}  {dest.name}\n", encoding="ascii")
        file = dest.name
    else:
        record_path = _record_path(name, cache)
        if record_path.exists() and not force:
            raise WeightsError(
                f"weights {name!r} were already imported ({record_path}); pass --force to replace"
            )
        file = f"{name}{suffix}"
        dest = imported_dir(cache) / file
        _copy(src, dest)
    record = ImportedWeights(
        name=name,
        family=info.family,
        arch=info.arch,
        num_classes=info.num_classes,
        class_names=list(info.class_names) if info.class_names else None,
        sha256=digest,
        format=info.format,
        file=file,
        imported_from=str(src.resolve()),
    )
    if spec is None:
        _record_path(name, cache).write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    return record, dest


def verify_imported(record: ImportedWeights, cache: Path) -> tuple[str, str]:
    """(status, message) for imported weights: missing, mismatch (sha256), invalid (does not load), ok."""
    from stream.errors import ModelError
    from stream.models.weights_check import check_architecture

    path = imported_dir(cache) / record.file
    if not path.is_file():
        return "missing", f"{path} is gone; import the file again with `stream weights import`"
    actual = sha256_file(path)
    if actual != record.sha256:
        return "mismatch", f"{path}: sha256 {actual} does not match {record.sha256} recorded at import"
    try:
        info = check_architecture(path, family=record.family, arch=record.arch)  # type: ignore[arg-type]
    except ModelError as exc:
        return "invalid", f"{path} does not load as {record.arch}: {exc}"
    return "ok", f"{path} (sha256 matches the import record; loads as {info.arch}, {info.tensors} tensors)"
