"""The dynamics stage's token cache: the frozen tokenizer's tokens of every training clip, computed once.

The tokenizer is frozen while the dynamics model trains, so tokenizing a clip gives the same tokens every time it
is drawn. When a run draws each clip at least once on average, tokenizing the split once before training is cheaper
than running the tokenizer's encoder in every step; the step then reads the tokens with the batch (``tokens``).
The cache lives in host memory for one ``genie train`` invocation (a resumed run rebuilds it: no stale files).
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from genie_jax.config import ConfigError
from genie_jax.data import ClipDataset
from genie_jax.sharding import batch_sharding, placed

log = logging.getLogger(__name__)

TOKEN_CACHE_CHOICES = ("auto", "always", "never")
# "auto" keeps the cache under this many bytes of host memory.
MAX_AUTO_BYTES = 1 << 30


def use_token_cache(choice: str, *, steps: int, batch_size: int, num_clips: int, tokens_per_clip: int,
                    process_count: int) -> bool:
    """Whether to build the cache: ``always``, ``never``, or ``auto`` (when the run's remaining ``steps`` draw at
    least as many clips as the split holds and the cache fits MAX_AUTO_BYTES). Single-process runs only."""
    if choice not in TOKEN_CACHE_CHOICES:
        raise ConfigError(f"train.token_cache={choice!r}: choose one of {', '.join(TOKEN_CACHE_CHOICES)}")
    if choice == "never":
        return False
    if process_count > 1:
        if choice == "always":
            raise ConfigError("train.token_cache=always needs a single-process run (each process would need every "
                              "clip's tokens); use auto or never")
        return False
    if choice == "always":
        return True
    fits = num_clips * tokens_per_clip * 2 <= MAX_AUTO_BYTES
    return fits and steps * batch_size >= num_clips


def tokenize_split(tokenizer: nnx.Module, dataset: ClipDataset, split: str, num_frames: int, batch_size: int,
                   mesh, *, progress: bool = False) -> np.ndarray:
    """Token ids of every clip of ``split``, cut to ``num_frames`` as the loader cuts them: (clips, T, N).

    Runs in fixed batches of ``batch_size`` (a multiple of the mesh's batch shards; the last batch is padded), so
    one compiled shape serves the whole split. Stored as int16 when the codebook allows it.
    """
    clips = dataset.split(split)
    graph, state = placed(tokenizer, mesh)
    sharding = batch_sharding(mesh)
    tokenize = jax.jit(lambda s, frames: nnx.merge(graph, s).tokenize(frames))
    dtype = np.int16 if tokenizer.cfg.codebook_size <= np.iinfo(np.int16).max else np.int32
    n = len(clips)
    out: np.ndarray | None = None
    log.info("token cache: tokenizing %d %s clips once", n, split)
    for start in tqdm(range(0, n, batch_size), desc="token cache", disable=not progress, dynamic_ncols=True):
        indices = list(range(start, min(start + batch_size, n)))
        frames = np.stack([record["frames"][:num_frames] for record in clips.__getitems__(indices)])
        padded = np.concatenate([frames, np.repeat(frames[-1:], batch_size - len(indices), axis=0)])
        tokens = np.asarray(tokenize(state, jax.device_put(padded, sharding)))[:len(indices)]
        if out is None:
            out = np.empty((n,) + tokens.shape[1:], dtype)
        out[start:start + len(indices)] = tokens
    assert out is not None, f"split {split!r} is empty"
    return out
