"""MaskGIT decoding of the next frame, inside a fixed window of W frames.

Temporal attention is causal, so the logits of frame t do not depend on window slots after t, and the past
frames' activations never change while frame t is decoded. Two paths with equal results:
- recompute (reference): every MaskGIT step runs the full (B, W, N) window with later slots masked;
- cached: the past frames' temporal keys and values are computed once (``KVCache``) and each step runs frame t
  alone, about W times less work per step.
With rotary time positions the "window" may be longer than the models' W frames: each frame attends to the W
frames up to itself, so the cache keeps the last W - 1 frames' keys (simulator.py streams them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from genie_jax.models.dynamics import DynamicsModel
from genie_jax.nn import KVCache

SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class SamplingConfig:
    steps: int = 25
    temperature: float = 1.0
    schedule: str = "cosine"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"MaskGIT steps must be >= 1, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: choose one of {SCHEDULES}")


def masked_after_step(steps: int, num_tokens: int, schedule: str) -> list[int]:
    """How many of ``num_tokens`` stay masked after each MaskGIT step (0-based); 0 after the last step."""
    counts = []
    for step in range(steps):
        progress = (step + 1) / steps
        fraction = math.cos(0.5 * math.pi * progress) if schedule == "cosine" else 1.0 - progress
        counts.append(max(math.floor(num_tokens * fraction), 0))  # cos(pi/2) is ~6e-17: floors to 0
    return counts


def unmasking_steps(steps: int, num_tokens: int, schedule: str) -> list[tuple[int, int]]:
    """(step, tokens masked after it) for the schedule's steps that unmask at least one token.

    A step whose count equals the previous one re-masks every token it sampled: it changes nothing, so it is not
    run. Few tokens a frame make many such steps: at Jasmine's CoinRun settings (16 tokens, 25 steps) only 16
    steps unmask anything.
    """
    kept, before = [], num_tokens
    for step, masked in enumerate(masked_after_step(steps, num_tokens, schedule)):
        if masked < before:
            kept.append((step, masked))
        before = masked
    return kept


def sample_categorical(key: jax.Array, logits_BNV: jax.Array) -> jax.Array:
    """One draw per token from softmax(logits), by inverting its CDF with one uniform number per token.

    The same distribution as ``jax.random.categorical``, which draws Gumbel noise for every vocabulary entry (V
    times more random numbers): on a CPU that noise was about a fifth of the demo model's MaskGIT step. -> (B, N)
    int32.
    """
    cdf = jnp.cumsum(jax.nn.softmax(logits_BNV.astype(jnp.float32), axis=-1), axis=-1)
    # u in [0, total): scaled by the CDF's own end, which float rounding leaves a little off 1, so the draw can
    # never land past the last token of nonzero probability.
    u = jax.random.uniform(key, logits_BNV.shape[:-1] + (1,)) * cdf[..., -1:]
    return jnp.sum(cdf <= u, axis=-1).astype(jnp.int32)  # the first entry whose CDF exceeds u


def maskgit_decode(logits_fn: Callable[[jax.Array], jax.Array], frame_BN: jax.Array, key: jax.Array,
                   cfg: SamplingConfig, mask_id: int) -> jax.Array:
    """Iterative MaskGIT decoding of one frame: tokens (B, N), mask id where unknown -> every token filled.

    ``logits_fn`` maps the current (partly masked) frame to its logits (B, N, vocab). Each step samples all
    unknown tokens, keeps the most confident ones and re-masks the rest, following the schedule; the last step
    leaves nothing masked. Steps that would unmask nothing are skipped (:func:`unmasking_steps`). One
    ``fori_loop``: the whole frame is a single compiled call.
    """
    schedule = unmasking_steps(cfg.steps, frame_BN.shape[1], cfg.schedule)
    step_ids = jnp.asarray([step for step, _ in schedule], jnp.int32)
    masked_after = jnp.asarray([masked for _, masked in schedule], jnp.int32)

    def body(j, carry):
        current_BN, key = carry
        key, sample_key, noise_key = jax.random.split(key, 3)
        logits_BNV = logits_fn(current_BN)
        if cfg.temperature > 0:
            logits_BNV = logits_BNV / cfg.temperature
            sampled = sample_categorical(sample_key, logits_BNV)
        else:
            sampled = jnp.argmax(logits_BNV, axis=-1)
        log_probs = jax.nn.log_softmax(logits_BNV)
        confidence = jnp.take_along_axis(log_probs, sampled[..., None], axis=-1)[..., 0]
        # MaskGIT's annealed noise on the confidence: more exploration in early steps.
        anneal = cfg.temperature * (1.0 - (step_ids[j] + 1) / cfg.steps)
        confidence = confidence + anneal * jax.random.gumbel(noise_key, confidence.shape)
        unknown = current_BN == mask_id
        sampled = jnp.where(unknown, sampled, current_BN)
        confidence = jnp.where(unknown, confidence, jnp.inf)
        # Re-mask the least confident tokens: rank 0 is the least confident.
        rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
        remask = rank < masked_after[j]
        return jnp.where(remask, mask_id, sampled).astype(current_BN.dtype), key

    return jax.lax.fori_loop(0, len(schedule), body, (frame_BN, key))[0]


def maskgit_fill_frame(dynamics: DynamicsModel, tokens_BWN: jax.Array, actions_BW: jax.Array, t: jax.Array,
                       key: jax.Array, cfg: SamplingConfig, first_position: int | jax.Array = 0) -> jax.Array:
    """Fills every token of frame ``t`` of the window, recomputing the whole window at every step; returns the
    window with frame t filled (the other slots as given).

    ``tokens_BWN`` holds known frames at slots < t (slots >= t are ignored); ``actions_BW[:, t]`` is the action
    leading into frame t; ``first_position`` numbers slot 0 (rotary time positions). This is the reference
    :func:`maskgit_fill_frame_cached` must equal.
    """
    w = tokens_BWN.shape[1]
    known_BWN = jnp.where(jnp.arange(w)[None, :, None] >= t, dynamics.mask_id, tokens_BWN)

    def logits_fn(frame_BN):
        window = jax.lax.dynamic_update_index_in_dim(known_BWN, frame_BN, t, axis=1)
        logits = dynamics(window, actions_BW, first_position=first_position)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)

    empty = jnp.full(tokens_BWN.shape[::2], dynamics.mask_id, tokens_BWN.dtype)
    frame_BN = maskgit_decode(logits_fn, empty, key, cfg, dynamics.mask_id)
    return jax.lax.dynamic_update_index_in_dim(tokens_BWN, frame_BN, t, axis=1)


def maskgit_fill_frame_cached(dynamics: DynamicsModel, caches: list[KVCache], action_B: jax.Array, t: jax.Array,
                              key: jax.Array, cfg: SamplingConfig,
                              position: jax.Array | None = None) -> tuple[jax.Array, list[KVCache]]:
    """The tokens (B, N) of the frame in cache slot ``t`` from the cache of the frames before it, computing only
    this frame at every step; returns them and the caches with slot t filled. ``position``: the frame's number
    (rotary time positions; default t). Same tokens as :func:`maskgit_fill_frame` for the same key."""
    empty = jnp.full((action_B.shape[0], dynamics.num_tokens), dynamics.mask_id, jnp.int32)
    frame_BN = maskgit_decode(lambda frame: dynamics.step(frame, action_B, caches, t, position)[0], empty, key,
                              cfg, dynamics.mask_id)
    return frame_BN, dynamics.step(frame_BN, action_B, caches, t, position)[1]
