"""Ingest throughput against bare PyAV decoding of every frame of the same files: the reference cost (ingest skips
decoding the B-frames it will not keep, where a video has them, so it can cost less).

Makes N synthetic gameplay-like videos (H.264, 30 fps), then times, with 1 and W workers:
  decode   PyAV decoding every frame and nothing else (same decoder threading as ingest);
  process  ingest's per-source work: hash, decode, resample, resize, filter, cut, stage (no dataset build);
  ingest   the whole ingest, called in this process: process + dedupe + TFDS ArrayRecord build + manifest;
  command  `genie ingest` as a user runs it: a fresh process, so its start-up and imports count too.
Throughput is in source (decoded) frames per second; the target is ingest <= 1.5x the cost of decoding. Cost is
shown two ways: wall time, and CPU time (all threads and worker processes; what a cluster pays for, and what
other jobs on a shared machine disturb least). Each stage runs --repeats times, interleaved; a shared machine's
speed drifts from minute to minute, so each run's cost is taken against the decoding run just before it, and the
table shows medians.

    python benchmarks/ingest_throughput.py [--videos 4] [--frames 600] [--width 640] [--height 360] [--repeats 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_ingest.decode import default_threads
from data_ingest.process import process_source
from data_ingest.settings import IngestSettings
from data_ingest.sources import discover

# Not data_ingest.video_ingest here: spawned workers re-import this module, and it brings TFDS (~1 s a worker) that
# `genie ingest`'s workers never load. main() imports it.


def make_video(path: Path, frames: int, width: int, height: int, seed: int) -> None:
    """A scrolling tiled level with a moving sprite: textured like 2D gameplay, compressible like it."""
    rng = np.random.default_rng(seed)
    px = max(2, width // 160)  # texel size: tiles stay visible at 64x64 whatever the source resolution
    tile = np.repeat(np.repeat(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8), px, 0), px, 1)
    side = tile.shape[0]
    world = np.tile(tile, (height // side + 1, (width + frames * 4) // side + 2, 1))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "23"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.ascontiguousarray(world[:height, i * 4:i * 4 + width])
            img[height // 2:height // 2 + 24, (i * 7) % (width - 24):(i * 7) % (width - 24) + 24] = (255, 40, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode_only(path: str, threads: int) -> int:
    n = 0
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for _ in c.decode(stream):
            n += 1
    return n


def timed_pool(fn, jobs: list[tuple], workers: int) -> tuple[float, float, list]:
    """Runs fn(*job) for every job on `workers` processes -> (wall seconds, CPU seconds, results)."""
    start = time.perf_counter()
    if workers == 1:
        measured = [_cpu_timed(fn, *job) for job in jobs]
    else:
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_noop, range(workers)))  # start the workers before the clock matters
            start = time.perf_counter()
            measured = list(pool.map(_cpu_timed, [fn] * len(jobs), *zip(*jobs, strict=True)))
    return time.perf_counter() - start, sum(cpu for _, cpu in measured), [result for result, _ in measured]


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def _cpu_timed(fn, *args):
    start = time.process_time()  # this process, all its threads (the decoder's too)
    result = fn(*args)
    return result, time.process_time() - start


def _noop(_: int) -> None:
    return None


def _process(spec, settings, out, threads):
    return process_source(spec, settings, out, threads=threads)


# Runs a command and waits for every process it starts, its orphans too (a fork server outlives its parent by a
# moment): this process is their "child subreaper". Prints the exit status, wall seconds and CPU seconds of all.
_MEASURE = """
import ctypes, os, resource, subprocess, sys, time
if ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
start = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(code, time.perf_counter() - start, usage.ru_utime + usage.ru_stime)
"""


def timed_command(args: list[str]) -> tuple[float, float, int]:
    """Runs ``args`` -> (wall seconds, CPU seconds of it and every process it started, exit status)."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, check=True).stdout
    code, wall, cpu = out.split()
    return float(wall), float(cpu), int(code)


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped descendants (see ``_end_ingest_processes``)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _adopt_orphans() -> None:
    """Makes this process the Linux "child subreaper": descendants orphaned by their parent's exit (a fork server's
    workers) are reparented here instead of to init, so their CPU time reaches RUSAGE_CHILDREN once reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _end_ingest_processes() -> None:
    """Ends the fork server the ingest started (as the exit of a `genie ingest` process does, so every run pays
    for its own) and reaps all exited descendants: their CPU time is then in RUSAGE_CHILDREN."""
    if multiprocessing.forkserver._forkserver._forkserver_pid is not None:
        multiprocessing.forkserver._forkserver._stop()  # closes its pipe and waits for it
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:  # only live children left (multiprocessing's resource tracker)
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=600, help="frames per video (30 fps)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each stage (the table shows medians)")
    args = parser.parse_args()
    from data_ingest.video_ingest import IngestOptions, ingest_video_sources
    _adopt_orphans()
    tmp = Path(tempfile.mkdtemp(prefix="ingest_bench_"))
    try:
        videos = tmp / "videos"
        videos.mkdir()
        for i in range(args.videos):
            make_video(videos / f"v{i}.mp4", args.frames, args.width, args.height, seed=i)
        total = args.videos * args.frames
        settings = IngestSettings(height=64, width=64)
        specs = discover([str(videos)], tmp / "none").specs
        rows = []
        for workers in sorted({1, args.workers}):
            threads = default_threads(workers)
            runs: list[dict[str, tuple[float, float]]] = []  # per repeat: stage -> (wall, CPU seconds)
            for repeat in range(args.repeats):
                run: dict[str, tuple[float, float]] = {}
                runs.append(run)
                wall, cpu, counts = timed_pool(decode_only, [(str(v), threads) for v in sorted(videos.iterdir())],
                                               workers)
                assert sum(counts) == total, counts
                run["decode"] = wall, cpu
                out = tmp / f"process{workers}-{repeat}"  # fresh each time: nothing staged to reuse
                out.mkdir()
                wall, cpu, _ = timed_pool(_process, [(s, settings, str(out), threads) for s in specs], workers)
                run["process"] = wall, cpu
                start, start_cpu = time.perf_counter(), _cpu_seconds()
                report = ingest_video_sources([str(videos)], tmp / f"ingest{workers}-{repeat}",
                                              IngestOptions(settings=settings, workers=workers, val_fraction=0.25),
                                              log=lambda _: None)
                wall = time.perf_counter() - start
                _end_ingest_processes()
                run["ingest"] = wall, _cpu_seconds() - start_cpu
                assert report.dataset_written and report.manifest["totals"]["frames"]["decoded"] == total, \
                    report.summary
                wall, cpu, code = timed_command([sys.executable, "-m", "genie_jax.cli", "ingest", str(videos), "--out",
                                                 str(tmp / f"command{workers}-{repeat}"), "--size", "64",
                                                 "--workers", str(workers), "--val-fraction", "0.25"])
                assert code == 0, f"genie ingest exited with {code}"
                run["command"] = wall, cpu
            for name in runs[0]:
                t, cpu = (statistics.median(r[name][k] for r in runs) for k in (0, 1))
                ratios = [[r[name][k] / r["decode"][k] for r in runs] for k in (0, 1)]
                rows.append((name, workers, total, t, cpu, *ratios))
        print(f"{args.videos} videos x {args.frames} frames, {args.width}x{args.height} H.264 30 fps -> 64x64 "
              f"at 10 fps; {multiprocessing.cpu_count()} CPU cores; {args.repeats} runs of each stage, interleaved. "
              "Medians; a cost against decoding is the median of each run's ratio to the decoding just before it "
              "(the range of those ratios in brackets).")
        print(f"| {'stage':8} | workers | frames | seconds | frames/s | frames/s/worker | wall vs decode     | "
              "CPU seconds | CPU vs decode      |")
        print("|----------|---------|--------|---------|----------|-----------------|--------------------|"
              "-------------|--------------------|")
        for name, w, n, t, cpu, wall_ratios, cpu_ratios in rows:
            print(f"| {name:8} | {w:7} | {n:6} | {t:7.2f} | {n / t:8.0f} | {n / t / w:15.0f} | "
                  f"{_ratio(wall_ratios):18} | {cpu:11.2f} | {_ratio(cpu_ratios):18} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
