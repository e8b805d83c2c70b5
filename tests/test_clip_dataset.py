"""Clip dataset: writing (data_ingest) and reading (genie_jax.data) through the on-disk format only."""

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from data_ingest.clip_dataset import assign_splits, cut_clips, write_clip_dataset
from data_ingest.cli import add_ingest_arguments, run_ingest
from data_ingest.platformer import ACTION_MEANINGS, PlatformerConfig, play_episode
from data_ingest.synthetic import PlatformerSource, episode_seed, ingest_platformer, normalized_mutual_info
from genie_jax.data import ClipDataset, DataError, Loader, global_batch
from genie_jax.evaluate import validation_clips

ROOT = Path(__file__).resolve().parents[1]
EPISODES, FRAMES, CLIP = 6, 40, 8


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "clips"
    return ingest_platformer(out, episodes=EPISODES, frames_per_episode=FRAMES, size=32, clip_len=CLIP,
                             val_fraction=0.34, seed=3)


@pytest.fixture(scope="module")
def ds(dataset_dir) -> ClipDataset:
    return ClipDataset(dataset_dir)


def test_nmi():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 5000)
    assert normalized_mutual_info(a, a) == pytest.approx(1.0)
    assert normalized_mutual_info(a, (a + 2) % 6) == pytest.approx(1.0)  # label names do not matter
    assert normalized_mutual_info(a, rng.integers(0, 6, 5000)) < 0.01
    assert normalized_mutual_info(a, np.zeros_like(a)) == 0.0
    # A known value: sklearn.metrics.normalized_mutual_info_score([0,0,1,1], [0,0,1,2]) = 0.8
    assert normalized_mutual_info([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.8)


def test_cut_clips_and_assign_splits():
    frames = np.zeros((10, 2, 2, 3), np.uint8)
    clips = list(cut_clips(frames, np.arange(9), clip_len=4, stride=3))
    assert len(clips) == 3 and [c[1].tolist() for c in clips] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    clips = list(cut_clips(frames, None, clip_len=4, stride=4))
    assert len(clips) == 2 and clips[0][1].tolist() == [-1, -1, -1]
    splits = assign_splits(10, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert splits == assign_splits(10, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert sorted(sum(splits.values(), [])) == list(range(10))
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [7, 2, 1]
    with pytest.raises(ValueError, match="whole source"):
        assign_splits(1, val_fraction=0.1, seed=0)


def test_manifest(dataset_dir, ds):
    m = json.loads((dataset_dir / "genie_dataset.json").read_text())
    assert m["format"] == "genie_clips" and m["version"] == 1
    assert (m["clip_len"], m["height"], m["width"]) == (CLIP, 32, 32)
    assert m["action_meanings"] == list(ACTION_MEANINGS)
    assert m["num_clips"] == {"train": 4 * (FRAMES // CLIP), "validation": 2 * (FRAMES // CLIP)}  # 4+2 episodes
    assert len(m["sources"]) == EPISODES and len(m["fingerprint"]) == 64
    assert 0 < m["nmi_ceiling"] <= 1 and abs(sum(m["action_frequency"].values()) - 1) < 1e-3
    assert ds.info.num_clips == m["num_clips"] and ds.info.fingerprint == m["fingerprint"]
    assert ds.info.clip_len == CLIP and ds.info.action_meanings == ACTION_MEANINGS
    assert not [p for p in dataset_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_shards_are_zstd_level_1_and_tfds_is_left_as_it_was(dataset_dir):
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader

    shards = sorted(dataset_dir.glob("tfds/**/*.array_record*"))
    assert shards
    for shard in shards:
        reader = ArrayRecordReader(str(shard))
        assert "zstd:1," in reader.writer_options_string() + ",", (shard, reader.writer_options_string())
        reader.close()
    adapter = tfds.core.file_adapters.ADAPTER_FOR_FORMAT[tfds.core.FileFormat.ARRAY_RECORD]
    assert adapter is tfds.core.file_adapters.ArrayRecordFileAdapter  # the build's swap is undone


def test_round_trip_in_process(ds):
    cfg = PlatformerConfig(size=32)
    episodes = {}
    for split in ("train", "validation"):
        clips = ds.split(split)
        assert len(clips) == ds.info.num_clips[split]
        for i in range(len(clips)):
            rec = clips[i]
            assert rec["frames"].shape == (CLIP, 32, 32, 3) and rec["frames"].dtype == np.uint8
            assert rec["actions"].shape == (CLIP - 1,) and rec["actions"].dtype == np.int32
            sid = rec["source_id"]
            if sid not in episodes:
                episodes[sid] = play_episode(episode_seed(3, sid), FRAMES, cfg)
            ep = episodes[sid]
            # The record is exactly one clip of its episode, actions aligned with frames.
            starts = [s for s in range(0, FRAMES - CLIP + 1, CLIP)
                      if np.array_equal(ep.frames_THWC[s:s + CLIP], rec["frames"])]
            assert len(starts) == 1
            np.testing.assert_array_equal(ep.actions_T[starts[0]:starts[0] + CLIP - 1], rec["actions"])


def test_split_by_source(ds):
    ids = {s: {ds.split(s)[i]["source_id"] for i in range(len(ds.split(s)))} for s in ("train", "validation")}
    assert ids["train"] and ids["validation"] and not ids["train"] & ids["validation"]
    named = ds.info.metadata["splits"]
    assert {ds.info.sources[i] for i in ids["validation"]} == set(named["validation"])


def test_records_are_in_source_order_and_evaluation_draws_across_them(ds):
    split = ds.split("train")
    stored = [split[i] for i in range(len(split))]
    source_ids = [int(r["source_id"]) for r in stored]
    assert source_ids == sorted(source_ids)  # written source after source
    drawn = validation_clips(ds, "train", len(stored))["frames"]
    assert sorted(f.tobytes() for f in drawn) == sorted(r["frames"].tobytes() for r in stored)  # each clip once
    first = validation_clips(ds, "train", 4)["frames"]
    np.testing.assert_array_equal(first, drawn[:4])  # a fixed draw: the same clips every call, any prefix a sample
    source_of = {r["frames"].tobytes(): int(r["source_id"]) for r in stored}
    assert len({source_of[f.tobytes()] for f in first}) > 1 and len({source_ids[i] for i in range(4)}) == 1


def test_readable_in_a_fresh_process_without_data_ingest(dataset_dir):
    code = textwrap.dedent(f"""
        import json, sys
        import tensorflow_datasets as tfds
        out = {str(dataset_dir)!r}
        m = json.load(open(out + "/genie_dataset.json"))
        src = tfds.builder_from_directory(out + "/" + m["tfds_dir"]).as_data_source("validation")
        assert len(src) == m["num_clips"]["validation"], len(src)
        assert src[0]["frames"].shape == ({CLIP}, 32, 32, 3) and str(src[0]["frames"].dtype) == "uint8"
        from genie_jax.data import ClipDataset
        assert ClipDataset(out).split("train")[0]["frames"].shape == ({CLIP}, 32, 32, 3)
        assert "data_ingest" not in sys.modules and "tensorflow" not in sys.modules
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env,
                         timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


def test_global_batch_is_deterministic(ds):
    a = global_batch(ds, "train", 3, 4, seed=11)
    b = global_batch(ds, "train", 3, 4, seed=11)
    for k in ("frames", "actions", "source_id"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["frames"].shape == (4, CLIP, 32, 32, 3) and a["frames"].dtype == np.uint8
    assert a["actions"].shape == (4, CLIP - 1) and a["source_id"].shape == (4,)
    assert not np.array_equal(a["frames"], global_batch(ds, "train", 4, 4, seed=11)["frames"])
    assert not np.array_equal(a["frames"], global_batch(ds, "train", 3, 4, seed=12)["frames"])
    short = global_batch(ds, "train", 3, 4, seed=11, num_frames=5)
    np.testing.assert_array_equal(short["frames"], a["frames"][:, :5])
    np.testing.assert_array_equal(short["actions"], a["actions"][:, :4])
    # Steps past the first epoch still work (reshuffled epochs).
    n = ds.info.num_clips["train"]
    far = global_batch(ds, "train", 2 * n, 4, seed=11)
    assert far["frames"].shape == a["frames"].shape


def test_loader_matches_global_batch_with_sharding(ds):
    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    batch = 2 * len(jax.devices())
    with Loader(ds, "train", batch, seed=5, start_step=7, sharding=sharding, num_frames=6) as loader:
        for step in (7, 8):
            got = next(loader)
            want = global_batch(ds, "train", step, batch, seed=5, num_frames=6)
            assert isinstance(got["frames"], jax.Array) and got["frames"].dtype == np.uint8
            assert got["frames"].sharding.is_equivalent_to(sharding, 5)
            for k in want:
                np.testing.assert_array_equal(np.asarray(got[k]), want[k])
            assert loader.next_step == step + 1
    with Loader(ds, "validation", 2, seed=0, sharding=None) as loader:
        got = next(loader)
        np.testing.assert_array_equal(np.asarray(got["frames"]), global_batch(ds, "validation", 0, 2, 0)["frames"])


def test_loader_on_four_devices(dataset_dir):
    code = textwrap.dedent(f"""
        import jax, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec
        from genie_jax.data import ClipDataset, Loader, global_batch
        assert len(jax.devices()) == 4
        ds = ClipDataset({str(dataset_dir)!r})
        mesh = jax.make_mesh((2, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
        sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        with Loader(ds, "train", 8, seed=1, start_step=2, sharding=sharding) as loader:
            got = next(loader)
        want = global_batch(ds, "train", 2, 8, seed=1)
        assert len(got["frames"].addressable_shards) == 4
        assert got["frames"].addressable_shards[0].data.shape == (2, {CLIP}, 32, 32, 3)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), want[k])
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


def test_data_errors(tmp_path, ds):
    with pytest.raises(DataError, match=r"does not exist.*genie ingest"):
        ClipDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a genie dataset"):
        ClipDataset(tmp_path / "empty")
    with pytest.raises(DataError, match=r"no split 'test'.*train, validation"):
        ds.split("test")
    with pytest.raises(DataError, match="num_frames"):
        global_batch(ds, "train", 0, 2, 0, num_frames=CLIP + 1)


def test_refuses_to_overwrite_and_is_reproducible(dataset_dir, tmp_path):
    fingerprint = ClipDataset(dataset_dir).info.fingerprint
    kwargs = dict(episodes=EPISODES, frames_per_episode=FRAMES, size=32, clip_len=CLIP, val_fraction=0.34, seed=3)
    with pytest.raises(FileExistsError, match="already holds a complete genie dataset"):
        ingest_platformer(dataset_dir, **kwargs)
    out = ingest_platformer(tmp_path / "again", **kwargs)
    assert ClipDataset(out).info.fingerprint == fingerprint  # same inputs, same records
    ingest_platformer(out, **kwargs, overwrite=True)
    assert ClipDataset(out).info.fingerprint == fingerprint
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="neither empty nor a genie dataset"):
        ingest_platformer(tmp_path / "mine", **kwargs, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_failed_write_leaves_nothing(tmp_path):
    class Broken:
        name = "broken"

        def load(self):
            raise RuntimeError("decoder crashed")

    good = PlatformerSource("ok", 1, 20, PlatformerConfig(size=32))
    sources = [good, Broken(), PlatformerSource("ok2", 2, 20, PlatformerConfig(size=32))]
    with pytest.raises(RuntimeError, match="decoder crashed"):
        write_clip_dataset(tmp_path / "out", sources, clip_len=8, height=32, width=32,
                           action_meanings=ACTION_MEANINGS, val_fraction=0.34, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_ingest_arguments(parser)
    assert run_ingest(parser.parse_args(["videos/", "--out", str(tmp_path / "x")])) == 2
    assert "videos/: no such file or directory" in capsys.readouterr().out  # real video: see test_ingest_*.py
    args = parser.parse_args(["synthetic:platformer", "--out", str(tmp_path / "d"), "--episodes", "3",
                              "--frames-per-episode", "20", "--size", "32", "--clip-len", "8", "--stride", "4",
                              "--val-fraction", "0.3"])
    assert run_ingest(args) == 0
    out = capsys.readouterr().out
    assert "train 8, validation 4 clips" in out and str(tmp_path / "d") in out
    assert run_ingest(args) == 2 and "--overwrite" in capsys.readouterr().err
