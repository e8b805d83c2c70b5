"""`genie play`: the subcommand's arguments and what it runs (genie_jax/cli.py only wires it in)."""

from __future__ import annotations

import argparse


def add_play_parser(sub) -> None:
    p = sub.add_parser("play", help="play a trained world in the browser (a local web page)",
                       description="Serves a page where you start a world from a dataset clip or an image and "
                                   "steer it with number keys (latent actions) or arrow/WASD keys.")
    p.add_argument("--run", required=True, help="run directory with a trained tokenizer, LAM and dynamics model")
    p.add_argument("--data", help="dataset for start clips and the key-mapping suggestion "
                                  "(default: the run's dataset, if it still exists)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: only this machine can connect)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--steps", type=int, help="MaskGIT steps per frame (default: the run's config)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the run's config)")
    p.add_argument("--mapping", help='JSON file mapping arrow keys to latent actions, e.g. {"left": 2, "right": 5, '
                                     '"up": 1, "down": 0} (default: suggested from the data\'s true actions)')
    p.add_argument("--context-frames", type=int, default=1, help="real frames of a start clip given to the model")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest start image accepted")
    p.add_argument("--no-warmup", action="store_true", help="serve at once; the first step then compiles")


def cmd_play(args: argparse.Namespace) -> int:
    from genie_jax.play.server import PlayConfig, serve
    from genie_jax.play.world import PlayWorld

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port (1..65535)")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    world = PlayWorld.load(args.run, args.data, steps=args.steps, temperature=args.temperature,
                           mapping_file=args.mapping, context_frames=args.context_frames)
    print(f"genie play: {world.sim.num_actions} latent actions, {world.sim.height}x{world.sim.width} frames; "
          f"{world.data_note}")
    print(f"genie play: arrow keys -> {world.mapping}")
    if not args.no_warmup:
        print("genie play: compiling the model (once)...", flush=True)
        world.warm_up()
    serve(world, args.host, args.port, PlayConfig(max_upload_bytes=int(args.max_upload_mb * 2**20)))
    return 0
