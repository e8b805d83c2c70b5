"""The dataset build's per-clip work, in parallel: clip records written to ArrayRecord shards.

A shard holds whole sources of one split, in source order. Shards are planned from the sources' sizes alone, never
from the number of workers, so any ``--workers`` writes the same files. One task writes one shard: it cuts its
sources into records, compresses them and digests every clip for the dataset fingerprint, so an executor with N
processes writes N shards at a time. ``clip_dataset`` adds TFDS's metadata once every shard is written.

Records are TFDS's serialised ``tf.train.Example`` of the clip features, encoded here (``encode_record``; tests
parse them with TFDS's own parser and proto): the writing processes then never import TFDS (~0.5 s of CPU each).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Mapping

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from data_ingest.clips import ClipShape, ClipSource, clip_digest, source_examples

# zstd level 1 instead of TFDS's fixed level 3: compressing is most of a shard's cost (a 16x64x64 clip of textured
# video: 1.7 ms at level 3, 0.9 ms at level 1), and level 1 gave the same size on platformer and textured clips.
# group_size 1 keeps random access to one record one decompression. Readers need not know: any level reads alike.
ARRAY_RECORD_OPTIONS = "group_size:1,zstd:1"
MIN_SHARDS = 8  # a split of at least this many sources gets this many shards: work for up to 8 writers at once
SHARD_BYTES = 512 << 20  # beyond that, about this much uncompressed clip data per shard


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard to write: ``sources`` as (source id, source), in order. Picklable: it is sent to a worker."""

    path: str
    sources: tuple[tuple[int, ClipSource], ...]
    shape: ClipShape
    stride: int
    num_actions: int


@dataclasses.dataclass(frozen=True)
class ShardResult:
    num_records: int
    num_bytes: int  # of the serialised records, before compression (what TFDS reports as a split's size)
    digests: tuple[str, ...]  # per record, in order (see ``clips.clip_digest``)


def plan_shards(clips_per_source: Sequence[int | None], shape: ClipShape) -> list[range]:
    """Splits one split's sources (in order) into contiguous shards of about equal clip count -> index ranges.

    A count of None (a source that must be loaded to be counted) weighs as one clip: such sources are split evenly.
    """
    weights = [1 if n is None else max(n, 0) for n in clips_per_source]
    if not weights:
        return []
    total = sum(weights)
    count = min(len(weights), max(MIN_SHARDS, math.ceil(total * shape.clip_bytes / SHARD_BYTES)))
    bounds, done = [0], 0
    for i, weight in enumerate(weights[:-1]):
        done += weight
        if len(bounds) < count and done * count >= len(bounds) * total:  # passed the next 1/count of the clips
            bounds.append(i + 1)
    bounds.append(len(weights))
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def write_shard(task: ShardTask) -> ShardResult:
    """Writes every clip of the task's sources as one ArrayRecord file; raises ValueError on a malformed clip."""
    digests, size = [], 0
    writer = ArrayRecordWriter(task.path, ARRAY_RECORD_OPTIONS)
    try:
        for source_id, source in task.sources:
            for key, example in source_examples(source, source_id, task.shape, stride=task.stride,
                                                num_actions=task.num_actions):
                record = encode_record(example)
                writer.write(record)
                size += len(record)
                digests.append(clip_digest(key, example))
    finally:
        writer.close()
    return ShardResult(len(digests), size, tuple(digests))


def encode_record(example: Mapping[str, Any]) -> bytes:
    """A clip example as TFDS serialises it for the clip features: a ``tf.train.Example`` whose ``frames`` and
    ``actions`` are raw little-endian bytes (TFDS's BYTES encoding) and whose ``source_id`` is an int64.

    Protocol-buffer wire format (stable by design): Example.features (field 1) -> Features.feature (1; a map, so
    entries of key 1 and value 2) -> Feature.bytes_list (1) or int64_list (3) -> their values (1; int64s packed).
    The frames are copied once, into the record.
    """
    frames = np.ascontiguousarray(example["frames"], np.uint8)
    actions = np.ascontiguousarray(example["actions"], "<i4")
    chunks = [*_map_entry(b"frames", 1, memoryview(frames).cast("B")),
              *_map_entry(b"actions", 1, actions.tobytes()),
              *_map_entry(b"source_id", 3, _varint(int(example["source_id"]) % (1 << 64)))]
    return b"".join([_tag_and_length(1, sum(len(c) for c in chunks)), *chunks])


def _map_entry(key: bytes, kind: int, values: bytes | memoryview) -> list[bytes | memoryview]:
    """One Features.feature entry: {key: Feature{kind: List{value: values}}} as chunks to join."""
    value_list = [_tag_and_length(1, len(values)), values]
    feature = [_tag_and_length(kind, sum(len(c) for c in value_list)), *value_list]
    entry = [_tag_and_length(1, len(key)), key, _tag_and_length(2, sum(len(c) for c in feature)), *feature]
    return [_tag_and_length(1, sum(len(c) for c in entry)), *entry]


def _tag_and_length(field: int, length: int) -> bytes:
    """The header of a length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


__all__ = ["ARRAY_RECORD_OPTIONS", "ShardResult", "ShardTask", "encode_record", "plan_shards", "write_shard"]
