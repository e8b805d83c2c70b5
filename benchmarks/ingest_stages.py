"""Where ingest's CPU goes, stage by stage, on one core: each row runs the pipeline up to that stage on one generated
video (one decoder thread) and shows what the stage adds per kept frame, against bare PyAV decoding of every frame.

Rows are cumulative: "resample" decodes the frames that resampling shows (skipping, where the codec allows, those
it does not: it can cost less than "decode"), "resize" adds resizing, and so on; "process" is the whole per-source
work (hashing the file and staging the clips included), "build" the dataset records of its clips (record encoding,
zstd, digests) timed on their own and added to "process". The last row, "floor", is not cumulative: the least any
ingest into these records pays (decode, resize, compress; no tests, staging or digests). Stages run interleaved,
--repeats times, and each row shows its fastest run: on a shared machine the minimum is the least disturbed
estimate of a CPU-bound cost (still noisy: a row can come out a few us below the one before it).

    python benchmarks/ingest_stages.py [--frames 3600] [--width 256] [--height 144] [--repeats 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from array_record.python.array_record_module import ArrayRecordWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_throughput import decode_only, make_video
from data_ingest.clips import ClipShape
from data_ingest.decode import resample, target_chunks, video_frames
from data_ingest.filters import clip_signature, motion_score, segment
from data_ingest.process import cut_segments, process_source
from data_ingest.settings import IngestSettings
from data_ingest.shards import ARRAY_RECORD_OPTIONS, ShardTask, write_shard
from data_ingest.sources import discover
from data_ingest.staging import StagedClips, staged_arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3600, help="frames of the video (30 fps)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ingest_stages_"))
    try:
        video = tmp / "v.mp4"
        make_video(video, args.frames, args.width, args.height, seed=0)
        settings = IngestSettings(height=64, width=64)
        spec = discover([str(video)], tmp / "none").specs[0]

        def frames():
            return video_frames(video, settings, threads=1, skip_unshown=True)

        def clips():
            return cut_segments(segment(target_chunks(frames(), settings), settings, Counter()), settings, Counter())

        staged = {}

        def process() -> None:
            out = Path(tempfile.mkdtemp(dir=tmp))
            staged["result"] = process_source(spec, settings, str(out), threads=1)
            staged["dir"] = out / ".ingest" / "staged" / staged["result"]["key"]

        def build() -> None:
            num_clips = len(staged_arrays(staged["dir"])["signatures"])
            shape = (settings.clip_len, settings.height, settings.width, 3)
            source = StagedClips(name="v", path=str(staged["dir"]), clip_shape=shape, keep=tuple(range(num_clips)))
            write_shard(ShardTask(path=str(tmp / "shard.array_record"), sources=((0, source),),
                                  shape=ClipShape(*shape[:3]), stride=settings.clip_stride, num_actions=0))

        def floor() -> None:
            """The least any ingest into these records pays: the kept frames resized, each 16 of them compressed as
            one record (no tests, staging, digests or record encoding)."""
            writer = ArrayRecordWriter(str(tmp / "floor.array_record"), ARRAY_RECORD_OPTIONS)
            for _, chunk in target_chunks(frames(), settings):
                writer.write(chunk.tobytes())
            writer.close()

        stages: list[tuple[str, Callable[[], object]]] = [
            ("decode", lambda: decode_only(str(video), threads=1)),
            ("resample", lambda: sum(1 for _ in resample(frames(), settings.fps))),
            ("resize", lambda: sum(1 for _ in target_chunks(frames(), settings))),
            ("tests", lambda: sum(1 for _ in segment(target_chunks(frames(), settings), settings, Counter()))),
            ("clips", lambda: sum(1 for clip in clips()
                                  if clip_signature(clip.frames) and motion_score(clip.changed, clip.indices) >= 0)),
            ("process", process),
            ("build", build),
            ("floor", floor),
        ]
        best = {name: float("inf") for name, _ in stages}
        for _ in range(args.repeats):
            for name, run in stages:
                start = time.process_time()
                run()
                best[name] = min(best[name], time.process_time() - start)
        result = staged["result"]
        kept = result["frames"]["kept"]
        print(f"one {args.width}x{args.height} H.264 video, {args.frames} frames at 30 fps -> {kept} kept frames at "
              f"64x64, 10 fps, {result['clips']['staged']} clips; one core, fastest of {args.repeats} runs")
        print("| stage | CPU ms | added per kept frame | vs decode |")  # decode's row: all of it
        print("| --- | --- | --- | --- |")
        decode, previous = best["decode"], 0.0
        for name in (name for name, _ in stages if name != "floor"):  # the cumulative rows; floor stands alone
            total = best[name] + (best["process"] if name == "build" else 0.0)
            added = best[name] if name == "build" else total - previous
            print(f"| {name + (' (+ process)' if name == 'build' else '')} | {1000 * total:.0f} | "
                  f"{1e6 * added / kept:.0f} us | {total / decode:.2f}x |")
            previous = total
        print(f"| floor: resize + zstd only | {1000 * best['floor']:.0f} | "
              f"{1e6 * (best['floor'] - decode) / kept:.0f} us | {best['floor'] / decode:.2f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
