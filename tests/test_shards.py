"""The parallel dataset build: records encoded without TFDS, shards planned and written by a process pool."""

import concurrent.futures as cf
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_ingest import clip_dataset
from data_ingest.clip_dataset import GenieClips, GenieClipsConfig, build_clip_records, fingerprint_of
from data_ingest.clips import ClipShape
from data_ingest.shards import MIN_SHARDS, SHARD_BYTES, encode_record, plan_shards
from data_ingest.staging import StagedClips, StageWriter
from data_ingest.workers import pool_context

SHAPE = ClipShape(clip_len=4, height=8, width=8)
MEANINGS = ["left", "right", "jump"]


def _features(shape: ClipShape) -> tfds.features.FeaturesDict:
    config = GenieClipsConfig(name="t", clip_len=shape.clip_len, height=shape.height, width=shape.width)
    builder = GenieClips(sources=[], splits={}, stride=1, action_meanings=[], config=config, data_dir="/nonexistent")
    return builder.info.features


@pytest.mark.parametrize("source_id", [0, 1, 127, 128, 300, 2**40])
def test_record_encoding_is_what_tfds_writes_and_reads(source_id):
    from tensorflow_datasets.core import example_serializer
    from tensorflow_datasets.proto import tf_example_pb2

    rng = np.random.default_rng(source_id % 1000)
    example = {"frames": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
               "actions": np.array([-1, 0, 2], np.int32), "source_id": np.int64(source_id)}
    features = _features(SHAPE)
    theirs = example_serializer.ExampleSerializer(features.get_serialized_info()).serialize_example(
        features.encode_example(example))
    ours = encode_record(example)
    # TFDS's map order varies from run to run, so the bytes may differ in order only: compare the parsed protos.
    assert len(ours) == len(theirs)
    assert tf_example_pb2.Example.FromString(ours) == tf_example_pb2.Example.FromString(theirs)
    decoded = features.deserialize_example_np(ours)
    np.testing.assert_array_equal(decoded["frames"], example["frames"])
    np.testing.assert_array_equal(decoded["actions"], example["actions"])
    assert int(decoded["source_id"]) == source_id


def test_shard_plans():
    def check(counts, shape=SHAPE):
        shards = plan_shards(counts, shape)
        assert shards[0].start == 0 and shards[-1].stop == len(counts)
        assert all(a.stop == b.start for a, b in zip(shards, shards[1:])) and all(len(s) for s in shards)
        return shards

    assert plan_shards([], SHAPE) == []
    assert len(check([5])) == 1
    assert len(check([5, 5, 5])) == 3  # fewer sources than MIN_SHARDS: one each
    even = check([10] * 32)
    assert len(even) == MIN_SHARDS and {len(s) for s in even} == {32 // MIN_SHARDS}
    assert len(check([None] * 20)) == MIN_SHARDS  # uncounted sources are spread evenly too
    # A big source and many small: the big one gets a shard to itself, the rest are grouped.
    lopsided = check([1000] + [10] * 100)
    assert lopsided[0] == range(0, 1)
    # Large splits: about SHARD_BYTES of clips a shard.
    big = ClipShape(clip_len=16, height=64, width=64)
    per_source = SHARD_BYTES // big.clip_bytes // 4
    assert len(check([per_source] * 400, big)) == 100


def _staged(tmp_path: Path, rng: np.random.Generator, count: int) -> list[StagedClips]:
    sources = []
    for s in range(count):
        writer = StageWriter(tmp_path, f"src{s}")
        clips = int(rng.integers(1, 6))
        for c in range(clips):
            frames = rng.integers(0, 256, (SHAPE.clip_len, SHAPE.height, SHAPE.width, 3), dtype=np.uint8)
            writer.add(frames, rng.integers(-1, 2, SHAPE.clip_len - 1), signature=f"{s}-{c}", position=(0, c))
        writer.commit({"status": "ok"}, SHAPE.clip_len)
        keep = tuple(i for i in range(clips) if (s + i) % 4)  # some clips left out, as near-duplicates are
        sources.append(StagedClips(name=f"src{s}", path=str(tmp_path / ".ingest" / "staged" / f"src{s}"),
                                   clip_shape=(SHAPE.clip_len, SHAPE.height, SHAPE.width, 3), keep=keep,
                                   action_map=(2, 0)))
    return sources


def _records(tfds_dir: Path) -> dict[str, list[tuple]]:
    sources = tfds.builder_from_directory(str(tfds_dir)).as_data_source()
    return {split: sorted((int(r["source_id"]), r["frames"].tobytes(), r["actions"].tobytes())
                          for r in (src[i] for i in range(len(src))))
            for split, src in sources.items()}


def test_parallel_build_equals_tfds_own(tmp_path):
    """Shards written by two worker processes hold what TFDS's own builder writes from the same sources: the same
    records, split sizes and fingerprint; and the files do not depend on the number of workers."""
    sources = _staged(tmp_path / "staged", np.random.default_rng(0), count=21)
    splits = {"train": list(range(0, 21, 2)) + list(range(1, 12, 2)), "validation": list(range(13, 21, 2))}
    splits = {name: sorted(ids) for name, ids in splits.items()}
    kwargs = dict(clip_len=SHAPE.clip_len, stride=SHAPE.clip_len, height=SHAPE.height, width=SHAPE.width,
                  action_meanings=MEANINGS)
    (tmp_path / "pool").mkdir()
    with cf.ProcessPoolExecutor(2, mp_context=pool_context()) as pool:
        pooled = build_clip_records(tmp_path / "pool", sources, splits, executor=pool, **kwargs)
    (tmp_path / "here").mkdir()
    here = build_clip_records(tmp_path / "here", sources, splits, **kwargs)

    config = GenieClipsConfig(name="t4_8x8", clip_len=4, height=8, width=8)
    with clip_dataset._quiet_tfds(), clip_dataset._fast_array_record():
        reference = GenieClips(sources=sources, splits=splits, stride=SHAPE.clip_len, action_meanings=MEANINGS,
                               config=config, data_dir=str(tmp_path / "tfds"), file_format="array_record")
        reference.download_and_prepare(download_dir=str(tmp_path / "downloads"))

    assert _records(pooled.tfds_dir) == _records(Path(reference.data_dir))
    assert pooled.fingerprint == here.fingerprint == fingerprint_of(reference.clip_digests)
    pooled_info = tfds.builder_from_directory(str(pooled.tfds_dir)).info
    for split in splits:
        assert pooled.num_clips[split] == reference.info.splits[split].num_examples
        assert pooled_info.splits[split].num_bytes == reference.info.splits[split].num_bytes
    assert len(pooled_info.splits["train"].shard_lengths) == MIN_SHARDS  # 17 sources: work for 8 writers
    files = sorted(p.name for p in pooled.tfds_dir.glob("*array_record*"))
    assert files == sorted(p.name for p in here.tfds_dir.glob("*array_record*"))
    assert all((pooled.tfds_dir / f).read_bytes() == (here.tfds_dir / f).read_bytes() for f in files)


def test_malformed_clip_is_a_clear_error_from_a_worker(tmp_path):
    sources = _staged(tmp_path / "staged", np.random.default_rng(1), count=3)
    with cf.ProcessPoolExecutor(2, mp_context=pool_context()) as pool, \
            pytest.raises(ValueError, match=r"action 2 outside \[-1, 2\)"):
        build_clip_records(tmp_path, sources, {"train": [0, 1], "validation": [2]}, clip_len=SHAPE.clip_len,
                           stride=SHAPE.clip_len, height=SHAPE.height, width=SHAPE.width,
                           action_meanings=MEANINGS[:2], executor=pool)


class _Episode:
    """An in-memory source (``load()``); ``frames`` below the clip length yields no clip."""

    def __init__(self, name: str, frames: int):
        self.name, self._frames = name, frames

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self._frames)
        return rng.integers(0, 256, (self._frames, 8, 8, 3), dtype=np.uint8), np.zeros(self._frames - 1, np.int32)


def test_sources_without_clips_leave_empty_shards_that_read(tmp_path):
    from data_ingest.clip_dataset import write_clip_dataset
    from genie_jax.data import ClipDataset

    episodes = [_Episode(f"e{i}", 2 if i in (1, 3) else 12) for i in range(6)]  # e1, e3: shorter than a clip
    out = write_clip_dataset(tmp_path / "d", episodes, clip_len=4, height=8, width=8, action_meanings=["a"],
                             val_fraction=0.34, seed=0)
    dataset = ClipDataset(out)
    builder = tfds.builder_from_directory(str(out / json.loads((out / "genie_dataset.json").read_text())["tfds_dir"]))
    assert 0 in builder.info.splits["train"].shard_lengths  # the premise: an empty shard was written
    for split, count in dataset.info.num_clips.items():
        clips = dataset.split(split)
        long_enough = [name for name in dataset.info.metadata["splits"][split] if name not in ("e1", "e3")]
        assert count == len(clips) == 3 * len(long_enough)
        assert all(clips[i]["frames"].shape == (4, 8, 8, 3) for i in range(count))
