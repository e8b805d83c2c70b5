"""`genie eval` and `genie inspect-actions` end to end on a toy run trained once for this module."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import write_preset
from PIL import Image

from genie_jax.cli import main
from genie_jax.data import ClipDataset
from genie_jax.evaluate import validation_clips

CLIPS = 4  # held-out clips evaluated: 2 batches of 2 worlds


@pytest.fixture(scope="module")
def toy_run(tiny_data, tmp_path_factory) -> Path:
    """Tokenizer, LAM and dynamics trained for 2 steps each on the tiny platformer (8-frame clips, 4 actions)."""
    root = tmp_path_factory.mktemp("eval_run")
    preset = write_preset(root / "tiny.py", steps=2)
    for stage in ("tokenizer", "lam", "dynamics"):
        assert main(["train", stage, "--config", preset, "--data", str(tiny_data), "--run", str(root / "run"),
                     "--no-progress"]) == 0
    return root / "run"


class _FakeI3D:
    """Cheap stand-in for I3D (tested on its own in test_fvd.py): a fixed random projection of each clip."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, frames_BTHWC: np.ndarray) -> np.ndarray:
        self.calls.append(frames_BTHWC.shape)
        flat = frames_BTHWC.reshape(len(frames_BTHWC), -1).astype(np.float64) / 255
        return flat @ np.random.default_rng(0).normal(size=(flat.shape[1], 6))


def _psnr_db(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) / 255) ** 2
    mse = mse.mean(axis=(-3, -2, -1))
    return np.where(mse > 0, np.minimum(10 * np.log10(1 / np.maximum(mse, 1e-30)), 100.0), 100.0)


def _check_figure(figure: dict, n: int) -> None:
    assert figure["n"] == n
    lo, hi = figure["ci"]
    assert lo <= figure["mean"] + 1e-9 and figure["mean"] <= hi + 1e-9


@pytest.mark.slow
def test_eval_end_to_end(toy_run, tiny_data, monkeypatch, capsys):
    fake = _FakeI3D()
    monkeypatch.setattr("genie_jax.metrics.fvd.i3d_features", lambda batch_size: fake)
    assert main(["eval", "--run", str(toy_run), "--data", str(tiny_data), "--clips", str(CLIPS), "--batch-size", "2",
                 "--seeds", "0", "1", "--resamples", "20"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((toy_run / "eval" / "report_validation.json").read_text())  # the default --out
    for row in ("tokenizer PSNR (dB)", "Delta_t PSNR t=4 (dB)", "FVD (7 frames)", "probe accuracy (chance",
                "next-frame PSNR h=7"):
        assert row in printed

    assert report["clips"] == report["generated_clips"] == CLIPS and report["window"] == 8
    _check_figure(report["tokenizer"]["psnr_db"], CLIPS)
    _check_figure(report["dynamics"]["token_accuracy_teacher_forced"], CLIPS)
    horizon = report["dynamics"]["horizon"]
    assert [step["h"] for step in horizon] == list(range(1, 8))  # 1 context frame, 7 generated in an 8-frame window
    for step in horizon:
        _check_figure(step["psnr_db"], CLIPS)
        assert 0.0 <= step["token_accuracy"]["mean"] <= 1.0 and len(step["psnr_db_per_seed"]) == 2

    # The "nothing moves" baseline, recomputed here from the evaluated clips alone.
    frames = validation_clips(ClipDataset(tiny_data), "validation", CLIPS)["frames"]
    expected = [_psnr_db(frames[:, 0], frames[:, h]).mean() for h in range(1, 8)]
    np.testing.assert_allclose([s["copy_last_frame_psnr_db"]["mean"] for s in horizon], expected, rtol=1e-4)

    control = report["controllability"]
    assert control["t"] == 4 and control["clips"] == CLIPS and len(control["per_seed"]) == 2
    assert control["delta_t_psnr_db"]["mean"] == pytest.approx(np.mean(control["per_seed"]), abs=1e-6)
    assert control["psnr_inferred_actions_db"] - control["psnr_random_actions_db"] == pytest.approx(
        control["delta_t_psnr_db"]["mean"], abs=1e-4)

    fvd = report["fvd"]
    assert fvd["clips"] == CLIPS and fvd["frames"] == 7 and len(fvd["per_seed"]) == 2
    assert fvd["fvd"]["mean"] == pytest.approx(np.mean(fvd["per_seed"])) and fvd["fvd"]["mean"] >= 0
    assert fake.calls == [(CLIPS, 7, 32, 32, 3)] * 3  # real clips once, generated clips once per seed

    latent = report["latent_actions"]
    assert latent["transitions"] == CLIPS * 7 and sum(latent["frequency"]) == pytest.approx(1.0)
    assert latent["dead_codes"] == sum(f == 0 for f in latent["frequency"])
    align = report["alignment"]
    assert 0.0 <= align["nmi"]["mean"] <= 1.0 and align["probe_split"] == "train"
    assert align["nmi_ceiling"] == ClipDataset(tiny_data).info.metadata["nmi_ceiling"]
    assert 0.0 <= align["probe"]["chance"]["mean"] <= 1.0 and align["probe"]["fit_transitions"] > 0


def test_eval_errors_name_the_problem(tmp_path, tiny_data, capsys):
    assert main(["eval", "--run", str(tmp_path / "nope"), "--data", str(tiny_data), "--no-fvd"]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--data", str(tiny_data), "--split", "test", "--no-fvd"]) == 2
    assert "no split 'test'" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--data", str(tiny_data), "--context-frames", "0"]) == 2
    assert "--context-frames must be >= 1" in capsys.readouterr().err


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [value for name, value in attrs if name in ("src", "href")]


@pytest.mark.slow
def test_inspect_actions_end_to_end(toy_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "inspect"
    assert main(["inspect-actions", "--run", str(toy_run), "--data", str(tiny_data), "--out", str(out),
                 "--contexts", "2", "--frames", "3", "--clips", str(CLIPS), "--scale", "2"]) == 0
    assert "index.html" in capsys.readouterr().out
    links = _Links()
    links.feed((out / "index.html").read_text())
    assert {"atlas.gif", "atlas.png", "effects.png", "usage.png", "confusion.png", "inspect.json"} <= set(links.targets)
    for target in links.targets:  # everything the page shows is a file beside it, nothing remote
        assert not re.match(r"^[a-z]+:", target) and (out / target).is_file(), target

    summary = json.loads((out / "inspect.json").read_text())
    num_actions, cell = len(summary["actions"]), 32 * 2 + 2  # 4 actions; 32 px frames at scale 2, 2 px padding
    with Image.open(out / "atlas.png") as atlas:
        assert atlas.size == (2 + (num_actions + 1) * cell, 14 + 2 + 2 * cell)  # label row, then 2 context rows
    with Image.open(out / "atlas.gif") as gif:
        assert gif.size == atlas.size and gif.n_frames >= 2
    confusion = np.array(summary["confusion"])
    assert confusion.shape == (num_actions, 6) and confusion.sum() == summary["true_actions_known"] == CLIPS * 7
    meanings = summary["true_action_names"]
    for a, action in enumerate(summary["actions"]):
        assert action["usage"] == pytest.approx(confusion[a].sum() / confusion.sum())
        expected = f"{a}:{meanings[confusion[a].argmax()]}" if confusion[a].sum() else f"{a}:unused"
        assert action["label"] == expected


def test_inspect_actions_on_video_without_true_actions(toy_run, tmp_path, capsys):
    """Real video carries no true actions: the atlas, effects and usage still come, labelled by id alone."""
    from ingest_fixtures import write_video

    from data_ingest.settings import IngestSettings
    from data_ingest.video_ingest import IngestOptions, ingest_video_sources

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"play_{i}.mp4", 90, seed=i, size=64)
    options = IngestOptions(settings=IngestSettings(height=32, width=32, clip_len=8, min_quality=0.0),
                            val_fraction=0.34)
    assert ingest_video_sources([str(videos)], tmp_path / "data", options, log=lambda _: None).exit_code == 0
    out = tmp_path / "inspect"
    assert main(["inspect-actions", "--run", str(toy_run), "--data", str(tmp_path / "data"), "--out", str(out),
                 "--contexts", "2", "--frames", "2", "--clips", "2"]) == 0
    links = _Links()
    links.feed((out / "index.html").read_text())
    assert {"atlas.gif", "atlas.png", "effects.png", "usage.png"} <= set(links.targets)
    assert "confusion.png" not in links.targets and not (out / "confusion.png").exists()
    for target in links.targets:
        assert (out / target).is_file(), target
    summary = json.loads((out / "inspect.json").read_text())
    assert summary["true_actions_known"] == 0 and summary["confusion"] is None and summary["transitions"] == 2 * 7
    assert [a["label"] for a in summary["actions"]] == [str(a) for a in range(len(summary["actions"]))]
    assert sum(a["usage"] for a in summary["actions"]) == pytest.approx(1.0)
