"""Kill -9 an ingest at any moment, run the same command again: the dataset equals an uninterrupted run's."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ingest_fixtures import write_video

from genie_jax.data import ClipDataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    videos = tmp_path_factory.mktemp("resume") / "videos"
    videos.mkdir()
    for i in range(10):
        write_video(videos / f"run_{i:02d}.mp4", 240, seed=100 + i)
    return videos


def ingest_command(library: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "data_ingest.cli", str(library), "--out", str(out), "--clip-len", "8",
            "--stride", "4", "--val-fraction", "0.2", "--test-fraction", "0.1", "--seed", "3"]


def run(library: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(ingest_command(library, out), capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def kill_when(library: Path, out: Path, ready) -> bool:
    """Starts an ingest, SIGKILLs it as soon as ``ready(out)`` holds; False if it finished first."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(ingest_command(library, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        while proc.poll() is None:
            if ready(out):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.001)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def staged(out: Path) -> list[Path]:
    return sorted((out / ".ingest" / "staged").glob("*/result.json"))


@pytest.fixture(scope="module")
def reference(library, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "data"
    result = run(library, out)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "genie_dataset.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["processing", "building"])
def test_kill_and_resume(library, reference, tmp_path, moment):
    out = tmp_path / "data"
    if moment == "processing":
        killed = kill_when(library, out, lambda o: len(staged(o)) >= 3)
    else:
        killed = kill_when(library, out, lambda o: any((o / ".ingest" / "tmp").glob("build-*/tfds")))
    assert killed, "the ingest finished before it could be killed; make the fixture bigger"
    assert not (out / "genie_dataset.json").exists()  # an interrupted ingest never looks like a dataset
    done_before = {p.parent.name for p in staged(out)}
    assert done_before

    result = run(library, out)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = json.loads((out / "genie_dataset.json").read_text())
    assert resumed["fingerprint"] == reference["fingerprint"]  # no clip lost, none duplicated
    assert resumed["num_clips"] == reference["num_clips"]
    report = json.loads((out / "manifest.json").read_text())
    reused = {s["key"] for s in report["sources"] if s.get("reused")}
    assert done_before <= reused  # finished sources were not redone
    assert len(staged(out)) == 10 and not list((out / ".ingest" / "tmp").iterdir())
    assert len(list(out.glob("tfds-*"))) == 1
    ds = ClipDataset(out)
    assert sum(len(ds.split(s)) for s in ds.info.num_clips) == sum(reference["num_clips"].values())
