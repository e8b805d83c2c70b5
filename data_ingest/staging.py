"""The ingest work area inside ``--out``: per-source clips staged on disk, committed atomically.

Layout (all under ``<out>/.ingest/``)::

    staged/<key>/clips.u8      clip frames, raw uint8, clip after clip ([N, T, H, W, 3] without a header)
    staged/<key>/clips.npz     actions int32 [N, T-1] (source-local ids, -1 unknown), signatures [N],
                               positions int64 [N, 2] (stretch between cuts, first frame's place in it)
    staged/<key>/result.json   what processing found: hash, counts, action meanings (written before the rename)
    tmp/<key>-<random>/        a source being processed; renamed to staged/<key> only when complete
    downloads/                 yt-dlp's cache, archive and per-video records

``key`` = hash(processing settings, source content): a staged directory is the finished, immutable result of one
source under one set of settings. A directory rename is atomic, so after a SIGKILL a source is either wholly
staged or not at all; leftovers in tmp/ are deleted on the next run.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_ingest.atomic import write_synced

WORK_DIR = ".ingest"


def work_paths(out_dir: Path) -> dict[str, Path]:
    work = out_dir / WORK_DIR
    return {"work": work, "staged": work / "staged", "tmp": work / "tmp", "downloads": work / "downloads"}


def staged_result(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The result of an already staged source, or None if it has not been staged (under these settings)."""
    path = work_paths(out_dir)["staged"] / key / "result.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class StageWriter:
    """Appends one source's clips to a temp directory; ``commit`` moves it into ``staged/`` atomically."""

    def __init__(self, out_dir: Path, key: str):
        paths = work_paths(out_dir)
        self.key = key
        self._final = paths["staged"] / key
        self._dir = paths["tmp"] / f"{key}-{uuid.uuid4().hex[:8]}"
        self._dir.mkdir(parents=True)
        self._frames = open(self._dir / "clips.u8", "wb")  # noqa: SIM115 (closed by commit/abort)
        self._actions: list[np.ndarray] = []
        self._signatures: list[str] = []
        self._positions: list[tuple[int, int]] = []

    @property
    def num_clips(self) -> int:
        return len(self._signatures)

    @property
    def positions(self) -> np.ndarray:
        """The added clips' (segment, start), int64 [N, 2]."""
        return np.asarray(self._positions, np.int64).reshape(-1, 2)

    def add(self, frames_THWC: np.ndarray, actions: np.ndarray, signature: str, position: tuple[int, int]) -> None:
        """position: (segment, start): which stretch between cuts the clip is from, where it starts in it."""
        self._frames.write(np.ascontiguousarray(frames_THWC, np.uint8).data)  # no copy
        self._actions.append(np.asarray(actions, np.int32))
        self._signatures.append(signature)
        self._positions.append(position)

    def discard_clips(self) -> None:
        """Forgets the clips added so far (a source dropped after all, e.g. too short)."""
        self._frames.seek(0)
        self._frames.truncate()
        self._actions.clear()
        self._signatures.clear()
        self._positions.clear()

    def commit(self, result: dict[str, Any], clip_len: int) -> None:
        """Flushes everything to disk and renames the directory into place (a concurrent twin wins harmlessly)."""
        self._frames.flush()
        os.fsync(self._frames.fileno())
        self._frames.close()
        actions = np.stack(self._actions) if self._actions else np.zeros((0, clip_len - 1), np.int32)
        _save_npz(self._dir / "clips.npz", actions=actions, signatures=np.asarray(self._signatures, dtype="U20"),
                  positions=self.positions)
        write_synced(self._dir / "result.json", json.dumps(result, indent=1).encode())
        self._final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self._dir, self._final)
        except OSError:  # already staged by an identical source: keep that one
            shutil.rmtree(self._dir, ignore_errors=True)

    def abort(self) -> None:
        self._frames.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass(frozen=True)
class StagedClips:
    """A staged source as a clip-dataset source: streams its kept clips from disk (picklable, so Beam-ready).

    keep: clip indices to yield (others are near-duplicates); action_map: source-local action id -> dataset id.
    """

    name: str
    path: str
    clip_shape: tuple[int, int, int, int]  # (T, H, W, 3)
    keep: tuple[int, ...]
    action_map: tuple[int, ...] = ()

    @property
    def num_clips(self) -> int:
        return len(self.keep)

    def iter_clips(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The kept clips: (frames uint8 [T, H, W, 3], dataset action ids int32 [T-1]), one read at a time (not
        mapped: a mapped file's pages count towards this process's memory until it is done with the source)."""
        if not self.keep:
            return
        data = staged_arrays(Path(self.path))
        lookup = np.asarray((-1, *self.action_map), np.int32)  # index 0 holds "unknown" (-1)
        clip_bytes = int(np.prod(self.clip_shape))
        with open(Path(self.path) / "clips.u8", "rb") as f:
            for i in self.keep:
                frames = np.empty(self.clip_shape, np.uint8)
                f.seek(i * clip_bytes)
                if f.readinto(frames.data) != clip_bytes:
                    raise ValueError(f"{f.name} ends before clip {i}: a staged source was damaged; delete "
                                     f"{self.path} and rerun")
                yield frames, lookup[data["actions"][i] + 1]


def staged_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path / "clips.npz") as npz:
        return {k: npz[k] for k in npz.files}


def clean_tmp(out_dir: Path) -> None:
    """Deletes what an interrupted run left half-written."""
    shutil.rmtree(work_paths(out_dir)["tmp"], ignore_errors=True)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


__all__ = ["WORK_DIR", "StageWriter", "StagedClips", "clean_tmp", "staged_arrays", "staged_result", "work_paths"]
