"""Helpers for the `genie play` tests: a stand-in world whose simulator has no model (instant, no JAX compile),
and a server running in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from aiohttp import web

from genie_jax.play.world import PlayWorld

SLOW_ACTION = 3  # stepping with this action takes SLOW_SECONDS (a busy session)
SLOW_SECONDS = 1.0


class FakeSimulator:
    """Frames are 8x8; action a adds 10 * (a + 1) to every pixel. Follows WorldSimulator's reset/step/state/restore
    contract: state() is an immutable snapshot, and methods replace attributes rather than mutate them."""

    num_actions, height, width = 4, 8, 8

    def __init__(self) -> None:
        self._frame: np.ndarray | None = None
        self.seed = 0

    def reseed(self, seed: int) -> None:
        self.seed = seed

    def reset(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        assert frames.shape[-3:] == (8, 8, 3) and frames.dtype == np.uint8
        self._frame = frames[-1].copy()
        return self._frame

    def step(self, action: int) -> np.ndarray:
        if action == SLOW_ACTION:
            time.sleep(SLOW_SECONDS)
        self._frame = ((self._frame.astype(np.int64) + 10 * (action + 1)) % 256).astype(np.uint8)
        return self._frame

    def state(self) -> "FakeState":
        return FakeState(self._frame)

    def restore(self, state: "FakeState") -> None:
        self._frame = state.frame


@dataclasses.dataclass(frozen=True)
class FakeState:
    frame: np.ndarray

    def without_caches(self) -> "FakeState":
        return self


def fake_clip(index: int) -> dict:
    return {"frames": np.full((4, 8, 8, 3), index, np.uint8), "actions": np.zeros(3, np.int32)}


def fake_world(clips: int = 3) -> PlayWorld:
    return PlayWorld(FakeSimulator(), [fake_clip(i) for i in range(clips)] if clips else None,  # type: ignore[arg-type]
                     mapping={"left": 1, "right": 2, "up": None, "down": 0}, labels=["", "left", "right", ""])


@contextlib.contextmanager
def running_server(app: web.Application) -> Iterator[int]:
    """Serves ``app`` on 127.0.0.1 (a free port, yielded) from a thread with its own event loop, so a test's
    clients and the server never share a loop (a server that blocked its loop would then show up as slow)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        ready["port"] = runner.addresses[0][1]
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while "port" not in ready and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if "port" not in ready:
        raise RuntimeError("the test server did not start within 30 s")
    try:
        yield ready["port"]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def write_untrained_run(run_dir: Path, data_dir: Path) -> Path:
    """A run directory holding freshly initialised tiny models (tests/conftest.py's tiny_config) as step-1
    checkpoints, written the way `genie train` writes them. Seconds instead of the minutes that compiling three
    training steps takes on 2 cores; an untrained model still turns every action into a new frame."""
    from conftest import tiny_config
    from flax import nnx

    from genie_jax.checkpoint import Checkpointer
    from genie_jax.data import ClipDataset
    from genie_jax.run import RunDir
    from genie_jax.stages import BUILDERS, ModelShape

    config = tiny_config()
    info = ClipDataset(data_dir).info
    shape = ModelShape(info.height, info.width, config.train.dynamics.num_frames)
    run = RunDir(run_dir)
    for seed, stage in enumerate(("tokenizer", "lam", "dynamics")):
        model = BUILDERS[stage](config, shape, "float32", nnx.Rngs(seed))
        run.write_stage(stage, config, shape, "float32", {"path": str(info.path), "fingerprint": info.fingerprint})
        checkpointer = Checkpointer(run.checkpoint_dir(stage), asynchronous=False)
        try:  # an Orbax item may not be empty: a placeholder stands in for the optimizer state
            checkpointer.save(1, {stage: nnx.to_pure_dict(nnx.state(model))}, {"unused": np.zeros(())}, {"step": 1})
        finally:
            checkpointer.close()
    return Path(run_dir)
