"""Do cached and recomputed generation make the same worlds on this device and dtype? Prints one line per case.

Two worlds start from the same random frames and the same seed, and take the same actions for 12 frames (past the
8-frame window, so the cache slides); the script compares their window tokens and generated pixels. With
``--positions rope`` the models have rotary time positions, so the cached world streams (drops its oldest cached
frame) and the recomputing one recomputes every frame that can reach the next (simulator.py). The test suite
checks equality in float32 on a CPU; this script is for other devices and bfloat16, where the two paths' different
matmul shapes may round differently (on a 2-core CPU in bfloat16 ~10% of tokens then diverge; on an H100 none did).

    python benchmarks/cached_equality.py [--presets demo,coinrun_jasmine] [--dtypes float32,bfloat16] \
        [--positions learned,rope]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from generation import ROTARY_IN_TIME, random_models  # benchmarks/, beside this script

from genie_jax.simulator import WorldSimulator

WINDOW, FRAMES, WORLDS = 8, 12, 2


def compare(preset: str, dtype: str, positions: str) -> str:
    models, sampling, size = random_models(preset, WINDOW, dtype, ROTARY_IN_TIME if positions == "rope" else [])
    start = np.random.default_rng(0).integers(0, 256, (WORLDS, 3, size, size, 3), np.uint8)
    tokens, frames = {}, {}
    for use_cache in (True, False):
        sim = WorldSimulator(*models, sampling=sampling, batch_size=WORLDS, use_cache=use_cache, seed=7)
        sim.reset(start)
        frames[use_cache] = np.stack([sim.step_batch([(i + w) % sim.num_actions for w in range(WORLDS)])
                                      for i in range(FRAMES)]).astype(int)
        tokens[use_cache] = np.asarray(sim.state().tokens_BWN)
    diff = np.abs(frames[True] - frames[False])
    held_equal = (tokens[True] == tokens[False]).mean()
    return (f"{preset:>16} {dtype:>9} {positions:>7}: tokens held equal {held_equal:.4f}, pixels equal "
            f"{(diff == 0).mean():.4f}, max pixel difference {diff.max()}  ({jax.devices()[0].device_kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,coinrun_jasmine")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--positions", default="learned,rope", help="time positions of the models to compare")
    args = parser.parse_args()
    for preset in args.presets.split(","):
        for dtype in args.dtypes.split(","):
            for positions in args.positions.split(","):
                print(compare(preset, dtype, positions), flush=True)


if __name__ == "__main__":
    main()
