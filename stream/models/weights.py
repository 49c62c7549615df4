"""Official checkpoints: a name → file registry, the on-disk cache, and a resumable, verified download.

Nothing here runs at import: no environment reads, no network. ``cache_dir`` and
``mirror_base`` take the environment as an argument (the CLI passes ``os.environ``),
and downloads happen only when ``pull``/``download`` is called (``stream weights pull``).

Sources: a YOLO-NAS entry is fetched from the Hugging Face mirror first
(``MIRROR_BASE``/resolve/main/yolo-nas-s.safetensors: super-gradients' release
converted to safetensors, which cannot carry code), then from super-gradients'
own URLs. The mirror goes first because both official hosts are gone (sghub.deci.ai
no longer resolves; the S3 bucket answers 403 since April 2026): trying them first
would only add two failures to every fresh machine. Each source's file keeps its own
name in the cache (the .pth and the .safetensors differ byte for byte), and every
failure is reported with its reason. After a download the file must parse as a
checkpoint of the entry's family and architecture (an HTML error page saved as a
.pth is refused before it is trusted).

Integrity: an entry's ``sha256`` is checked after every download. Where no
published hash is known (``sha256=None``) the first download is trusted and its
hash is recorded next to the file in ``<file>.sha256`` (trust on first use);
``verify`` then checks against that record.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from stream.errors import ModelError, WeightsError
from stream.models.checkpoint import sha256_file
from stream.models.download import DownloadError, _download, _manual_hint, download

__all__ = ["DownloadError", "download"]  # re-exported: the transfer itself lives in stream.models.download

log = logging.getLogger(__name__)

YOLO_NAS_LICENSE = (
    "NON-COMMERCIAL use only (Deci YOLO-NAS weights license: "
    "https://github.com/Deci-AI/super-gradients/blob/master/LICENSE.YOLONAS.md)"
)
SAM_LICENSE = "Apache-2.0 (https://github.com/facebookresearch/segment-anything/blob/main/LICENSE)"

Family = Literal["yolo_nas", "sam"]


MIRROR_BASE = "https://huggingface.co/CondadosAI/detectors"
MIRROR_ENV = "STREAM_WEIGHTS_MIRROR"


def mirror_base(env: Mapping[str, str]) -> str:
    """The mirror's base URL: ``$STREAM_WEIGHTS_MIRROR`` if set, else ``MIRROR_BASE`` (HF repo URL form)."""
    return (env.get(MIRROR_ENV) or MIRROR_BASE).rstrip("/")


def mirror_url(base: str, filename: str) -> str:
    """The URL of ``filename`` in a Hugging Face repo at ``base``: ``<base>/resolve/main/<filename>``."""
    return f"{base.rstrip('/')}/resolve/main/{filename}"


@dataclass(frozen=True)
class WeightSpec:
    """One official checkpoint.

    name: registry key used on the command line (``stream weights pull NAME``).
    family / arch: which builder consumes it (``yolo_nas``/``yolo_nas_s``, ``sam``/``vit_b``).
    url: where it is published; ``mirrors`` are tried in order when ``url`` cannot be reached.
    mirror_file: the file's name in the Hugging Face mirror (tried before ``url``), or None;
        it is also its name in the cache.
    sha256: lowercase hex of the published file, or None when no published hash is known
        (then the first download is trusted and recorded, see module docstring).
    size_bytes: expected size in bytes, informational (progress bar, ``list``); None when unknown.
    license: the terms, shown by ``stream weights list`` and before a download.
    filename: the file name inside ``<cache>/weights/``.
    """

    name: str
    family: Family
    arch: str
    url: str
    sha256: str | None
    size_bytes: int | None
    license: str
    filename: str
    mirrors: tuple[str, ...] = ()
    mirror_file: str | None = None

    @property
    def non_commercial(self) -> bool:
        return self.family == "yolo_nas"

    def filenames(self) -> tuple[str, ...]:
        """Names this entry may have in the cache, the preferred (safetensors) first."""
        return (self.mirror_file, self.filename) if self.mirror_file else (self.filename,)


@dataclass(frozen=True)
class Source:
    """One place to fetch an entry from: ``url`` is saved as ``<cache>/weights/<filename>``."""

    url: str
    filename: str


def sources(spec: WeightSpec, mirror: str = MIRROR_BASE) -> list[Source]:
    """Where ``spec`` is fetched from, in order: the mirror (if it holds the file), then the official URLs."""
    found = [Source(mirror_url(mirror, spec.mirror_file), spec.mirror_file)] if spec.mirror_file else []
    return found + [Source(url, spec.filename) for url in (spec.url, *spec.mirrors)]


# YOLO-NAS: URLs from super-gradients 3.7.1 (training/pretrained_models.py, MODEL_URLS "yolo_nas_*_coco").
# That host (sghub.deci.ai) no longer resolves since Deci's acquisition; the super-gradients issue
# tracker (#2057, #2064) points users at the S3 bucket below, which answers 403 since April 2026.
# Both are kept, after the Hugging Face mirror (see module docstring). None of them publishes a
# sha256, so these entries are trust-on-first-use.
# SAM: URLs from the segment-anything README. The sha256 values are not published by Meta; they
# are the values that many independent projects record for these exact files (cross-checked in
# several unrelated manifests). Sizes are from third-party manifests and are informational only.
_SG_S3 = "https://sg-hub-nv.s3.amazonaws.com/models/"
_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"

OFFICIAL: Mapping[str, WeightSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            *(
                WeightSpec(
                    name=f"yolo_nas_{size}",
                    family="yolo_nas",
                    arch=f"yolo_nas_{size}",
                    url=f"https://sghub.deci.ai/models/yolo_nas_{size}_coco.pth",
                    mirrors=(f"{_SG_S3}yolo_nas_{size}_coco.pth",),
                    sha256=None,
                    size_bytes=None,
                    license=YOLO_NAS_LICENSE,
                    filename=f"yolo_nas_{size}_coco.pth",
                    mirror_file=f"yolo-nas-{size}.safetensors",
                )
                for size in ("s", "m", "l")
            ),
            WeightSpec(
                name="sam_vit_b",
                family="sam",
                arch="vit_b",
                url=f"{_SAM_BASE}sam_vit_b_01ec64.pth",
                sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                size_bytes=375042383,
                license=SAM_LICENSE,
                filename="sam_vit_b_01ec64.pth",
            ),
            WeightSpec(
                name="sam_vit_l",
                family="sam",
                arch="vit_l",
                url=f"{_SAM_BASE}sam_vit_l_0b3195.pth",
                sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                size_bytes=1249524607,
                license=SAM_LICENSE,
                filename="sam_vit_l_0b3195.pth",
            ),
            WeightSpec(
                name="sam_vit_h",
                family="sam",
                arch="vit_h",
                url=f"{_SAM_BASE}sam_vit_h_4b8939.pth",
                sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                size_bytes=2564550879,
                license=SAM_LICENSE,
                filename="sam_vit_h_4b8939.pth",
            ),
        )
    }
)


def get_spec(name: str, registry: Mapping[str, WeightSpec] = OFFICIAL) -> WeightSpec:
    """The registry entry called ``name``; WeightsError listing the known names otherwise."""
    try:
        return registry[name]
    except KeyError:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(registry))}") from None


def cache_dir(env: Mapping[str, str]) -> Path:
    """The cache root: $STREAM_CACHE, else $XDG_CACHE_HOME/stream, else ~/.cache/stream.

    ``env`` is passed in (the CLI gives ``os.environ``) so that nothing reads the
    environment at import. Weights live under ``<cache>/weights/``.
    """
    if env.get("STREAM_CACHE"):
        return Path(env["STREAM_CACHE"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "stream"
    return Path.home() / ".cache" / "stream"


def artifacts_dir(cache: str | Path) -> Path:
    """Where exported model artifacts live under the cache root: one place for the
    pipeline, image mode and the benchmarks, so a benchmark times the pipeline's own artifact."""
    return Path(cache) / "artifacts"


def weights_path(spec: WeightSpec, cache: Path) -> Path:
    """Where ``spec`` lives in the cache: the first of its file names that is there, else the official one."""
    for name in spec.filenames():
        path = cache / "weights" / name
        if path.is_file():
            return path
    return cache / "weights" / spec.filename


def sidecar_path(path: Path) -> Path:
    """The trust-on-first-use record for ``path``: ``<path>.sha256`` in ``sha256sum`` format."""
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str | None:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text(encoding="ascii").split()
    return fields[0].lower() if fields else None


def _source_for(url: str, spec: WeightSpec) -> Source:
    """A user-given URL: saved under the entry's safetensors name if it is one, else the official name."""
    if spec.mirror_file and url.split("?", 1)[0].endswith(".safetensors"):
        return Source(url, spec.mirror_file)
    return Source(url, spec.filename)


def pull(
    spec: WeightSpec,
    cache: Path,
    *,
    force: bool = False,
    progress: bool = True,
    timeout_s: float = 60.0,
    urls: Sequence[str] | None = None,
    mirror: str = MIRROR_BASE,
) -> Path:
    """Fetch ``spec`` into ``<cache>/weights/`` and return its path.

    Sources are tried in order (``sources(spec, mirror)``: the mirror, then the
    official URLs); ``urls`` replaces them (a private mirror, or a test server).
    A failing source is logged with its reason and the next is tried; when all
    fail, DownloadError lists every URL and why. A downloaded file must parse as
    a checkpoint of ``spec``'s family and architecture (``identify``), else it is
    deleted and counts as a failure. A file already in the cache is checked, not
    fetched again, unless ``force``. Without a published sha256 the hash of the
    first download is recorded in the sidecar ``<file>.sha256`` (a warning says it
    was trusted on first use), and later downloads must match that record.
    """
    from stream.models.weights_check import identify

    cached = weights_path(spec, cache)
    if spec.non_commercial:
        log.warning("%s: %s. By downloading it you agree to these terms.", spec.name, spec.license)
    if cached.exists() and not force:
        result = verify(spec, cache)
        if result.status == "mismatch":
            raise WeightsError(
                f"{result.message}; run `stream weights pull {spec.name} --force` to replace it"
            )
        log.info("%s is already cached at %s (%s)", spec.name, cached, result.message)
        return cached
    candidates = [_source_for(u, spec) for u in urls] if urls else sources(spec, mirror)
    failures: list[str] = []
    for i, src in enumerate(candidates):
        dest = cache / "weights" / src.filename
        recorded = _recorded_sha256(dest) if spec.sha256 is None or src.filename != spec.filename else None
        expected = spec.sha256 if src.filename == spec.filename and spec.sha256 else recorded
        log.info("downloading %s from %s to %s", spec.name, src.url, dest)
        try:
            actual = _download(src.url, dest, expected, progress=progress, timeout_s=timeout_s)
        except WeightsError as exc:  # DownloadError, or a hash that does not match
            reason = str(exc)
            if recorded is not None and not isinstance(exc, DownloadError):
                reason += (
                    f" The expected hash is the trust-on-first-use record {sidecar_path(dest)}; "
                    "delete it if you mean to trust a new file."
                )
            failures.append(reason)
        else:
            try:
                identify(dest, family=spec.family, arch=spec.arch)
            except (
                ModelError
            ) as exc:  # it arrived, but it is not this checkpoint (an HTML page, another model)
                dest.unlink(missing_ok=True)
                failures.append(f"{src.url} sent a file that is not the {spec.name} checkpoint: {exc}")
                if i + 1 < len(candidates):
                    log.warning("%s Trying %s next.", failures[-1], candidates[i + 1].url)
                continue
            if spec.sha256 is not None and src.filename == spec.filename:
                log.info("%s: sha256 %s matches the registry", spec.name, actual)
            elif recorded is not None:
                log.info("%s: sha256 %s matches the trust-on-first-use record", spec.name, actual)
            else:
                sidecar = sidecar_path(dest)
                sidecar.write_text(f"{actual}  {dest.name}\n", encoding="ascii")
                log.warning(
                    "%s: no published sha256 is known for this file, so this download was trusted on first "
                    "use: recorded sha256 %s in %s; `stream weights verify` checks against it from now on",
                    spec.name,
                    actual,
                    sidecar,
                )
            return dest
        if i + 1 < len(candidates):
            log.warning("%s Trying %s next.", failures[-1], candidates[i + 1].url)
    listed = " ".join(f"({n}) {reason}" for n, reason in enumerate(failures, 1))
    raise DownloadError(
        f"could not fetch {spec.name} from any of its {len(candidates)} sources: {listed} "
        + _manual_hint(cache / "weights" / candidates[0].filename if candidates else cached)
    )


@dataclass(frozen=True)
class VerifyResult:
    """status: ok (hash matches), mismatch, missing (not in the cache), unverified (no hash to check),
    invalid (the file does not load as the entry's architecture)."""

    name: str
    path: Path
    status: Literal["ok", "mismatch", "missing", "unverified", "invalid"]
    message: str


def verify(spec: WeightSpec, cache: Path, *, check_load: bool = False) -> VerifyResult:
    """Check the cached file of ``spec`` against the registry sha256, else against its sidecar record.

    ``check_load``: also load it and check every tensor against ``spec.arch``
    (``weights_check.check_architecture``; for YOLO-NAS this imports super-gradients).
    """
    path = weights_path(spec, cache)
    if not path.is_file():
        return VerifyResult(spec.name, path, "missing", f"{path} is not cached")
    sidecar = sidecar_path(path)
    expected, source = (spec.sha256, "registry") if path.name == spec.filename else (None, "")
    if expected is None:
        expected, source = _recorded_sha256(path), f"trust-on-first-use record {sidecar}"
    if expected is not None:
        actual = sha256_file(path)
        if actual != expected:
            return VerifyResult(
                spec.name,
                path,
                "mismatch",
                f"{path}: sha256 {actual} does not match {expected} from the {source}",
            )
    loaded = ""
    if check_load:
        from stream.models.weights_check import check_architecture

        if spec.family == "yolo_nas" and "super_gradients" not in sys.modules:
            log.info(
                "checking %s against %s: building it imports super-gradients (~25 s)", path.name, spec.arch
            )
        try:
            info = check_architecture(path, family=spec.family, arch=spec.arch)
        except ModelError as exc:
            return VerifyResult(spec.name, path, "invalid", f"does not load as {spec.arch}: {exc}")
        loaded = f"; loads as {info.arch} ({info.tensors} tensors)"
    if expected is None:
        return VerifyResult(
            spec.name, path, "unverified", f"{path}: no published sha256 and no {sidecar}{loaded}"
        )
    return VerifyResult(spec.name, path, "ok", f"sha256 matches the {source}{loaded}")


def resolve_weights(
    name_or_path: str | Path, cache: Path, registry: Mapping[str, WeightSpec] = OFFICIAL
) -> Path:
    """A checkpoint path from a registry name (its cache file) or a local file path (used as-is).

    Registry names take precedence, then names given to ``stream weights import``;
    anything else is a path, which must be an existing file. A registry name whose
    file is missing raises WeightsError naming the command that fetches it. Does not
    hash the file (that is ``verify``): this runs on every start.
    """
    from stream.models.weights_import import imported_path

    key = str(name_or_path)
    imported = imported_path(key, cache) if key not in registry else None
    if imported is not None:
        if not imported.is_file():
            raise WeightsError(
                f"imported weights {key!r} are gone ({imported} is missing); import the file again with "
                f"`stream weights import FILE --name {key}`"
            )
        return imported
    if key in registry:
        path = weights_path(registry[key], cache)
        if not path.is_file():
            where = " or ".join(str(cache / "weights" / f) for f in registry[key].filenames())
            raise WeightsError(
                f"weights {key!r} are not in the cache ({where} is missing); fetch them with "
                f"`stream weights pull {key}`, or pass --random-weights to run with untrained weights "
                "(tests and benchmarks only)"
            )
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist (and {key!r} is not a known name: "
            f"{', '.join(sorted(registry))})"
        )
    return path
