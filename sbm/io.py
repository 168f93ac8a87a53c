"""Files: checkpoints (safetensors weights + JSON config in the header) and metrics JSON.

Every write is atomic (temporary file in the same folder, fsync, `os.replace`), so a
kill mid-write never leaves a half file under the final name. Nothing is ever loaded
through pickle: tensors come from safetensors, everything else from JSON. Each file
carries a SHA-256 of its tensors, so corruption that keeps the header readable is
caught too (`CheckpointError`, naming the file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from sbm.errors import CheckpointError

FORMAT_VERSION = 1


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def json_safe(obj: Any) -> Any:
    """A copy in which floats that are not finite become None (JSON has no NaN/inf)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON (non-finite floats as null), atomically."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state_dict (names, dtypes, shapes, values): its weights' identity."""
    return _digest(module.state_dict())


def save_tensors(path: str | Path, tensors: dict[str, Tensor], meta: dict) -> None:
    """Write tensors + JSON-able `meta` into one safetensors file, atomically."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"sbm": json.dumps(meta), "sha256": _digest(tensors), "format_version": str(FORMAT_VERSION)}
    tmp = _atomic_target(path)
    try:
        save_file(tensors, str(tmp), metadata=header)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """Read a file written by `save_tensors`; verify its checksum. -> (tensors, meta)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({err})") from err
    if "sbm" not in header or "sha256" not in header:
        raise CheckpointError(f"{path}: not an sbm checkpoint (no sbm metadata in the safetensors header)")
    if _digest(tensors) != header["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch; the file is corrupt")
    try:
        meta = json.loads(header["sbm"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupt metadata ({err})") from err
    return tensors, meta


# --------------------------------------------------------------------------- skipped stages


def write_skipped(path: str | Path, stage: str, reason: str) -> None:
    """In place of a stage's model or samples file: a checkpoint with no tensors saying that
    `stage` had nothing to do and why (e.g. data without labels has no classifier). DVC gets
    its declared output; the stages that read it see `skipped_reason` and skip in turn."""
    save_tensors(path, {}, {"kind": "skipped", "stage": stage, "reason": reason})


def skipped_reason(path: str | Path) -> str | None:
    """"<stage> was skipped: <reason>" if `path` is a `write_skipped` file, else None (also
    when it is missing or unreadable: loading it then raises the precise error)."""
    try:
        meta = load_tensors(path)[1]
    except CheckpointError:
        return None
    return f"{meta.get('stage')} was skipped: {meta.get('reason')}" if meta.get("kind") == "skipped" else None


# --------------------------------------------------------------------------- modules


def save_module(path: str | Path, module: torch.nn.Module, kind: str, meta: dict) -> None:
    """A module's trainable part as one checkpoint: the state of `module.net` (or of the
    module itself if it has no `.net`) under "net.*", with `kind` and `meta` (its config) in
    the JSON header. The counterpart of `load_module`."""
    net = getattr(module, "net", module)
    net = getattr(net, "module", net)  # unwrap a data-parallel wrapper
    save_tensors(path, {f"net.{k}": v for k, v in net.state_dict().items()}, {"kind": kind, **meta})


def load_module(path: str | Path, kind: str, build, what: str | None = None):
    """Rebuild a module written by `save_module` -> (module in eval mode, meta).

    build(meta) -> the untrained module (from the config in the header); its `.net` (or
    itself) receives the "net.*" weights. CheckpointError naming the file if it is missing,
    corrupt, of another kind or its weights do not fit the stored architecture."""
    tensors, meta = load_tensors(path)
    if meta.get("kind") == "skipped":
        raise CheckpointError(f"{path}: no {what or kind}, stage {meta.get('stage')} was skipped: {meta.get('reason')}")
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r} checkpoint, not a {what or kind}")
    module = build(meta)
    net = getattr(module, "net", module)
    try:
        net.load_state_dict({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")})
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({err})") from err
    return module.eval(), meta
