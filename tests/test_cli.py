"""The `genie` command end to end at a toy size, and its error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_preset
from PIL import Image

from genie_jax.cli import main

ROOT = Path(__file__).resolve().parents[1]


def genie(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genie_jax.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_ingest_train_rollout_end_to_end(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    preset = write_preset(tmp_path / "tiny.py", steps=2)
    done = genie("ingest", "synthetic:platformer", "--out", str(data), "--episodes", "4", "--frames-per-episode",
                 "24", "--size", "32", "--clip-len", "8", "--val-fraction", "0.5")
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("tokenizer", "lam", "dynamics"):
        done = genie("train", stage, "--config", preset, "--data", str(data), "--run", str(run), "--no-progress",
                     "--set", "train.steps=3")
        assert done.returncode == 0, done.stderr[-2000:]
        assert (run / stage / "metrics.jsonl").read_text().count("\n") >= 1
        assert (run / stage / "config.json").is_file() and any((run / stage / "tensorboard").iterdir())
    gif = tmp_path / "rollout.gif"
    done = genie("rollout", "--run", str(run), "--actions", "0,1,2,3,3", "--out", str(gif), "--scale", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(gif) as image:
        assert image.size == (64, 64)
    # an image as the start, and an out-of-range action
    Image.new("RGB", (50, 40), (10, 200, 30)).save(tmp_path / "start.png")
    done = genie("rollout", "--run", str(run), "--image", str(tmp_path / "start.png"), "--actions", "0,9",
                 "--out", str(tmp_path / "bad.gif"))
    assert done.returncode == 2 and "action id 9 is out of range" in done.stderr
    assert not (tmp_path / "bad.gif").exists()


def test_errors_name_the_thing_and_what_to_do(tmp_path, capsys):
    assert main(["rollout", "--run", str(tmp_path / "nope"), "--actions", "0", "--out", str(tmp_path / "x.gif")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main(["train", "lam", "--config", str(tmp_path / "missing.py"), "--data", str(tmp_path),
                 "--run", str(tmp_path / "r")]) == 2
    assert "missing.py does not exist" in capsys.readouterr().err
    assert main(["train", "lam", "--config", "configs/demo.py", "--data", str(tmp_path / "nodata"),
                 "--run", str(tmp_path / "r")]) == 2
    assert "genie ingest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "nosuchstage", "--config", "c", "--data", "d", "--run", "r"])
