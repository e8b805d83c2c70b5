"""Reading clip datasets for training: the manifest, random-access splits, deterministic batches, a loader.

A dataset directory (written by ``genie ingest``) holds ``genie_dataset.json`` and TFDS ArrayRecord files; this
module reads them through the format alone (it never imports the ingest code). Batches are a pure function of
(split, step, batch_size, seed), so a run resumed at step s sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

FORMAT_NAME = "genie_clips"
FORMAT_VERSION = 1
MANIFEST_NAME = "genie_dataset.json"
_INGEST_HINT = "run `genie ingest synthetic:platformer --out DIR` first"


class DataError(Exception):
    """A dataset problem the user can fix; the message names the path or value and what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the manifest says about a dataset. ``metadata`` is the whole manifest (generator settings, NMI...)."""

    path: Path
    clip_len: int
    height: int
    width: int
    action_meanings: tuple[str, ...]
    num_clips: dict[str, int]
    fingerprint: str
    metadata: dict = field(default_factory=dict, repr=False)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("sources", ()))


class ClipSplit(Sequence):
    """Random access to one split: ``split[i]`` = {"frames": uint8 [T,H,W,3], "actions": int32 [T-1],
    "source_id": int}. Records are in source order (a Beam-built dataset: TFDS's write-time shuffle); training
    batches are shuffled, whatever the order."""

    def __init__(self, name: str, source: Any):
        self.name = name
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"clip {index} out of range for split {self.name!r} of {n} clips")
        return _record(self._source[index % n])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        # Batched read (grain uses it): one call into ArrayRecord instead of one per clip.
        return [_record(r) for r in self._source.__getitems__(list(indices))]


def _record(raw: dict[str, Any]) -> dict[str, Any]:
    return {"frames": np.asarray(raw["frames"], np.uint8), "actions": np.asarray(raw["actions"], np.int32),
            "source_id": int(raw["source_id"])}


class ClipDataset:
    """A clip dataset directory. Raises DataError if it is missing, incomplete or of another format/version."""

    def __init__(self, data_dir: str | os.PathLike):
        path = Path(data_dir).expanduser().absolute()
        manifest_path = path / MANIFEST_NAME
        hint = _INGEST_HINT.replace("DIR", str(path))
        if not path.is_dir():
            raise DataError(f"no dataset at {path} (directory does not exist); {hint}")
        if not manifest_path.is_file():
            raise DataError(f"{path} is not a genie dataset: it has no {MANIFEST_NAME} (a dataset whose writing was "
                            f"interrupted never has one); {hint}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{manifest_path} is unreadable ({exc}); re-run ingest with --overwrite") from None
        self.info = _parse_manifest(path, manifest_path, manifest)
        self._tfds_dir = path / manifest["tfds_dir"]
        self._builder: Any = None
        self._splits: dict[str, ClipSplit] = {}
        self._pipelines: dict[tuple, grain.MapDataset] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClipDataset({str(self.info.path)!r}, clips={self.info.num_clips})"

    def split(self, name: str) -> ClipSplit:
        """Random-access view of split ``name`` (DataError if the dataset has no such split)."""
        if name not in self.info.num_clips:
            raise DataError(f"dataset {self.info.path} has no split {name!r}; it has: "
                            f"{', '.join(self.info.num_clips)}")
        with self._lock:
            if name not in self._splits:
                source = self._tfds_builder().as_data_source(name)
                if len(source) != self.info.num_clips[name]:
                    raise DataError(f"{self._tfds_dir}: split {name!r} has {len(source)} clips but the manifest "
                                    f"says {self.info.num_clips[name]}; the dataset is damaged, re-run ingest")
                self._splits[name] = ClipSplit(name, source)
            return self._splits[name]

    def _tfds_builder(self) -> Any:
        if self._builder is None:
            import tensorflow_datasets as tfds  # slow import, deferred until clips are actually read

            try:
                self._builder = tfds.builder_from_directory(str(self._tfds_dir))
            except Exception as exc:  # TFDS raises several types for a missing/corrupt directory
                raise DataError(f"cannot open the clip records at {self._tfds_dir} ({exc}); the dataset is "
                                "damaged, re-run ingest with --overwrite") from None
            features = self._builder.info.features
            want = (self.info.clip_len, self.info.height, self.info.width, 3)
            if tuple(features["frames"].shape) != want:
                raise DataError(f"{self._tfds_dir}: frames are {tuple(features['frames'].shape)} but the manifest "
                                f"says {want}; the dataset is damaged, re-run ingest")
        return self._builder

    def pipeline(self, split: str, seed: int, num_frames: int | None = None) -> grain.MapDataset:
        """Infinite grain MapDataset of clips: source -> trim -> shuffle(seed, reshuffled each epoch) -> repeat."""
        num_frames = self._check_num_frames(num_frames)
        if not 0 <= seed < 2**32:
            raise DataError(f"seed must be in [0, 2**32), got {seed}")
        key = (split, seed, num_frames)
        if key not in self._pipelines:
            source = self.split(split)
            n = len(source)
            # Records carry their clip index in the split (grain passes the repeated stream's index: hence % n).
            self._pipelines[key] = (grain.MapDataset.source(source)
                                    .map_with_index(lambda i, r: _trim(r, num_frames, i % n))
                                    .shuffle(seed=seed)
                                    .repeat())
        return self._pipelines[key]

    def _check_num_frames(self, num_frames: int | None) -> int:
        if num_frames is None:
            return self.info.clip_len
        if not 2 <= num_frames <= self.info.clip_len:
            raise DataError(f"num_frames={num_frames} must be in [2, {self.info.clip_len}] (the dataset at "
                            f"{self.info.path} has clips of {self.info.clip_len} frames); lower it or re-ingest "
                            "with a larger --clip-len")
        return num_frames


def _trim(record: dict[str, Any], num_frames: int, index: int) -> dict[str, np.ndarray]:
    return {"frames": record["frames"][:num_frames], "actions": record["actions"][:num_frames - 1],
            "source_id": np.int32(record["source_id"]), "index": np.int64(index)}


def _parse_manifest(path: Path, manifest_path: Path, m: Any) -> DatasetInfo:
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise DataError(f"{manifest_path} is not a {FORMAT_NAME} manifest; {_INGEST_HINT.replace('DIR', str(path))}")
    if m.get("version") != FORMAT_VERSION:
        raise DataError(f"{manifest_path} has format version {m.get('version')!r}, this code reads version "
                        f"{FORMAT_VERSION}; re-run ingest with this version (--overwrite)")
    try:
        info = DatasetInfo(path=path, clip_len=int(m["clip_len"]), height=int(m["height"]), width=int(m["width"]),
                           action_meanings=tuple(str(a) for a in m["action_meanings"]),
                           num_clips={str(k): int(v) for k, v in m["num_clips"].items()},
                           fingerprint=str(m["fingerprint"]), metadata=m)
        str(m["tfds_dir"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{manifest_path} is missing or has a bad field ({exc!r}); re-run ingest with "
                        "--overwrite") from None
    return info


def global_batch(ds: ClipDataset, split: str, step: int, batch_size: int, seed: int, *,
                 num_frames: int | None = None) -> dict[str, np.ndarray]:
    """Batch ``step`` of the endless shuffled stream: {"frames": uint8 [B,T,H,W,3], "actions": int32 [B,T-1],
    "source_id": int32 [B], "index": int64 [B] (each clip's index in the split)}. A pure function of (dataset,
    split, step, batch_size, seed, num_frames)."""
    if step < 0 or batch_size < 1:
        raise DataError(f"need step >= 0 and batch_size >= 1, got step={step}, batch_size={batch_size}")
    return ds.pipeline(split, seed, num_frames).batch(batch_size, drop_remainder=True)[step]


def batch_rows(ds: ClipDataset, split: str, step: int, batch_size: int, seed: int, rows: Sequence[int], *,
               num_frames: int | None = None) -> dict[str, np.ndarray]:
    """Only ``rows`` of ``global_batch(...)``: what one process of several loads (no other rows are read)."""
    stream = ds.pipeline(split, seed, num_frames)
    items = [stream[step * batch_size + r] for r in rows]
    return {k: np.stack([it[k] for it in items]) for k in ("frames", "actions", "source_id", "index")}


class Loader:
    """Endless iterator of training batches as jax.Arrays, starting at ``start_step``, prefetched in a thread.

    Each process reads only its rows of the global batch (with the usual mesh, rows split evenly in process
    order; exactly: the rows of its addressable shards) and the global array is assembled with
    ``jax.make_array_from_process_local_data``. ``sharding`` gives the mesh and the batch axis: its
    PartitionSpec's first entry shards the leading (batch) dimension of every array. With
    ``sharding=None`` (single process only) batches are plain arrays on the default device. Frames stay uint8.
    ``next_step`` is the step of the batch the next ``next()`` returns: save it with checkpoints to resume.
    ``tokens`` (one row per clip of the split, e.g. the token cache) adds each batch's rows as ``tokens``.
    """

    def __init__(self, ds: ClipDataset, split: str, batch_size: int, seed: int, start_step: int = 0,
                 sharding: NamedSharding | None = None, num_frames: int | None = None, prefetch: int = 2,
                 tokens: np.ndarray | None = None):
        process_count = jax.process_count()
        if batch_size < 1 or batch_size % process_count:
            raise DataError(f"batch_size={batch_size} must be positive and divide evenly over {process_count} "
                            "processes")
        if sharding is None and process_count > 1:
            raise DataError("Loader needs a sharding when running as several processes")
        num_frames = ds._check_num_frames(num_frames)
        ds.pipeline(split, seed, num_frames)  # fail now, not in the thread, on an unknown split or bad seed
        batch_sharding = None
        rows: list[int] = list(range(batch_size))
        if sharding is not None:
            lead = sharding.spec[0] if len(sharding.spec) else None
            axes = () if lead is None else (lead,) if isinstance(lead, str) else tuple(lead)
            n_shards = int(np.prod([sharding.mesh.shape[a] for a in axes]))
            if batch_size % n_shards:
                raise DataError(f"batch_size={batch_size} must be divisible by the {n_shards} batch shards of "
                                f"mesh axes {axes}")
            batch_sharding = NamedSharding(sharding.mesh, PartitionSpec(lead))
            # This process's rows are those of its devices' shards, in order (what the call below expects).
            index_map = batch_sharding.addressable_devices_indices_map((batch_size,))
            rows = sorted({r for index in index_map.values() for r in range(*index[0].indices(batch_size))})

        if tokens is not None and len(tokens) != len(ds.split(split)):
            raise DataError(f"tokens has {len(tokens)} rows but split {split!r} of {ds.info.path} has "
                            f"{len(ds.split(split))} clips")

        def make(step: int) -> dict[str, jax.Array]:
            host = batch_rows(ds, split, step, batch_size, seed, rows, num_frames=num_frames)
            if tokens is not None:
                host["tokens"] = tokens[host["index"]]
            if batch_sharding is None:
                return {k: jnp.asarray(v) for k, v in host.items()}
            return {k: jax.make_array_from_process_local_data(batch_sharding, v, (batch_size, *v.shape[1:]))
                    for k, v in host.items()}

        self.next_step = start_step
        self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        # The thread gets only what it needs (not self), so dropping the Loader stops it via __del__.
        self._thread = threading.Thread(target=_produce, args=(make, start_step, self._queue, self._stop),
                                        daemon=True, name=f"genie-loader-{split}")
        self._thread.start()

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        if self._stop.is_set():
            raise StopIteration
        step, batch = self._queue.get()
        if step is None:
            self.close()
            raise batch
        self.next_step = step + 1
        return batch

    def close(self) -> None:
        """Stops the prefetch thread (idempotent)."""
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _produce(make: Any, step: int, out: queue.Queue, stop: threading.Event) -> None:
    """Prefetch thread: puts (step, batch) until stopped; an exception is put as (None, exc) and ends it."""

    def put(item: tuple) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    try:
        while not stop.is_set():
            put((step, make(step)))
            step += 1
    except BaseException as exc:  # surfaced to the consumer on its next()
        put((None, exc))


__all__ = ["ClipDataset", "ClipSplit", "DataError", "DatasetInfo", "Loader", "batch_rows", "global_batch"]
