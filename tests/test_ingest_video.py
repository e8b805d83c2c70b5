"""End to end: a folder of real (generated) video, good and bad, into a clip dataset that genie_jax reads."""

import hashlib
import itertools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ingest_fixtures import frame_image, read_index, tree_snapshot, write_frame_folder, write_sidecar, write_video

from data_ingest.cli import main as ingest_main
from data_ingest.settings import IngestSettings
from data_ingest.video_ingest import IngestOptions, ingest_video_sources
from genie_jax.data import ClipDataset

CLIP = 8
SETTINGS = IngestSettings(height=32, width=32, clip_len=CLIP, resize="stretch")
OPTIONS = IngestOptions(settings=SETTINGS, val_fraction=0.25, test_fraction=0.2, seed=0)
MEANINGS = ["left", "right", "jump"]


def sidecar_actions(num_frames: int) -> list[int]:
    """Per source frame; within each group of three the majority (not the first) is k % 3."""
    return [((i // 3) + (1 if i % 3 == 0 else 0)) % 3 for i in range(num_frames - 1)]


def paused_frames(seed: int):
    """30 moving frames, a 1.5 s freeze, 0.5 s of black, 30 moving frames (30 fps)."""
    for i in range(30):
        yield frame_image(i, seed)
    for _ in range(45):
        yield frame_image(29, seed)
    for _ in range(15):
        yield np.zeros((128, 128, 3), np.uint8)
    for i in range(30, 60):
        yield frame_image(i, seed)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A folder the way users have them: several formats, a sidecar, junk, and broken files."""
    root = tmp_path_factory.mktemp("lib")
    v = root / "videos"
    (v / "sub").mkdir(parents=True)
    write_video(v / "run_a.mp4", 96, seed=1)
    write_video(v / "run_b.webm", 96, seed=2, codec="libvpx-vp9")
    write_video(v / "run_c.gif", 40, seed=3, fps=10, codec="gif")
    write_frame_folder(v / "frames_d", 40, seed=4)
    write_video(v / "sub" / "run_e.mp4", 120, seed=5)
    write_sidecar(v / "sub" / "run_e.mp4", sidecar_actions(120), MEANINGS)
    write_video(v / "sub" / "run_f.mkv", 96, seed=6)
    write_video(v / "sub" / "run_g.mov", 96, seed=7)
    write_video(v / "sub" / "run_h.avi", 96, seed=8, codec="mpeg4")
    write_video(v / "paused.mp4", 0, seed=9, frames=paused_frames(9))
    # Junk and bad input, each of which must be reported by name and never stop the run.
    (v / "notes.txt").write_text("not a video")
    (v / "broken.mp4").write_bytes(b"\x00\x01garbage" * 200)
    good = write_video(root / "good.mp4", 96, seed=10).read_bytes()
    (v / "truncated.mp4").write_bytes(good[: len(good) // 2])
    good_webm = write_video(root / "good.webm", 96, seed=10, codec="libvpx-vp9").read_bytes()
    (v / "cut.webm").write_bytes(good_webm[: len(good_webm) // 2])  # decodes cleanly, up to the cut
    (v / "alien.mp4").write_bytes(good.replace(b"avc1", b"zzzz"))  # a codec FFmpeg does not know
    (v / "zero.mp4").write_bytes(b"")
    write_video(v / "one_frame.mp4", 1, seed=11)
    write_video(v / "sliver.gif", 0, seed=12, fps=10, codec="gif", size=4,
                frames=(np.full((4, 4, 3), i * 20, np.uint8) for i in range(12)))
    bad_frames = write_frame_folder(v / "bad_frames", 20, seed=13)
    (bad_frames / "frame_0007.png").write_bytes(b"\x89PNG broken")
    write_video(v / "short_sidecar.mp4", 60, seed=14)
    write_sidecar(v / "short_sidecar.mp4", [0] * 10, MEANINGS)
    return v


@pytest.fixture(scope="module")
def ingested(library, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "data"
    before = tree_snapshot(library.parent, skip=out)
    report = ingest_video_sources([str(library)], out, OPTIONS, log=lambda _: None)
    assert tree_snapshot(library.parent, skip=out) == before  # nothing written outside --out
    return report


def by_name(report, suffix):
    [entry] = [s for s in report.manifest["sources"] if s["name"].endswith(suffix)]
    return entry


def test_bad_input_is_reported_by_name_and_the_rest_ingested(ingested):
    assert ingested.exit_code == 1 and ingested.dataset_written
    expect_failed = {"broken.mp4": "cannot open", "truncated.mp4": "cannot open", "cut.webm": "truncated: frames end",
                     "alien.mp4": "unsupported codec",
                     "zero.mp4": "cannot open", "sliver.gif": "absurd resolution 4x4",
                     "bad_frames": "unreadable image frame_0007.png", "short_sidecar.mp4": "has 10 actions"}
    for name, reason in expect_failed.items():
        entry = by_name(ingested, name)
        assert entry["status"] == "failed" and reason in entry["reason"], entry
        assert name in ingested.summary
    assert "too short" in by_name(ingested, "one_frame.mp4")["reason"]
    ok = [s["name"].rsplit("/", 1)[-1] for s in ingested.manifest["sources"] if s["status"] == "ok"]
    assert sorted(ok) == ["frames_d", "paused.mp4", "run_a.mp4", "run_b.webm", "run_c.gif", "run_e.mp4",
                          "run_f.mkv", "run_g.mov", "run_h.avi"]
    assert [p.rsplit("/", 1)[-1] for p in ingested.manifest["ignored"]] == ["notes.txt"]
    assert (ingested.out_dir / "summary.txt").read_text() == ingested.summary


def test_frames_accounting(ingested):
    for entry in ingested.manifest["sources"]:
        if entry["status"] != "ok":
            continue
        frames, dropped = entry["frames"], entry["dropped_frames"]
        assert frames["kept"] + sum(dropped.values()) == frames["resampled"], entry["name"]
        assert len(entry["sha256"]) == 64
    a = by_name(ingested, "run_a.mp4")
    assert a["frames"] == {"decoded": 96, "resampled": 32, "kept": 32}  # 30 -> 10 fps, 4 clips of 8
    paused = by_name(ingested, "paused.mp4")
    assert paused["dropped_frames"]["static"] >= 10 and paused["dropped_frames"]["blank"] == 5
    t = ingested.manifest["totals"]
    assert t["sources"] == {"ok": 9, "dropped": 1, "failed": 8}


def test_dataset_is_readable_and_split_by_source(ingested):
    ds = ClipDataset(ingested.out_dir)
    assert set(ds.info.num_clips) == {"train", "validation", "test"}
    seen: dict[str, set] = {}
    for split in ds.info.num_clips:
        clips = ds.split(split)
        assert len(clips) == ds.info.num_clips[split] > 0
        ids = {clips[i]["source_id"] for i in range(len(clips))}
        pixels = {hashlib.sha256(clips[i]["frames"].tobytes()).hexdigest() for i in range(len(clips))}
        seen[split] = (ids, pixels)
        for sid in ids:
            assert by_name(ingested, ds.info.sources[sid])["split"] == split
    splits = list(seen)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not seen[a][0] & seen[b][0], "a source is in two splits"
            assert not seen[a][1] & seen[b][1], "the same clip is in two splits"


def test_clips_are_resampled_and_actions_aligned(ingested):
    ds = ClipDataset(ingested.out_dir)
    assert ds.info.action_meanings == tuple(MEANINGS)
    actions_T = np.array(sidecar_actions(120))
    checked = 0
    for split in ds.info.num_clips:
        clips = ds.split(split)
        for i in range(len(clips)):
            rec = clips[i]
            name = ds.info.sources[rec["source_id"]]
            index = [read_index(f) for f in rec["frames"]]
            if name.endswith((".mp4", ".webm", ".mkv", ".mov", ".avi")) and "paused" not in name:
                assert np.diff(index).tolist() == [3] * (CLIP - 1), (name, index)  # 30 fps -> every third frame
            elif name.endswith(("run_c.gif", "frames_d")):
                assert np.diff(index).tolist() == [1] * (CLIP - 1)
            if name.endswith("run_e.mp4"):
                want = [int(np.bincount(actions_T[a:b]).argmax()) for a, b in itertools.pairwise(index)]
                assert rec["actions"].tolist() == want == [(j // 3) % 3 for j in index[:-1]]
                checked += 1
            else:
                assert (rec["actions"] == -1).all()
    assert checked == 5  # run_e: 120 frames at 30 fps -> 40 at 10 fps -> 5 clips of 8


def test_rerun_is_idempotent_and_redoes_nothing(ingested, library):
    fingerprint = ClipDataset(ingested.out_dir).info.fingerprint
    logs = []
    again = ingest_video_sources([str(library)], ingested.out_dir, OPTIONS, log=logs.append)
    assert ClipDataset(ingested.out_dir).info.fingerprint == fingerprint
    ok = [s for s in again.manifest["sources"] if s["status"] == "ok"]
    assert ok and all(s["reused"] for s in ok)
    assert "dataset already up to date" in logs
    assert len(list(ingested.out_dir.glob("tfds-*"))) == 1
    assert not list((ingested.out_dir / ".ingest" / "tmp").iterdir())


def test_cli(library, tmp_path, capsys):
    out = tmp_path / "cli"
    code = ingest_main([str(library / "run_a.mp4"), str(library / "run_b.webm"), str(library / "broken.mp4"),
                        "--out", str(out), "--size", "32", "--clip-len", str(CLIP), "--val-fraction", "0.5",
                        "--resize", "pad"])
    printed = capsys.readouterr()
    assert code == 1 and "broken.mp4: cannot open as video" in printed.out
    assert ClipDataset(out).info.num_clips == {"train": 4, "validation": 4}
    report = json.loads((out / "manifest.json").read_text())
    assert report["settings"]["resize"] == "pad" and report["dataset"]["fingerprint"]
    # Unusable arguments are refused before anything runs.
    assert ingest_main([str(library), "--out", str(tmp_path / "x"), "--fps", "0"]) == 2
    assert "--fps" in capsys.readouterr().err
    assert ingest_main([str(library), "synthetic:platformer", "--out", str(tmp_path / "y")]) == 2
    # A folder that is not ours is never touched.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert ingest_main([str(library / "run_a.mp4"), "--out", str(mine)]) == 2
    assert "neither empty" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep"
    # Nothing usable at all: no dataset, exit 2, but the report says why.
    assert ingest_main([str(library / "zero.mp4"), "--out", str(tmp_path / "none")]) == 2
    assert json.loads((tmp_path / "none" / "manifest.json").read_text())["error"] == "no source yielded a clip"


def test_workers_default_to_one_per_core(library, tmp_path, monkeypatch):
    import data_ingest.video_ingest as video_ingest
    from data_ingest.workers import available_cores

    seen = []

    def note_options(sources, out, options):
        seen.append(options)
        raise ValueError("noted")  # the CLI reports it as a usage error (exit 2): nothing is ingested

    monkeypatch.setattr(video_ingest, "ingest_video_sources", note_options)
    ingest_main([str(library / "run_a.mp4"), "--out", str(tmp_path / "a")])
    ingest_main([str(library / "run_a.mp4"), "--out", str(tmp_path / "b"), "--workers", "1"])
    assert [o.workers for o in seen] == [available_cores(), 1]
    assert ingest_main([str(library / "run_a.mp4"), "--out", str(tmp_path / "c"), "--workers", "0"]) == 2


def test_genie_ingest_loads_no_model_code(library, tmp_path):
    """`genie ingest` in a fresh process with two workers (shards written by the pool, TFDS imported before it):
    it never imports JAX or Grain, seconds of start-up it has no use for."""
    code = textwrap.dedent(f"""
        import sys, threading
        import data_ingest.video_ingest as video_ingest
        from genie_jax.cli import main
        executor, before_pool = video_ingest._executor, []
        def noted(workers):  # TFDS must be imported while this process has one thread (see ingest_video_sources)
            before_pool.append("tensorflow_datasets" in sys.modules and threading.active_count() == 1)
            return executor(workers)
        video_ingest._executor = noted
        status = main(["ingest", {str(library / "run_a.mp4")!r}, {str(library / "run_b.webm")!r}, "--out",
                       {str(tmp_path / "data")!r}, "--size", "32", "--clip-len", "8", "--val-fraction", "0.5",
                       "--workers", "2"])
        loaded = sorted(m for m in ("jax", "grain", "flax") if m in sys.modules)
        print(status, loaded, "tensorflow_datasets" in sys.modules, before_pool)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "0 [] True [True]", done.stdout[-2000:] + done.stderr[-2000:]
    assert ClipDataset(tmp_path / "data").info.num_clips == {"train": 4, "validation": 4}


@pytest.mark.slow
def test_workers_give_the_same_dataset(ingested, library, tmp_path):
    options = IngestOptions(settings=SETTINGS, val_fraction=0.25, test_fraction=0.2, seed=0, workers=2)
    report = ingest_video_sources([str(library)], tmp_path / "par", options, log=lambda _: None)
    assert report.manifest["dataset"]["fingerprint"] == ingested.manifest["dataset"]["fingerprint"]
    assert report.exit_code == 1


def _records(dataset: ClipDataset) -> dict[str, list[tuple]]:
    out = {}
    for split in dataset.info.num_clips:
        clips = dataset.split(split)
        out[split] = sorted((dataset.info.sources[c["source_id"]], c["frames"].tobytes(), c["actions"].tobytes())
                            for c in (clips[i] for i in range(len(clips))))
    return out


@pytest.mark.slow
def test_beam_build_gives_the_same_dataset(ingested, library, tmp_path, capsys, monkeypatch):
    """`--beam-runner`: the clips are cut by an Apache Beam pipeline (DirectRunner, two worker processes, so the
    sources really are pickled and shipped); records and fingerprint equal the plain build's."""
    from data_ingest.clip_dataset import GenieClips

    beam_splits = []
    beam_transform = GenieClips._beam_transform
    monkeypatch.setattr(GenieClips, "_beam_transform",
                        lambda self, split: beam_splits.append(split) or beam_transform(self, split))
    out = tmp_path / "beam"
    code = ingest_main([str(library), "--out", str(out), "--size", "32", "--clip-len", str(CLIP), "--resize",
                        "stretch", "--val-fraction", "0.25", "--test-fraction", "0.2", "--seed", "0",
                        "--beam-runner", "DirectRunner", "--beam-option", "direct_running_mode=multi_processing",
                        "--beam-option", "direct_num_workers=2"])
    assert code == 1  # the library's broken files, as in the plain run
    assert sorted(beam_splits) == ["test", "train", "validation"]
    manifest = json.loads((out / "genie_dataset.json").read_text())
    assert manifest["fingerprint"] == ingested.manifest["dataset"]["fingerprint"]
    assert _records(ClipDataset(out)) == _records(ClipDataset(ingested.out_dir))
    assert not list(out.glob(".ingest/tmp/*")), "the build's scratch (digests included) is cleaned up"
    assert ingest_main([str(library), "--out", str(tmp_path / "x"), "--beam-option", "a=b"]) == 2
    assert "--beam-option needs --beam-runner" in capsys.readouterr().err
