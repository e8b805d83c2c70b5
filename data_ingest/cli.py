"""Arguments and entry point of ``genie ingest SOURCE... --out DIR`` (wired into the ``genie`` CLI elsewhere)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_ingest.settings import RESIZE_POLICIES

SYNTHETIC = "synthetic:platformer"


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``genie ingest`` arguments to ``parser``."""
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="video files (mp4 webm mkv mov avi gif) or folders, searched recursively (a folder of "
                             "numbered png/jpg frames is one video); http(s) URLs or @list.txt (one URL a line) "
                             f"fetched with yt-dlp; {SYNTHETIC} (the built-in game); atari:GAME, e.g. atari:Pitfall "
                             "(needs the 'games' extra); procgen:GAME, e.g. procgen:coinrun (needs the procgen "
                             "environment: python -m data_ingest.procgen_games --setup)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="dataset directory; rerun the same command to resume an interrupted ingest")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset (and redo every source of an earlier ingest); needed "
                             "to rerun with other processing settings")
    out = parser.add_argument_group("clips and splits")
    out.add_argument("--size", type=int, default=64, help="square frame side in pixels (default 64)")
    out.add_argument("--height", type=int, help="frame height for video (default --size), e.g. 90")
    out.add_argument("--width", type=int, help="frame width for video (default --size), e.g. 160")
    out.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16)")
    out.add_argument("--stride", type=int, default=None, help="frames between clip starts (default clip-len)")
    out.add_argument("--val-fraction", type=float, default=0.1,
                     help="fraction of sources (episodes/videos) held out for validation (default 0.1); a video goes "
                          "by a hash of its pictures, an atari/procgen episode by one of its game settings, so "
                          "adding sources moves no training source out of train (see README); synthetic:platformer "
                          "splits its episodes by count")
    out.add_argument("--test-fraction", type=float, default=0.0,
                     help="fraction of sources held out for test (videos, atari and procgen episodes; default 0)")
    out.add_argument("--seed", type=int, default=0, help="seed for levels, policies and the split (default 0)")
    games = parser.add_argument_group(f"{SYNTHETIC}, atari:GAME and procgen:GAME")
    games.add_argument("--episodes", type=int, default=100, help="episodes to play (default 100)")
    games.add_argument("--frames-per-episode", type=int, default=300,
                       help="frames per episode (default 300; Genie's CoinRun: 1000 per level)")
    games.add_argument("--procgen-levels", type=int, default=10_000,
                       help="procgen episodes play distinct levels drawn from seeds 0..N-1 (default 10000, as Genie)")
    games.add_argument("--procgen-mode", default="hard", help="procgen distribution mode (default hard, as Genie)")
    games.add_argument("--procgen-python", default="",
                       help="a Python with procgen2 (default: $GENIE_PROCGEN_PYTHON, else the environment that "
                            "`python -m data_ingest.procgen_games --setup` creates)")
    video = parser.add_argument_group("video processing")
    video.add_argument("--fps", type=float, default=10.0, help="frame rate clips are resampled to (default 10)")
    video.add_argument("--resize", choices=RESIZE_POLICIES, default="crop",
                       help="fit to the frame size: crop (fill, cut overflow), pad (black bars), stretch "
                            "(default crop)")
    video.add_argument("--image-fps", type=float, default=10.0, help="frame rate of image folders (default 10)")
    video.add_argument("--min-seconds", type=float, default=None,
                       help="drop videos shorter than this (default: one clip's duration)")
    video.add_argument("--scene-threshold", type=float, default=0.5,
                       help="colour-histogram change in (0, 1] that counts as a scene cut (default 0.5)")
    video.add_argument("--static-seconds", type=float, default=1.0,
                       help="an unchanging stretch this long is dropped as static (default 1)")
    video.add_argument("--blank-std", type=float, default=4.0,
                       help="frames whose grey levels vary less than this are blank (default 4)")
    video.add_argument("--quality-filter", default="", metavar="MODULE:FUNCTION",
                       help="clip scorer f(frames uint8 [T,H,W,3]) -> [0, 1]; default: share of moving frames")
    video.add_argument("--min-quality", type=float, default=0.5, help="drop clips scoring below (default 0.5)")
    video.add_argument("--max-side", type=int, default=8192,
                       help="refuse videos/images with a side above this as absurd (default 8192)")
    video.add_argument("--workers", type=int, default=None,
                       help="processes working on sources in parallel (default: one per CPU core)")
    video.add_argument("--beam-runner", default="", metavar="RUNNER",
                       help="cut the dataset's clips in an Apache Beam pipeline on this runner (DirectRunner, "
                            "DataflowRunner, FlinkRunner, ...; needs genie_jax[beam]); same dataset as without")
    video.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                       help="one more Beam pipeline option, e.g. direct_num_workers=2 (repeatable)")
    net = parser.add_argument_group("downloads (yt-dlp)")
    net.add_argument("--rate-limit", default="", help="download rate limit, e.g. 2M (bytes/s; default none)")
    net.add_argument("--download-retries", type=int, default=3, help="retries per URL, with backoff (default 3)")
    net.add_argument("--retry-wait", type=float, default=2.0,
                     help="first backoff in seconds; doubles each retry (default 2)")


def run_ingest(args: argparse.Namespace) -> int:
    """Runs ``genie ingest``; returns the exit code: 0 ok, 1 some source failed, 2 no dataset / bad arguments."""
    if len(args.sources) != len(set(args.sources)):
        return _usage("each source may be given only once")
    if SYNTHETIC in args.sources:
        if len(args.sources) > 1:
            return _usage(f"{SYNTHETIC} cannot be mixed with other sources; ingest it into its own --out")
        return _run_synthetic(args)
    return _run_video(args)


def _run_video(args: argparse.Namespace) -> int:
    from data_ingest.workers import available_cores, start_pool_server

    workers = args.workers if args.workers is not None else available_cores()
    if workers > 1:  # the workers' fork server starts while this process imports PyAV, NumPy and the rest
        start_pool_server()
    from data_ingest.download import DownloadSettings
    from data_ingest.settings import IngestSettings
    from data_ingest.video_ingest import IngestOptions, ingest_video_sources

    if args.beam_option and not args.beam_runner:
        return _usage("--beam-option needs --beam-runner")
    if any("=" not in kv or kv.startswith("-") for kv in args.beam_option):
        return _usage(f"--beam-option takes KEY=VALUE, got {args.beam_option}")
    beam_options = (f"--runner={args.beam_runner}", *(f"--{kv}" for kv in args.beam_option)) if args.beam_runner \
        else ()
    if ((args.workers is not None and args.workers < 1) or args.episodes < 1 or args.frames_per_episode < 2
            or args.procgen_levels < 1):
        return _usage("--workers, --episodes and --procgen-levels must be >= 1, --frames-per-episode >= 2")
    from data_ingest.procgen_games import MODES

    if args.procgen_mode not in MODES:
        return _usage(f"--procgen-mode must be one of {', '.join(MODES)}, got {args.procgen_mode!r}")
    try:
        settings = IngestSettings(
            height=args.height or args.size, width=args.width or args.size, fps=args.fps, resize=args.resize,
            clip_len=args.clip_len, stride=args.stride, image_fps=args.image_fps, min_seconds=args.min_seconds,
            scene_threshold=args.scene_threshold, blank_std=args.blank_std, static_seconds=args.static_seconds,
            quality_filter=args.quality_filter, min_quality=args.min_quality, max_side=args.max_side)
        if settings.quality_filter:  # fail now, not once per source in the workers
            from data_ingest.filters import load_quality_filter

            load_quality_filter(settings.quality_filter)
        download = DownloadSettings(max_height=max(settings.height, settings.width), rate_limit=args.rate_limit,
                                    retries=args.download_retries, retry_wait=args.retry_wait)
        options = IngestOptions(settings=settings, download=download, workers=workers,
                                val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                                overwrite=args.overwrite, episodes=args.episodes,
                                frames_per_episode=args.frames_per_episode, procgen_levels=args.procgen_levels,
                                procgen_mode=args.procgen_mode, procgen_python=args.procgen_python,
                                beam_options=beam_options)
        report = ingest_video_sources(list(args.sources), args.out, options)
    except (ValueError, FileExistsError) as exc:
        return _usage(str(exc))
    print(report.summary, end="")
    return report.exit_code


def _run_synthetic(args: argparse.Namespace) -> int:
    if args.beam_runner or args.test_fraction:
        return _usage(f"--beam-runner and --test-fraction apply to video and game sources, not {SYNTHETIC}")
    for flag, value, low in (("--episodes", args.episodes, 2), ("--frames-per-episode", args.frames_per_episode, 2),
                             ("--clip-len", args.clip_len, 2), ("--size", args.size, 16)):
        if value < low:
            return _usage(f"{flag} must be >= {low}, got {value}")
    from data_ingest.synthetic import ingest_platformer  # heavy imports (TFDS) only once arguments are fine

    try:
        out = ingest_platformer(args.out, episodes=args.episodes, frames_per_episode=args.frames_per_episode,
                                size=args.size, clip_len=args.clip_len, stride=args.stride,
                                val_fraction=args.val_fraction, seed=args.seed, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        return _usage(str(exc))
    manifest = json.loads((out / "genie_dataset.json").read_text())
    clips = ", ".join(f"{split} {n}" for split, n in manifest["num_clips"].items())
    print(f"wrote {out}: {clips} clips of {manifest['clip_len']} frames at {manifest['height']}x"
          f"{manifest['width']} from {len(manifest['sources'])} episodes; "
          f"nmi_ceiling {manifest['nmi_ceiling']:.3f} (true action vs visible effect, {manifest['nmi_ceiling_split']})")
    return 0


def _usage(message: str) -> int:
    print(f"genie ingest: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m data_ingest.cli``: the same as ``genie ingest`` without loading the model code."""
    parser = argparse.ArgumentParser(prog="genie ingest", description="Turn video sources into a clip dataset.")
    add_ingest_arguments(parser)
    return run_ingest(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SYNTHETIC", "add_ingest_arguments", "main", "run_ingest"]
