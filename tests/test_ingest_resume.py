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


def ingest_command(library: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "data_ingest.cli", str(library), "--out", str(out), "--clip-len", "8",
            "--stride", "4", "--val-fraction", "0.2", "--test-fraction", "0.1", "--seed", "3", *extra]


def run(library: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(ingest_command(library, out), capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def kill_when(library: Path, out: Path, ready, *extra: str, before_kill=lambda pid: None) -> bool:
    """Starts an ingest, SIGKILLs it as soon as ``ready(out)`` holds; False if it finished first."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(ingest_command(library, out, *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        while proc.poll() is None:
            if ready(out):
                before_kill(proc.pid)
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


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # gone
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running or sleeping; an exited process waiting to be reaped (zombie) counts as gone."""
    info = _state_and_parent(pid)
    return info is not None and info[0] != "Z"


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc: Linux)."""
    return {int(p.name) for p in Path("/proc").glob("[0-9]*")
            if (info := _state_and_parent(int(p.name))) and info[1] == pid and info[0] != "Z"}


def descendants_of(pid: int) -> set[int]:
    """Live processes below ``pid``: its children (a fork server), theirs (pool workers), and so on."""
    found, frontier = set(), {pid}
    while frontier:
        frontier = set().union(*(children_of(p) for p in frontier)) - found
        found |= frontier
    return found


@pytest.mark.slow
def test_killed_ingest_leaves_no_workers_behind(library, reference, tmp_path):
    """SIGKILL `genie ingest --workers 2` mid-run: its pool's workers end too (they would otherwise wait for work
    forever), and so do the fork server they came from; the rerun still gives the reference dataset."""
    out, workers = tmp_path / "data", set()
    killed = kill_when(library, out, lambda o: len(staged(o)) >= 2, "--workers", "2",
                       before_kill=lambda pid: workers.update(descendants_of(pid)))
    assert killed and len(workers) >= 2, "the ingest finished before it could be killed; make the fixture bigger"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if alive(w)], "workers outlived the killed ingest"
    result = run(library, out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "genie_dataset.json").read_text())["fingerprint"] == reference["fingerprint"]
