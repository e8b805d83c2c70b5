"""Arguments and entry point of ``genie ingest SOURCE... --out DIR`` (wired into the ``genie`` CLI elsewhere)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SUPPORTED_SOURCES = ("synthetic:platformer",)


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``genie ingest`` arguments to ``parser``."""
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="what to ingest; supported now: synthetic:platformer (the built-in game)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset directory to create")
    parser.add_argument("--episodes", type=int, default=100, help="episodes to play (default 100)")
    parser.add_argument("--frames-per-episode", type=int, default=300, help="frames per episode (default 300)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 16 (default 64)")
    parser.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--stride", type=int, default=None, help="frames between clip starts (default clip-len)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of episodes/videos held out for validation (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for levels, policy and split (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def run_ingest(args: argparse.Namespace) -> int:
    """Runs ``genie ingest``; returns the process exit code (2 for unusable arguments)."""
    unsupported = [s for s in args.sources if s not in SUPPORTED_SOURCES]
    if unsupported:
        print(f"genie ingest: cannot ingest {', '.join(map(repr, unsupported))}: real video ingest (folders, "
              f"URLs) is not implemented yet; supported sources: {', '.join(SUPPORTED_SOURCES)}", file=sys.stderr)
        return 2
    if len(args.sources) != len(set(args.sources)):
        print("genie ingest: each source may be given only once", file=sys.stderr)
        return 2
    for flag, value, low in (("--episodes", args.episodes, 2), ("--frames-per-episode", args.frames_per_episode, 2),
                             ("--clip-len", args.clip_len, 2), ("--size", args.size, 16)):
        if value < low:
            print(f"genie ingest: {flag} must be >= {low}, got {value}", file=sys.stderr)
            return 2
    from data_ingest.synthetic import ingest_platformer  # heavy imports (TFDS) only once arguments are fine

    try:
        out = ingest_platformer(args.out, episodes=args.episodes, frames_per_episode=args.frames_per_episode,
                                size=args.size, clip_len=args.clip_len, stride=args.stride,
                                val_fraction=args.val_fraction, seed=args.seed, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        print(f"genie ingest: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((out / "genie_dataset.json").read_text())
    clips = ", ".join(f"{split} {n}" for split, n in manifest["num_clips"].items())
    print(f"wrote {out}: {clips} clips of {manifest['clip_len']} frames at {manifest['height']}x"
          f"{manifest['width']} from {len(manifest['sources'])} episodes; "
          f"nmi_ceiling {manifest['nmi_ceiling']:.3f} (true action vs visible effect, {manifest['nmi_ceiling_split']})")
    return 0


__all__ = ["SUPPORTED_SOURCES", "add_ingest_arguments", "run_ingest"]
