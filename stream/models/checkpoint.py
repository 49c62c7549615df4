"""Reading checkpoints safely: ``torch.load(weights_only=True)`` only, never an unsafe fallback.

A checkpoint is reduced to a flat state dict (parameter name → tensor). The
layouts super-gradients writes are unwrapped the way its own loader does
(``checkpoint_utils._load_weights`` / ``adaptive_load_state_dict``): the EMA
weights under ``"ema_net"`` are preferred, then ``"net"``; ``"model"`` and
``"state_dict"`` cover other trainers; a ``"module."`` prefix on every key
(DataParallel) is dropped. SAM checkpoints are already flat state dicts.

``.safetensors`` files are read with the ``safetensors`` package when it is
installed; it is not a project dependency (not installed in this environment),
so that branch only raises a clear error here.

torch is imported inside the functions that need it, so importing this module
(e.g. for ``sha256_file``) stays cheap.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.errors import ModelError, UnsafeCheckpointError, WeightsError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Keys under which trainers nest the weights, most preferred first. super-gradients
# stores the EMA model's state dict as "ema_net" and loads it in place of "net" for
# its pretrained weights.
WRAPPER_KEYS = ("ema_net", "net", "model", "state_dict")


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


def _load_safetensors(path: Path) -> Any:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(
            f"cannot read {path}: .safetensors files need the `safetensors` package, which is not "
            "installed; install it into this environment or use a .pth checkpoint"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError (not importable by name)
        raise ModelError(
            f"cannot read checkpoint {path}: the file is truncated or not a safetensors file ({exc}); "
            + _redownload_hint()
        ) from exc


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
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load the checkpoint at ``path`` onto the CPU as a flat ``{name: tensor}`` state dict.

    Tensors keep their stored dtype (float32 for the official checkpoints).
    Errors: WeightsError if the file is missing; ModelError if it is truncated or
    not a checkpoint; UnsafeCheckpointError if it needs arbitrary code to load
    (a pickle referencing globals outside torch's allowlist); it is then refused
    and nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist; fetch it with `stream weights pull NAME`")
    raw = _load_safetensors(path) if path.suffix == ".safetensors" else _load_torch(path)
    return unwrap_state_dict(raw, source=str(path))
