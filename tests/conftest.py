"""Shared fixtures: a tiny config and frames, and the 8-fake-device switch for sharding tests.

Sharding tests run in a subprocess with XLA_FLAGS set before jax is imported (see tests/test_sharding.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from genie_jax.config import (Config, DynamicsConfig, LAMConfig, StageTrainConfigs, TokenizerConfig, TrainConfig,
                              TransformerConfig)

TINY = TransformerConfig(width=32, depth=1, heads=2, ffn_dim=64)


def tiny_config(steps: int = 4, **train_overrides) -> Config:
    settings = dict(steps=steps, batch_size=4, num_frames=8, log_every=2, checkpoint_every=2, warmup_steps=1,
                    lr=3e-3, min_lr=3e-4)
    train = TrainConfig(**{**settings, **train_overrides})
    return Config(
        name="tiny",
        tokenizer=TokenizerConfig(patch=4, codebook_size=32, code_dim=8, encoder=TINY, decoder=TINY),
        lam=LAMConfig(patch=8, num_actions=4, code_dim=8, encoder=TINY, decoder=TINY),
        dynamics=DynamicsConfig(transformer=TINY, maskgit_steps=3),
        train=StageTrainConfigs(tokenizer=train, lam=train, dynamics=train),
    )


@pytest.fixture
def config() -> Config:
    return tiny_config()


@pytest.fixture
def frames() -> np.ndarray:
    """(B=2, T=8, 16, 16, 3) uint8 with moving squares, so there is something to learn and to see."""
    rng = np.random.default_rng(0)
    out = np.zeros((2, 8, 16, 16, 3), np.uint8)
    for b in range(2):
        x, y = rng.integers(0, 12, size=2)
        for t in range(8):
            out[b, t, y:y + 4, (x + t) % 12:(x + t) % 12 + 4] = (255, 128 * b, 60)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny platformer dataset: 32x32 frames, clips of 8, split by episode."""
    from data_ingest.synthetic import ingest_platformer

    return ingest_platformer(tmp_path_factory.mktemp("tiny") / "data", episodes=6, frames_per_episode=40, size=32,
                             clip_len=8, val_fraction=0.34, seed=1)


def write_preset(path, steps: int = 4, **train_overrides) -> str:
    """Writes tiny_config as a preset file, as a user would pass with --config."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in train_overrides.items())
    path.write_text("import sys\nsys.path.insert(0, %r)\nfrom conftest import tiny_config\n\n"
                    "def get_config():\n    return tiny_config(steps=%d%s)\n"
                    % (str(__import__("pathlib").Path(__file__).parent), steps, (", " + kwargs) if kwargs else ""))
    return str(path)
