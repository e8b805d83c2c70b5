"""MaskGIT decoding of the next frame, inside a fixed window of W frames.

Temporal attention is causal, so the logits of frame t do not depend on window slots after t. Generation
therefore always runs the full (B, W, N) window with later slots masked and reads frame t: one compiled shape
for every context length, and a sliding window beyond W frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from genie_jax.models.dynamics import DynamicsModel

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


def masked_after_step(step: jax.Array, steps: int, num_tokens: int, schedule: str) -> jax.Array:
    """How many tokens stay masked after MaskGIT step ``step`` (0-based); 0 after the last step."""
    progress = (step + 1) / steps
    fraction = jnp.cos(0.5 * math.pi * progress) if schedule == "cosine" else 1.0 - progress
    # float32 cos(pi/2) is slightly negative: clamp so the last step leaves exactly zero masked.
    return jnp.maximum(jnp.floor(num_tokens * fraction), 0).astype(jnp.int32)


def maskgit_fill_frame(dynamics: DynamicsModel, tokens_BWN: jax.Array, actions_BW: jax.Array, t: jax.Array,
                       key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Fills every token of frame ``t`` of the window by iterative MaskGIT decoding; returns the window.

    ``tokens_BWN`` holds known frames at slots < t (slots >= t are ignored); ``actions_BW[:, t]`` is the action
    leading into frame t. Each step samples all unknown tokens, keeps the most confident ones and re-masks the
    rest, following the schedule; the last step leaves nothing masked.
    """
    b, w, n = tokens_BWN.shape
    mask_id = dynamics.mask_id
    slot = jnp.arange(w)[None, :, None]
    tokens_BWN = jnp.where(slot >= t, mask_id, tokens_BWN)

    def body(i, carry):
        window, key = carry
        key, sample_key, noise_key = jax.random.split(key, 3)
        logits_BNV = jax.lax.dynamic_index_in_dim(dynamics(window, actions_BW), t, axis=1, keepdims=False)
        current_BN = jax.lax.dynamic_index_in_dim(window, t, axis=1, keepdims=False)
        if cfg.temperature > 0:
            logits_BNV = logits_BNV / cfg.temperature
            sampled = jax.random.categorical(sample_key, logits_BNV)
        else:
            sampled = jnp.argmax(logits_BNV, axis=-1)
        log_probs = jax.nn.log_softmax(logits_BNV)
        confidence = jnp.take_along_axis(log_probs, sampled[..., None], axis=-1)[..., 0]
        # MaskGIT's annealed noise on the confidence: more exploration in early steps.
        anneal = cfg.temperature * (1.0 - (i + 1) / cfg.steps)
        confidence = confidence + anneal * jax.random.gumbel(noise_key, confidence.shape)
        unknown = current_BN == mask_id
        sampled = jnp.where(unknown, sampled, current_BN)
        confidence = jnp.where(unknown, confidence, jnp.inf)
        # Re-mask the least confident tokens: rank 0 is the least confident.
        rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
        remask = rank < masked_after_step(i, cfg.steps, n, cfg.schedule)
        frame_BN = jnp.where(remask, mask_id, sampled).astype(window.dtype)
        return jax.lax.dynamic_update_index_in_dim(window, frame_BN, t, axis=1), key

    window, _ = jax.lax.fori_loop(0, cfg.steps, body, (tokens_BWN, key))
    return window
