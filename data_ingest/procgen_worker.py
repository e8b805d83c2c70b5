"""Plays one Procgen level with given actions and saves the frames: run by ``data_ingest.procgen_games`` under the
Python of a separate environment, because procgen2 needs NumPy < 2 and genie_jax needs NumPy 2.

Standalone on purpose: it imports only the standard library, NumPy and procgen, never genie_jax or data_ingest.

    python procgen_worker.py --game coinrun --level 17 --mode hard --actions actions.npy --out frames.npy

Reads int actions [N-1] (.npy), writes uint8 frames [N, 64, 64, 3] (.npy, no pickle) to ``--out`` by an atomic
rename, and prints one JSON line: {"frames": N, "meanings": [...], "restarts": [...]}. ``restarts`` lists the
frames at which the level started again (the agent died or finished): the run goes on, as in Genie's data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

# Procgen's 15 buttons (procgen/env.py, get_combos), named for the action sidecar.
MEANINGS = ["LEFT+DOWN", "LEFT", "LEFT+UP", "DOWN", "NOOP", "UP", "RIGHT+DOWN", "RIGHT", "RIGHT+UP",
            "D", "A", "W", "S", "Q", "E"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--game", required=True)
    parser.add_argument("--level", type=int, required=True)
    parser.add_argument("--mode", default="hard")
    parser.add_argument("--actions", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from procgen import ProcgenGym3Env

    actions = np.load(args.actions, allow_pickle=False)
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer) or \
            (actions.size and not 0 <= actions.min() <= actions.max() < len(MEANINGS)):
        print(f"actions must be ints in [0, {len(MEANINGS)}), got {actions.dtype} {actions.shape}", file=sys.stderr)
        return 2
    env = ProcgenGym3Env(num=1, env_name=args.game, start_level=args.level, num_levels=1,
                         distribution_mode=args.mode, rand_seed=args.level)
    frames = np.empty((len(actions) + 1, 64, 64, 3), np.uint8)
    restarts = []
    _, obs, _ = env.observe()
    frames[0] = obs["rgb"][0]
    for i, action in enumerate(actions, 1):
        env.act(np.array([action], np.int32))
        _, obs, first = env.observe()
        frames[i] = obs["rgb"][0]
        if first[0]:
            restarts.append(i)
    partial = args.out + ".partial.npy"
    np.save(partial, frames, allow_pickle=False)
    os.replace(partial, args.out)
    print(json.dumps({"frames": len(frames), "meanings": MEANINGS, "restarts": restarts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
