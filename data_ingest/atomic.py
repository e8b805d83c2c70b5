"""Crash-safe file writes: a reader (or a rerun after SIGKILL) sees the old file or the new one, never half."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def write_synced(path: Path, data: bytes) -> None:
    """Writes and fsyncs ``path`` (for files inside a directory that is itself renamed into place)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes) -> None:
    """Writes a temp file beside ``path``, fsyncs it, then renames it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, default=_json_default) + "\n").encode())


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


__all__ = ["write_atomic", "write_json_atomic", "write_synced"]
