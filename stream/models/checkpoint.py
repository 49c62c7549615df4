"""Reading checkpoints safely: ``torch.load(weights_only=True)`` or safetensors, never an unsafe fallback.

A checkpoint is reduced to a flat state dict (parameter name → tensor). The
layouts super-gradients writes are unwrapped the way its own loader does
(``checkpoint_utils._load_weights`` / ``adaptive_load_state_dict``): the EMA
weights under ``"ema_net"`` are preferred, then ``"net"``; ``"model"`` and
``"state_dict"`` cover other trainers; a ``"module."`` prefix on every key
(DataParallel) is dropped. A flattened checkpoint (safetensors, whose keys are
``net.module.backbone…`` or ``ema_model.…``) is unwrapped the same way, one
dotted prefix at a time. SAM checkpoints are already flat state dicts.

Class names travel with some checkpoints: super-gradients writes them under
``processing_params.class_names``; a safetensors file may carry them in its
``__metadata__`` (``class_names``, a JSON list). Both are read without running
any code from the file.

torch is imported inside the functions that need it, so importing this module
(e.g. for ``sha256_file``) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stream.errors import ModelError, UnsafeCheckpointError, WeightsError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Keys under which trainers nest the weights, most preferred first. super-gradients
# stores the EMA model's state dict as "ema_net" and loads it in place of "net" for
# its pretrained weights.
WRAPPER_KEYS = ("ema_net", "ema_model", "net", "model", "state_dict")
_DP_PREFIX = "module."
# Where class names are found: super-gradients' processing params, or a top-level list.
_NAME_KEYS = ("class_names", "classes", "names")


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _redownload_hint() -> str:
    return "re-download it with `stream weights pull NAME` (or replace it with a good copy)"


def _referenced_globals(path: Path) -> list[str]:
    """Names of the Python globals (functions, classes) the pickle in ``path`` would import.

    A static scan with ``pickletools.genops``: nothing is imported or called. Reads
    ``*/data.pkl`` of a zip checkpoint, else the raw file (the legacy format is up
    to four pickles back to back). Stops quietly where the bytes stop parsing.
    """
    import io
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl")]
            stream: Any = io.BytesIO(zf.read(names[0])) if names else io.BytesIO()
    else:
        stream = path.open("rb")
    found: list[str] = []
    strings: list[str] = []
    with stream:
        try:
            for _ in range(4):
                for opcode, arg, _pos in pickletools.genops(stream):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if opcode.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
        except (ValueError, EOFError, pickle.UnpicklingError, UnicodeDecodeError):
            pass  # the end of the pickles, or bytes that are not a pickle at all
    return found


def _load_torch(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global outside torch's allowlist (os.system, arbitrary classes)
        # before calling it, and also bytes it cannot parse. Tell the two apart by a static scan.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next(
            (ln for ln in lines if "GLOBAL" in ln or "reduce" in ln), lines[-2] if len(lines) > 1 else ""
        )
        detail = detail.split(". Please use")[0]
        referenced = _referenced_globals(path)
        if "GLOBAL" not in detail and "reduce" not in detail and not referenced:
            raise ModelError(
                f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint "
                f"(torch: {detail}); " + _redownload_hint()
            ) from exc
        # torch's own allowlist (private; used the same way by get_unsafe_globals_in_checkpoint).
        allowed_fn = getattr(torch._weights_only_unpickler, "_get_allowed_globals", dict)
        unsafe = sorted({name for name in referenced if name not in allowed_fn()})
        names = f"; it would import {', '.join(unsafe[:5])}" if unsafe else ""
        raise UnsafeCheckpointError(
            f"refused to load {path}: it contains pickled objects other than tensors and plain "
            f"containers, and loading it could run arbitrary code (torch: {detail}{names}). Use an "
            "official checkpoint (`stream weights pull NAME`) or, on a machine where you trust the file, "
            "save just its state_dict with torch.save(model.state_dict(), ...)"
        ) from exc
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, OSError) as exc:
        # Seen: RuntimeError (zip central directory missing, unexpected EOF), EOFError (empty
        # file), KeyError (bytes that are not a pickle). All mean: not a loadable checkpoint.
        raise ModelError(
            f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            + _redownload_hint()
        ) from exc


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` holds a safetensors file: by suffix, else by its header (u64 length, then ``{``)."""
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000


def _load_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, ``__metadata__``) of a safetensors file; ModelError if it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own SafetensorError (not importable by name)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"cannot read checkpoint {path}: the file is truncated or not a safetensors file ({detail}); "
            + _redownload_hint()
        ) from exc
    return tensors, metadata


def _names(value: Any) -> tuple[str, ...] | None:
    """A tuple of class names from a list of strings, or a JSON list / comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [n.strip() for n in text.split(",")]
        except ValueError:
            return None
    if isinstance(value, list | tuple) and value and all(isinstance(n, str) and n for n in value):
        return tuple(value)
    return None


def _class_names(raw: Mapping[Any, Any]) -> tuple[str, ...] | None:
    params = raw.get("processing_params")
    for where in (params if isinstance(params, Mapping) else {}, raw):
        for key in _NAME_KEYS:
            names = _names(where.get(key))
            if names is not None:
                return names
    return None


def unwrap_state_dict(checkpoint: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Reduce a loaded checkpoint object to a flat ``{name: tensor}`` state dict.

    Accepts a flat state dict, or a dict nesting one under one of ``WRAPPER_KEYS``
    (first match wins, so super-gradients' EMA weights beat ``"net"``). Drops a
    ``"module."`` prefix present on every key. ``source`` names the file in errors.
    """
    import torch

    if not isinstance(checkpoint, Mapping):
        raise ModelError(
            f"{source} holds a {type(checkpoint).__name__}, not a dict of tensors; expected a state dict "
            f"or a dict with one of the keys {', '.join(WRAPPER_KEYS)}"
        )
    state: Mapping[Any, Any] = checkpoint
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                log.debug("%s: using the weights under %r", source, key)
                state = state[key]
                break
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad or not state:
        raise ModelError(
            f"{source} is not a state dict: "
            + (f"entries {bad[:5]!r} are not tensors" if bad else "it holds no tensors")
            + f" (top-level keys: {sorted(map(str, checkpoint))[:10]}); expected a state dict or a dict "
            f"with one of the keys {', '.join(WRAPPER_KEYS)}"
        )
    return _strip_prefixes(dict(state), source)


def _strip_prefixes(state: dict[str, Any], source: str) -> dict[str, Any]:
    """Unwrap flattened wrapper keys (``ema_net.``, ``ema_model.``, ``net.`` …) and ``module.``, repeatedly.

    Only a prefix that every key has is removed; where a flattened file holds several
    wrappers (``net.*`` and ``ema_net.*``) the most preferred one (``WRAPPER_KEYS``) is kept.
    """
    while True:
        heads = {k.split(".", 1)[0] for k in state}
        if heads == {_DP_PREFIX[:-1]} and all("." in k for k in state):
            state = {k[len(_DP_PREFIX) :]: v for k, v in state.items()}
            continue
        if "" in heads or not heads <= set(WRAPPER_KEYS) or not all("." in k for k in state):
            return state
        chosen = next(w for w in WRAPPER_KEYS if w in heads)
        if len(heads) > 1:
            log.debug("%s: using the weights under %r of %s", source, chosen, sorted(heads))
        state = {k[len(chosen) + 1 :]: v for k, v in state.items() if k.startswith(chosen + ".")}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read from disk.

    state: flat ``{name: tensor}`` on the CPU, wrappers and prefixes removed.
    class_names: names stored in the file (see module docstring), None when it has none.
    format: ``pth`` (torch.load, weights_only) or ``safetensors``.
    """

    state: dict[str, torch.Tensor]
    class_names: tuple[str, ...] | None
    format: Literal["pth", "safetensors"]


def read_checkpoint(path: Path) -> Checkpoint:
    """Read the checkpoint at ``path`` (.pth via weights_only, or safetensors, told apart by content).

    Tensors keep their stored dtype (float32 for the official checkpoints).
    Errors: WeightsError if the file is missing; ModelError if it is truncated or
    not a checkpoint; UnsafeCheckpointError if it needs arbitrary code to load
    (a pickle referencing globals outside torch's allowlist); it is then refused
    and nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist; fetch it with `stream weights pull NAME`")
    if is_safetensors(path):
        tensors, metadata = _load_safetensors(path)
        state = unwrap_state_dict(tensors, source=str(path))
        return Checkpoint(state, _class_names(metadata), "safetensors")
    raw = _load_torch(path)
    state = unwrap_state_dict(raw, source=str(path))
    return Checkpoint(state, _class_names(raw) if isinstance(raw, Mapping) else None, "pth")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict of the checkpoint at ``path`` (``read_checkpoint(path).state``)."""
    return read_checkpoint(path).state


def check_state_shapes(
    expected: Mapping[str, Any], got: Mapping[str, Any], *, arch: str, source: str, hint: str = ""
) -> None:
    """Refuse a state dict that does not fit an architecture, in one line.

    ``expected``: the architecture's own state dict (or key → tensor with ``.shape``).
    The first tensor of another shape is named with both shapes ("KEY expected
    (80, 64, 1, 1), got (2, 64, 1, 1)"), then how many more, then missing and
    unexpected keys (a few named). Raises ModelError; returns None when all fit.
    """
    shapes = [
        (k, tuple(expected[k].shape), tuple(got[k].shape))
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if not (shapes or missing or unexpected):
        return
    parts = []
    if shapes:
        key, want, have = shapes[0]
        more = f" (and {len(shapes) - 1} more tensors of another shape)" if len(shapes) > 1 else ""
        parts.append(f"{key} expected {want}, got {have}{more}")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    raise ModelError(
        f"checkpoint {source} does not fit {arch} ({len(expected)} tensors): {'; '.join(parts)}{hint}; "
        "use a checkpoint trained for this architecture"
    )
