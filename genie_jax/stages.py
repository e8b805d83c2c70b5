"""What each training stage supplies to the one trainer: how to build its models, and its loss.

A stage's trainable part is one nnx module; models it depends on (the tokenizer under the dynamics model, say)
come in frozen and are only run forward. Batches are dicts with ``frames`` (B, T, H, W, 3) uint8 and, for the dynamics
stage with the token cache, ``tokens`` (B, T, N): the frozen tokenizer's tokens of those frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from genie_jax.config import Config, ConfigError
from genie_jax.metrics.image import psnr
from genie_jax.models.dynamics import DynamicsModel
from genie_jax.models.lam import LatentActionModel
from genie_jax.models.tokenizer import VideoTokenizer
from genie_jax.nn import compute_dtype, to_float_frames
from genie_jax.vq import l2_normalize, perplexity


@dataclass(frozen=True)
class ModelShape:
    """What a model needs to know about the data: frame size and its window of frames."""

    height: int
    width: int
    max_frames: int


def build_tokenizer(config: Config, shape: ModelShape, dtype: str, rngs: nnx.Rngs) -> VideoTokenizer:
    return VideoTokenizer(config.tokenizer, height=shape.height, width=shape.width, max_frames=shape.max_frames,
                          dtype=compute_dtype(dtype), rngs=rngs)


def build_lam(config: Config, shape: ModelShape, dtype: str, rngs: nnx.Rngs) -> LatentActionModel:
    return LatentActionModel(config.lam, height=shape.height, width=shape.width, max_frames=shape.max_frames,
                             dtype=compute_dtype(dtype), rngs=rngs)


def build_dynamics(config: Config, shape: ModelShape, dtype: str, rngs: nnx.Rngs) -> DynamicsModel:
    patch = config.tokenizer.patch
    return DynamicsModel(config.dynamics, vocab_size=config.tokenizer.codebook_size,
                         num_tokens=(shape.height // patch) * (shape.width // patch),
                         num_actions=config.lam.num_actions, max_frames=shape.max_frames,
                         dtype=compute_dtype(dtype), rngs=rngs, grid=(shape.height // patch, shape.width // patch))


BUILDERS: dict[str, Callable[..., nnx.Module]] = {
    "tokenizer": build_tokenizer, "lam": build_lam, "dynamics": build_dynamics}


class Trainable(nnx.Module):
    """A stage's trainable models by name (``tokenizer``, ``lam``, ``dynamics``); checkpoints use these names."""

    def __init__(self, **models: nnx.Module):
        for name, model in models.items():
            setattr(self, name, model)

    def names(self) -> list[str]:
        return [name for name in BUILDERS if hasattr(self, name)]


def trainable_names(stage: str, config: Config) -> list[str]:
    """Which models a stage trains: its own, plus the LAM when the dynamics stage co-trains it."""
    if stage == "dynamics" and config.train.dynamics.co_train_lam:
        return ["lam", "dynamics"]
    return [stage]


def frozen_names(stage: str, config: Config) -> list[str]:
    """Which trained models a stage needs from earlier stages, run forward only."""
    if stage == "dynamics":
        return ["tokenizer"] if config.train.dynamics.co_train_lam else ["tokenizer", "lam"]
    return []


# ----------------------------------------------------------------------------------------------------------
# Losses. Each returns (loss, metrics, updates) where `updates` feeds `after_update` (dead-code resets).

LossOut = tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]


def tokenizer_loss(models: Trainable, frozen: dict, batch: dict, key: jax.Array) -> LossOut:
    model = models.tokenizer
    target = to_float_frames(batch["frames"])
    out = model(batch["frames"])
    mse = jnp.mean(jnp.square(out.recon_BTHWC.astype(jnp.float32) - target))
    cfg = model.cfg
    vq_loss = out.vq.codebook_loss + cfg.commitment * out.vq.commitment_loss
    metrics = {"mse": mse, "vq_loss": vq_loss, "perplexity": perplexity(out.vq.codes, cfg.codebook_size)}
    return mse + cfg.vq_weight * vq_loss, metrics, {"tokenizer_vq": (out.vq.codes, out.latents_BTND)}


def lam_loss_terms(lam: LatentActionModel, frames: jax.Array) -> LossOut:
    target = to_float_frames(frames[:, 1:])
    out = lam(frames)
    mse = jnp.mean(jnp.square(out.next_frames_BTHWC - target))
    cfg = lam.cfg
    vq_loss = out.vq.codebook_loss + cfg.commitment * out.vq.commitment_loss
    metrics = {"lam_mse": mse, "lam_vq_loss": vq_loss, "lam_perplexity": perplexity(out.vq.codes, cfg.num_actions)}
    return cfg.recon_weight * mse + vq_loss, metrics, {"lam_vq": (out.vq.codes, out.latents_BTD)}


def lam_loss(models: Trainable, frozen: dict, batch: dict, key: jax.Array) -> LossOut:
    return lam_loss_terms(models.lam, batch["frames"])


def random_mask(key: jax.Array, shape_BTN: tuple[int, int, int], rate_min: float,
                clean_frame_prob: float = 0.0) -> jax.Array:
    """MaskGIT training mask: a per-example rate drawn from U(rate_min, 1); frame 0 always visible, and each later
    frame left wholly visible with probability ``clean_frame_prob``."""
    rate_key, mask_key, clean_key = jax.random.split(key, 3)
    rate = jax.random.uniform(rate_key, (shape_BTN[0], 1, 1), minval=rate_min, maxval=1.0)
    mask = jax.random.uniform(mask_key, shape_BTN) < rate
    clean = jax.random.bernoulli(clean_key, clean_frame_prob, shape_BTN[:2] + (1,))
    return (mask & ~clean).at[:, 0].set(False)


# What a co-trained LAM learns from (TrainConfig.co_train_lam_loss).
CO_TRAIN_LAM_LOSSES = ("reconstruction", "dynamics")
# Softmax temperature over the LAM's cosine similarities (in [-1, 1]) for the straight-through action input.
STRAIGHT_THROUGH_TEMPERATURE = 0.1


def lam_encoder_terms(lam: LatentActionModel, frames: jax.Array) -> tuple[LossOut, jax.Array]:
    """The LAM without its decoder (Jasmine's co-training): its VQ loss and metrics, plus (B, T-1, |A|)
    probabilities of each code (a softmax over cosine similarity) for the dynamics' straight-through input."""
    vq, latents_BTD = lam.encode(frames)
    cfg = lam.cfg
    vq_loss = vq.codebook_loss + cfg.commitment * vq.commitment_loss
    metrics = {"lam_vq_loss": vq_loss, "lam_perplexity": perplexity(vq.codes, cfg.num_actions)}
    similarity = jnp.einsum("btd,kd->btk", l2_normalize(latents_BTD.astype(jnp.float32)),
                            lam.vq.normalized_codebook())
    probs_BTA = jax.nn.softmax(similarity / STRAIGHT_THROUGH_TEMPERATURE, axis=-1)
    return (vq_loss, metrics, {"lam_vq": (vq.codes, latents_BTD)}), probs_BTA


def dynamics_loss(models: Trainable, frozen: dict, batch: dict, key: jax.Array,
                  lam_loss: str = "reconstruction") -> LossOut:
    """MaskGIT cross-entropy on masked tokens; with a co-trained LAM (``models.lam``) plus the LAM's terms.

    ``lam_loss`` ("reconstruction" or "dynamics") is what a co-trained LAM learns from: see CO_TRAIN_LAM_LOSSES.
    """
    frames = batch["frames"]
    # The tokenizer is frozen: its tokens come with the batch (the token cache) or from its encoder alone (no
    # gradient, no decode) here.
    tokens_BTN = batch["tokens"].astype(jnp.int32) if "tokens" in batch else jax.lax.stop_gradient(
        frozen["tokenizer"].tokenize(frames))
    metrics: dict[str, jax.Array] = {}
    updates: dict[str, Any] = {}
    lam_total = jnp.zeros(())
    dynamics = models.dynamics
    action_probs = None
    if not hasattr(models, "lam"):
        actions = frozen["lam"].infer_actions(frames)
    elif lam_loss == "reconstruction":  # Genie: the LAM learns from its own loss; dynamics sees stopped actions
        lam_total, metrics, updates = lam_loss_terms(models.lam, frames)
        actions = updates["lam_vq"][0]
    else:  # Jasmine: the LAM's encoder learns from the dynamics' loss, through straight-through actions
        (lam_total, metrics, updates), probs = lam_encoder_terms(models.lam, frames)
        actions = updates["lam_vq"][0]
        action_probs = dynamics.align_action_probs(probs)
    actions_BT = dynamics.align_actions(jax.lax.stop_gradient(actions))
    mask = random_mask(key, tokens_BTN.shape, dynamics.cfg.mask_rate_min, dynamics.cfg.clean_frame_prob)
    inputs = jnp.where(mask, dynamics.mask_id, tokens_BTN)
    logits = dynamics(inputs, actions_BT, action_probs)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BTN)
    masked = mask.astype(jnp.float32)
    count = jnp.maximum(masked.sum(), 1.0)
    ce_loss = jnp.sum(ce * masked) / count
    accuracy = jnp.sum((jnp.argmax(logits, -1) == tokens_BTN) * masked) / count
    metrics.update({"ce": ce_loss, "masked_token_accuracy": accuracy})
    return ce_loss + lam_total, metrics, updates


LOSSES = {"tokenizer": tokenizer_loss, "lam": lam_loss, "dynamics": dynamics_loss}
LossFn = Callable[[Trainable, dict, dict, jax.Array], LossOut]


def co_train_lam_loss(config: Config) -> str:
    """The dynamics stage's ``co_train_lam_loss``, checked."""
    choice = config.train.dynamics.co_train_lam_loss
    if choice not in CO_TRAIN_LAM_LOSSES:
        raise ConfigError(f"train.dynamics.co_train_lam_loss={choice!r}: choose one of "
                          f"{', '.join(CO_TRAIN_LAM_LOSSES)}")
    return choice


def stage_loss(stage: str, config: Config) -> LossFn:
    """The loss a stage trains with, configured."""
    if stage == "dynamics":
        return partial(dynamics_loss, lam_loss=co_train_lam_loss(config))
    return LOSSES[stage]


def after_update(models: Trainable, updates: dict, key: jax.Array) -> dict[str, jax.Array]:
    """Post-optimizer bookkeeping: dead-code resets for whichever quantisers were trained this step."""
    metrics = {}
    for name, metric in (("tokenizer", "codes_reset"), ("lam", "lam_codes_reset")):
        if f"{name}_vq" in updates:
            codes, latents = updates[f"{name}_vq"]
            vq = getattr(models, name).vq
            metrics[metric] = vq.update_usage_and_reset(codes, latents.reshape(-1, latents.shape[-1]), key)
    return metrics


# ----------------------------------------------------------------------------------------------------------
# Evaluation metrics logged every `log_every` steps on the current batch (no gradients).


def lam_action_gain(lam: LatentActionModel, frames: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """The LAM's own collapse detector: decoder PSNR with the inferred action minus with a random action.

    Zero means the actions carry nothing (GENIE_NOTES, "Known failure").
    """
    target = to_float_frames(frames[:, 1:])
    vq, _ = lam.encode(frames)
    random_codes = jax.random.randint(key, vq.codes.shape, 0, lam.cfg.num_actions)
    pred = lam.decode(frames[:, :-1], vq.quantized)
    pred_random = lam.decode(frames[:, :-1], lam.vq.lookup(random_codes))
    psnr_inferred = jnp.mean(psnr(jnp.clip(pred, 0, 1), target))
    psnr_random = jnp.mean(psnr(jnp.clip(pred_random, 0, 1), target))
    return {"lam_psnr": psnr_inferred, "lam_psnr_random_action": psnr_random,
            "lam_action_gain_db": psnr_inferred - psnr_random}


def eval_metrics(models: Trainable, frozen: dict, batch: dict, key: jax.Array,
                 lam_decoder: bool = True) -> dict[str, jax.Array]:
    """``lam_decoder=False``: the LAM's decoder is not trained (co-trained through the dynamics), so its gain is
    not measured."""
    frames = batch["frames"]
    metrics = {}
    if hasattr(models, "tokenizer"):
        recon = jnp.clip(models.tokenizer(frames).recon_BTHWC.astype(jnp.float32), 0, 1)
        metrics["psnr"] = jnp.mean(psnr(recon, to_float_frames(frames)))
    if hasattr(models, "lam") and lam_decoder:
        metrics.update(lam_action_gain(models.lam, frames, key))
    return metrics


def stage_eval_metrics(stage: str, config: Config) -> Callable[..., dict[str, jax.Array]]:
    """The evaluation metrics a stage logs, configured."""
    if stage == "dynamics":
        return partial(eval_metrics, lam_decoder=co_train_lam_loss(config) == "reconstruction")
    return eval_metrics
