"""``procgen:GAME`` sources: Procgen (CoinRun and friends) played by a random policy with action persistence, as in
Genie's CoinRun study (hard mode, level seeds 0-10,000), with the true actions kept for evaluation.

procgen2 ships Python 3.11 wheels but needs NumPy < 2, which genie_jax cannot share. So the game runs in a Python
environment of its own: ``procgen_worker.py`` (standard library, NumPy and procgen only) plays one level with the
actions this side chose and hands the frames back in an ``.npy`` file (no pickle). Create that environment once:

    make procgen-env        # or: python -m data_ingest.procgen_games --setup

and ingest finds it (``~/.cache/genie_jax/procgen-venv``), or point ``--procgen-python`` or ``GENIE_PROCGEN_PYTHON``
at any Python that has procgen2.

One source is one level played for ``--frames-per-episode`` frames; when the agent dies or finishes, the level
starts again and the recording goes on (Genie: 1,000 steps per level). Every environment step is one frame at the
target frame rate, so nothing is resampled away.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_ingest.atari import random_policy
from data_ingest.decode import RawFrame, SourceError
from data_ingest.settings import IngestSettings
from data_ingest.sources import SourceSpec

GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot", "heist",
         "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")
MODES = ("easy", "hard", "extreme", "memory", "exploration")
NUM_BUTTONS = 15
FRAME_SHAPE = (64, 64, 3)
ENV_VAR = "GENIE_PROCGEN_PYTHON"
DEFAULT_ENV = Path.home() / ".cache" / "genie_jax" / "procgen-venv"
REQUIREMENTS = ("procgen2==0.10.7", "numpy>=1.17,<2")  # procgen2 is built against NumPy 1
WORKER = Path(__file__).with_name("procgen_worker.py")
SETUP_HINT = "create it with `make procgen-env` (or `python -m data_ingest.procgen_games --setup`)"


def find_python(explicit: str = "") -> Path:
    """The interpreter that runs the games: ``explicit``, else $GENIE_PROCGEN_PYTHON, else the default environment.
    Raises SourceError saying how to create one when there is none."""
    chosen = explicit or os.environ.get(ENV_VAR, "")
    python = Path(chosen) if chosen else DEFAULT_ENV / "bin" / "python"
    if not python.is_file():
        where = f"{python} (from {'--procgen-python' if explicit else ENV_VAR})" if chosen else str(python)
        raise SourceError(f"procgen sources need a Python environment with procgen2, which needs NumPy < 2 and so "
                          f"cannot share genie_jax's: {where} does not exist; {SETUP_HINT}")
    return python


def setup_env(path: Path = DEFAULT_ENV) -> Path:
    """Creates (or completes) a virtual environment with procgen2 at ``path``; returns its Python. Does nothing
    when the environment already holds exactly these requirements."""
    python, stamp = path / "bin" / "python", path / ".genie-installed"
    wanted = " ".join(REQUIREMENTS)
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    if not python.is_file():
        venv.create(path, with_pip=True, clear=path.exists())
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    subprocess.run([str(python), "-I", "-c", "import procgen"], check=True, capture_output=True)
    stamp.write_text(wanted)
    return python


def level_for(episode: int, levels: int, seed: int) -> int:
    """Episode i plays level permutation(levels)[i]: distinct levels until all ``levels`` are used."""
    return int(_level_order(levels, seed)[episode % levels])


@functools.lru_cache(maxsize=4)
def _level_order(levels: int, seed: int) -> np.ndarray:
    """One permutation per (levels, seed), not one per episode."""
    return np.random.default_rng(np.random.SeedSequence([seed, levels])).permutation(levels)


def play(spec: SourceSpec, settings: IngestSettings, *, seed: int) -> tuple[Iterator[RawFrame], np.ndarray, list[str]]:
    """(frames, actions [frames-1], button names) of the level in ``spec.provenance``, played in the procgen
    environment's Python (``spec.runner``)."""
    game, prov = spec.path, spec.provenance
    if game not in GAMES:
        raise SourceError(f"unknown Procgen game {game!r}: choose one of {', '.join(GAMES)}")
    episode, level, num_frames = int(prov["episode"]), int(prov["level"]), int(prov["frames"])
    episode_seed = int(np.random.SeedSequence([seed, episode, level]).generate_state(1)[0])
    actions = random_policy(NUM_BUTTONS, num_frames - 1, np.random.default_rng(episode_seed))
    with tempfile.TemporaryDirectory(prefix="genie-procgen-") as tmp:
        np.save(Path(tmp) / "actions.npy", actions, allow_pickle=False)
        out = Path(tmp) / "frames.npy"
        # -I (isolated): neither this package nor $PYTHONPATH on the player's path, only its own procgen.
        command = [spec.runner or str(find_python()), "-I", str(WORKER), "--game", game, "--level", str(level),
                   "--mode", str(prov["mode"]), "--actions", str(Path(tmp) / "actions.npy"), "--out", str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600 + num_frames)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceError(f"the procgen player did not run: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SourceError(f"the procgen player failed ({last}); check {command[0]} has procgen2: {SETUP_HINT}")
        frames = _checked_frames(out, len(actions) + 1)
        meanings = json.loads(done.stdout.strip().splitlines()[-1])["meanings"]
    # One step per output frame: frame i at i / fps, the very times resampling asks for.
    return (RawFrame(i, i / settings.fps, frame) for i, frame in enumerate(frames)), actions, list(meanings)


def _checked_frames(path: Path, expected: int) -> np.ndarray:
    """The worker's frames, refused unless they are exactly what was asked for (it runs outside our control)."""
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"the procgen player's frames are unreadable: {exc}") from None
    if frames.dtype != np.uint8 or frames.shape != (expected, *FRAME_SHAPE):
        raise SourceError(f"the procgen player returned {frames.dtype} {frames.shape}, expected uint8 "
                          f"{(expected, *FRAME_SHAPE)}")
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description="Set up the Python environment that plays Procgen games.")
    parser.add_argument("--setup", action="store_true", help="create the environment and install procgen2")
    parser.add_argument("--path", type=Path, default=DEFAULT_ENV, help=f"where (default {DEFAULT_ENV})")
    args = parser.parse_args()
    if not args.setup:
        parser.print_help()
        return 2
    print(f"procgen environment ready: {setup_env(args.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
