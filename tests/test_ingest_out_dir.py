"""What `genie ingest` does with the dataset directory it is given: overwriting only its own files, refusing to
replace a dataset unasked, resuming after a kill mid-overwrite, keeping splits when sources are added, and
clear errors for unusable options, names and filters."""

import json
import os

import numpy as np
import pytest
from ingest_fixtures import write_sidecar, write_video

import data_ingest.video_ingest as video_ingest
from data_ingest.cli import main as ingest_main
from data_ingest.clips import check_split_options, split_draw, stable_splits
from data_ingest.download import rate_bytes
from data_ingest.process import frames_in_clips, process_source
from data_ingest.settings import IngestSettings
from data_ingest.sources import discover
from data_ingest.video_ingest import IngestOptions, ingest_video_sources
from genie_jax.data import ClipDataset

SETTINGS = IngestSettings(height=32, width=32, clip_len=8, resize="stretch")
OPTIONS = IngestOptions(settings=SETTINGS, val_fraction=0.5, seed=0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for i in range(3):
        write_video(folder / f"v{i}.mp4", 60, seed=20 + i, size=64)
    return folder


def ingest(sources, out, options=OPTIONS):
    return ingest_video_sources([str(s) for s in sources], out, options, log=lambda _: None)


def test_overwrite_deletes_only_the_dataset_s_own_records(videos, tmp_path):
    """A hand-edited manifest whose tfds_dir points outside --out (or at an absolute path) gets its manifest
    replaced, and nothing outside --out deleted."""
    victim = tmp_path / "victim"
    (victim / "x").mkdir(parents=True)
    (victim / "keep.txt").write_text("keep")
    for i, tfds_dir in enumerate(["../victim/x", str(victim), "my_videos/x", ".ingest"]):
        out = tmp_path / f"out{i}"
        (out / "my_videos").mkdir(parents=True)
        (out / "my_videos" / "keep.txt").write_text("keep")
        (out / "genie_dataset.json").write_text(json.dumps({"tfds_dir": tfds_dir}))
        report = ingest([videos / "v0.mp4", videos / "v1.mp4"], out, IngestOptions(settings=SETTINGS,
                                                                                     val_fraction=0.5, overwrite=True))
        assert report.exit_code == 0 and ClipDataset(out).info.num_clips
        assert (victim / "keep.txt").read_text() == "keep" and (victim / "x").is_dir()
        assert (out / "my_videos" / "keep.txt").read_text() == "keep"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "genie_dataset.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="genie_dataset.json is not a genie dataset manifest"):
        ingest([videos / "v0.mp4"], broken, IngestOptions(settings=SETTINGS, val_fraction=0, overwrite=True))
    assert (broken / "genie_dataset.json").read_text() == "[1, 2]"


def test_a_run_killed_while_overwriting_is_resumed(videos, tmp_path, monkeypatch):
    """--overwrite deletes the old records after making the work area: killed in between (here: the deletion
    fails), the next run, with or without --overwrite, resumes instead of refusing the folder."""
    out = tmp_path / "out"
    ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    (out / ".ingest").rename(tmp_path / "work-elsewhere")  # a dataset without its work area (copied, say)
    real_rmtree = video_ingest.shutil.rmtree

    def killed(path, *args, **kwargs):
        if os.path.basename(path).startswith("tfds-"):
            raise KeyboardInterrupt  # stands for SIGKILL halfway through deleting the old records
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(video_ingest.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest([videos / "v0.mp4"], out, IngestOptions(settings=SETTINGS, val_fraction=0, overwrite=True))
    monkeypatch.setattr(video_ingest.shutil, "rmtree", real_rmtree)
    assert not (out / "genie_dataset.json").exists() and (out / ".ingest").is_dir()
    report = ingest([videos / "v0.mp4"], out, IngestOptions(settings=SETTINGS, val_fraction=0))
    assert report.exit_code == 0 and ClipDataset(out).info.sources == ("/".join([str(videos), "v0.mp4"]),)
    assert len(list(out.glob("tfds-*"))) == 1  # the old records went with the new dataset's commit


def test_a_rerun_with_other_settings_needs_overwrite(videos, tmp_path):
    out = tmp_path / "out"
    ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    fingerprint = ClipDataset(out).info.fingerprint
    other = IngestSettings(height=16, width=16, clip_len=8, resize="stretch")
    with pytest.raises(FileExistsError, match=r"other settings \(height 32 -> 16, width 32 -> 16\).*--overwrite"):
        ingest([videos / "v0.mp4", videos / "v1.mp4"], out, IngestOptions(settings=other, val_fraction=0.5))
    assert ClipDataset(out).info.fingerprint == fingerprint
    ingest([videos / "v0.mp4", videos / "v1.mp4"], out, IngestOptions(settings=other, val_fraction=0.5,
                                                                         overwrite=True))
    assert ClipDataset(out).info.height == 16
    assert len(list((out / ".ingest" / "staged").iterdir())) == 2  # the 32x32 sources' staging went with it
    # Compared with the dataset there, not with the last run: an --overwrite run that wrote no dataset (too few
    # sources for the split) changes nothing.
    failed = ingest([videos / "v0.mp4"], out, IngestOptions(settings=SETTINGS, val_fraction=0.5, overwrite=True))
    assert failed.exit_code == 2 and ClipDataset(out).info.height == 16
    with pytest.raises(FileExistsError, match="other settings"):
        ingest([videos / "v0.mp4", videos / "v1.mp4"], out, IngestOptions(settings=SETTINGS, val_fraction=0.5))
    assert ingest([videos / "v0.mp4", videos / "v1.mp4"], out, IngestOptions(settings=other, val_fraction=0.5)
                  ).exit_code == 0
    # A dataset written before datasets recorded their settings: those of the run that wrote it count.
    manifest = json.loads((out / "genie_dataset.json").read_text())
    del manifest["ingest"]["settings"]
    (out / "genie_dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(FileExistsError, match="other settings"):
        ingest([videos / "v0.mp4", videos / "v1.mp4"], out, IngestOptions(settings=SETTINGS, val_fraction=0.5))


def test_splits_stay_put_when_sources_are_added(videos, tmp_path):
    keys = [f"source-{i}" for i in range(40)]
    before = stable_splits(keys, val_fraction=0.2, test_fraction=0.1, seed=3)
    after = stable_splits(keys + [f"new-{i}" for i in range(60)], val_fraction=0.2, test_fraction=0.1, seed=3)
    for split, ids in before.items():
        assert set(ids) == {i for i in after[split] if i < 40}, split
    assert 0 < len(after["validation"]) < 40 and 0 < len(after["test"]) < 30  # ~20 and ~10 of 100
    # Small datasets, where a held-out split is often empty and borrows a train source: still, no training source
    # ever moves into validation or test when sources are added.
    exceptions = 0
    for seed in range(300):
        for val, test in ((0.1, 0.05), (0.5, 0.1)):
            small = stable_splits(keys[:4], val_fraction=val, test_fraction=test, seed=seed)
            assert all(small.values()), small  # each split has a source, drawn or borrowed
            if all(split_draw(key, seed) < val + test for key in keys[:4]):
                exceptions += 1  # every source drew a held-out split: the highest trains only until one draws train
                continue
            for more in (5, 7):
                grown = stable_splits(keys[:more], val_fraction=val, test_fraction=test, seed=seed)
                assert not set(small["train"]) & set(grown["validation"] + grown["test"]), (seed, small, grown)
    assert exceptions < 60  # ~13% of the 300 at 0.6 held out, ~0 at 0.15
    assert stable_splits(keys, val_fraction=0.2, seed=4) != stable_splits(keys, val_fraction=0.2, seed=3)
    assert stable_splits(["a", "b"], val_fraction=0.5, seed=0) in ({"train": [0], "validation": [1]},
                                                                   {"train": [1], "validation": [0]})
    with pytest.raises(ValueError, match="cannot fill train and validation"):
        stable_splits(["a"], val_fraction=0.1, seed=0)
    # End to end: ingest splits by the sources' content hashes, and the first two videos keep their splits when
    # the third joins.
    out = tmp_path / "out"
    first = ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    second = ingest([videos / "v0.mp4", videos / "v1.mp4", videos / "v2.mp4"], out)
    sources = second.manifest["sources"]
    expect = stable_splits([r["media_sha256"] for r in sources], val_fraction=0.5, seed=0)
    assert {r["name"]: r["split"] for r in sources} == {sources[i]["name"]: split for split, ids in expect.items()
                                                         for i in ids}
    split_of = {r["name"]: r["split"] for r in sources}
    assert all(split_of[r["name"]] == r["split"] for r in first.manifest["sources"])
    assert not any(r.get("was_train") for r in sources) and "warning" not in second.summary
    # A dataset split another way (an older version's): sources it trained on that are now held out are named.
    manifest = json.loads((out / "genie_dataset.json").read_text())
    del manifest["ingest"]["build_key"]
    manifest["splits"] = {"train": [r["name"] for r in sources]}
    (out / "genie_dataset.json").write_text(json.dumps(manifest))
    third = ingest([videos / "v0.mp4", videos / "v1.mp4", videos / "v2.mp4"], out)
    held = [r["name"] for r in third.manifest["sources"] if r["split"] != "train"]
    assert held and [r["name"] for r in third.manifest["sources"] if r.get("was_train")] == held
    assert "warning: in train in the dataset this one replaces" in third.summary
    # A sidecar's labels are not the pictures: correcting them moves no source (the split draws on the pictures).
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    (labelled / "v.mp4").write_bytes((videos / "v0.mp4").read_bytes())
    write_sidecar(labelled / "v.mp4", [0] * 59, ["a"])
    [entry] = ingest([labelled], tmp_path / "labelled_out", IngestOptions(settings=SETTINGS, val_fraction=0)
                     ).manifest["sources"]
    assert entry["media_sha256"] == sources[0]["media_sha256"] != entry["sha256"]


def test_unusable_options_out_dirs_and_names_are_reported_clearly(videos, tmp_path, capsys):
    for bad in ({"fps": float("inf")}, {"blank_std": -1}, {"min_quality": 2}, {"min_seconds": float("inf")}):
        with pytest.raises(ValueError, match="must be"):
            IngestSettings(**bad)
    with pytest.raises(ValueError, match="--seed must be an integer >= 0"):
        check_split_options(val_fraction=0.1, test_fraction=0, seed=-1)
    video = str(videos / "v0.mp4")
    assert ingest_main([video, "--out", str(tmp_path / "a"), "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err and not (tmp_path / "a").exists()  # refused before any work
    (tmp_path / "file").write_text("")
    assert ingest_main([video, "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "cannot create --out" in capsys.readouterr().err
    # A source whose name is not UTF-8 fails by that name, escaped, and the rest is ingested.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "good.mp4").write_bytes((videos / "v0.mp4").read_bytes())
    (mixed / os.fsdecode(b"bad\xff.mp4")).write_bytes(b"not a video")
    report = ingest([mixed], tmp_path / "mixed_out", IngestOptions(settings=SETTINGS, val_fraction=0))
    assert report.exit_code == 1 and "bad\\udcff.mp4: cannot open" in report.summary
    assert (tmp_path / "mixed_out" / "summary.txt").read_text() == report.summary


@pytest.mark.parametrize("spec, reason", [("builtins:len", "scored a clip 8.0, not in [0, 1]"),
                                          ("os:getcwd", "failed: TypeError")])
def test_a_bad_quality_filter_fails_the_source_by_name(videos, tmp_path, spec, reason):
    settings = IngestSettings(height=32, width=32, clip_len=8, quality_filter=spec)
    result = process_source(discover([str(videos / "v0.mp4")], tmp_path).specs[0], settings, str(tmp_path))
    assert result["status"] == "failed" and result["reason"].startswith(f"--quality-filter {spec} {reason}")


def test_linked_folders_are_searched_once(videos, tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "linked").symlink_to(videos)
    (root / "sub" / "loop").symlink_to(root)
    found = discover([str(root)], tmp_path / "out")
    assert sorted(s.name.rsplit("/", 1)[-1] for s in found.specs) == ["v0.mp4", "v1.mp4", "v2.mp4"]


def test_frames_of_near_duplicate_clips_are_counted_as_dropped(videos, tmp_path):
    """A re-encode (here: the same video with a byte appended, so another file) adds no clips: its frames count
    as dropped near-duplicates, not as kept, and the frame counts still add up."""
    folder = tmp_path / "copies"
    folder.mkdir()
    (folder / "a.mp4").write_bytes((videos / "v0.mp4").read_bytes())
    (folder / "b.mp4").write_bytes((videos / "v0.mp4").read_bytes() + b"\0")
    settings = IngestSettings(height=32, width=32, clip_len=8, stride=4, resize="stretch")
    report = ingest([folder], tmp_path / "out", IngestOptions(settings=settings, val_fraction=0))
    a, b = report.manifest["sources"]
    assert a["frames"]["kept"] == 20 and a["dropped_frames"]["near_duplicate"] == 0  # clips at 0, 4, 8, 12 of 20
    assert b["status"] == "dropped" and b["frames"]["kept"] == 0 and b["dropped_frames"]["near_duplicate"] == 20
    for source in (a, b):
        assert source["frames"]["kept"] + sum(source["dropped_frames"].values()) == source["frames"]["resampled"]
    assert report.manifest["totals"]["frames"]["kept"] == 20 and "near duplicate 20" in report.summary
    assert frames_in_clips(np.array([[1, 0], [0, 4], [0, 0], [0, 20]]), 8) == 4 + 8 + 8 + 8


def test_sources_staged_by_an_older_version_are_deleted_after_a_build(videos, tmp_path):
    out = tmp_path / "out"
    ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    staged = out / ".ingest" / "staged"
    old = staged / "0123456789abcdef01234567"
    old.mkdir()
    (old / "result.json").write_text(json.dumps({"result_version": 2}))
    ours = sorted(p.name for p in staged.iterdir() if p != old)
    ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    assert sorted(p.name for p in staged.iterdir()) == ours


def test_download_and_game_options_are_checked_before_any_work(tmp_path, capsys):
    for flags, message in ((["--rate-limit", "garbage"], "--rate-limit"), (["--retry-wait", "-5"], "--retry-wait"),
                           (["--download-retries", "-1"], "--download-retries"),
                           (["--procgen-levels", "0"], "--procgen-levels"),
                           (["--procgen-mode", "odd"], "--procgen-mode")):
        assert ingest_main(["http://127.0.0.1:9/x.mp4", "--out", str(tmp_path / "o"), *flags]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_small_option_cases(videos, tmp_path, capsys):
    # --stride equal to --clip-len is no --stride: the same staged sources, nothing redone.
    assert IngestSettings(stride=16).stride is None and IngestSettings(stride=16).digest() == IngestSettings().digest()
    assert rate_bytes("4M") == 4 << 20 and rate_bytes("9" * 400) is None and rate_bytes("garbage") is None
    assert ingest_main(["synthetic:platformer", "--out", str(tmp_path / "s"), "--test-fraction", "0.2"]) == 2
    assert "--test-fraction" in capsys.readouterr().err
    # A source staged before results carried the pictures' hash is reused, not a KeyError.
    out = tmp_path / "out"
    ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    for result in (out / ".ingest" / "staged").glob("*/result.json"):
        result.write_text(json.dumps({k: v for k, v in json.loads(result.read_text()).items() if k != "media_sha256"}))
    again = ingest([videos / "v0.mp4", videos / "v1.mp4"], out)
    assert again.exit_code == 0 and all(r["reused"] and r["media_sha256"] for r in again.manifest["sources"])
