"""How good the generated world is, per clip, on held-out clips: tokenizer reconstruction, the dynamics model's
teacher-forced token accuracy, and autoregressive rollouts scored against the real frames at every horizon.

The model passes are jit-compiled, run in fixed-size batches (one compiled shape; the last batch is padded) and
placed on a data-parallel mesh the way training places them, so the same code uses one CPU or every local device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie_jax.metrics.image import psnr, ssim
from genie_jax.sharding import batch_sharding, batch_shards, make_mesh, placed, replicated
from genie_jax.simulator import WorldSimulator


def _batched(fn: Callable, arrays: tuple[np.ndarray, ...], batch_size: int, mesh) -> np.ndarray:
    """fn(*batch) over fixed-size batches of the leading axis (last batch padded, padding dropped) -> stacked."""
    n = len(arrays[0])
    sharding = batch_sharding(mesh) if batch_size % batch_shards(mesh) == 0 else replicated(mesh)
    out = []
    for start in range(0, n, batch_size):
        chunk = [a[start:start + batch_size] for a in arrays]
        real = len(chunk[0])
        chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - real, axis=0)]) for c in chunk]
        result = fn(*(jax.device_put(c, sharding) for c in chunk))
        out.append(jax.tree.map(lambda r, keep=real: np.asarray(r)[:keep], result))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *out)


def tokenizer_scores(tokenizer, frames_BTHWC: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Reconstruction PSNR (dB) and SSIM of every clip, each the mean over its frames, and the tokens themselves:
    {"psnr": (B,), "ssim": (B,), "tokens": (B, T, N)}.

    Clips are cut to the tokenizer's window. Reconstructions are rounded to uint8, as anything shown to a person is.
    """
    mesh = make_mesh()
    graph, state = placed(tokenizer, mesh)
    frames_BTHWC = frames_BTHWC[:, :tokenizer.decoder.max_frames]

    @jax.jit
    def score(state, frames):
        model = nnx.merge(graph, state)
        tokens = model.tokenize(frames)
        recon = jnp.round(model.detokenize(tokens) * 255) / 255
        real = frames.astype(jnp.float32) / 255
        return {"psnr": psnr(recon, real).mean(axis=1), "ssim": ssim(recon, real).mean(axis=1), "tokens": tokens}

    return _batched(lambda frames: score(state, frames), (frames_BTHWC,), batch_size, mesh)


def teacher_forced_token_accuracy(tokenizer, lam, dynamics, frames_BTHWC: np.ndarray, batch_size: int) -> np.ndarray:
    """Per clip (B,): fraction of the tokens of frames 1..W-1 that the dynamics model's argmax gets right when every
    earlier frame is real (tokenized) and the frame itself is fully masked, conditioned on the LAM's actions.

    This is MaskGIT's hardest step (nothing of the frame known) with a perfect past: one forward pass per frame.
    """
    mesh = make_mesh()
    window = dynamics.transformer.max_frames
    frames_BTHWC = frames_BTHWC[:, :window]
    graphs, states = zip(*(placed(m, mesh) for m in (tokenizer, lam, dynamics)))

    @jax.jit
    def accuracy(states, frames):
        tok, lam_model, dyn = (nnx.merge(g, s) for g, s in zip(graphs, states))
        tokens_BTN = tok.tokenize(frames)
        actions_BT = dyn.align_actions(lam_model.infer_actions(frames))
        slot = jnp.arange(tokens_BTN.shape[1])[None, :, None]

        def one_frame(t):
            logits_BTNV = dyn(jnp.where(slot >= t, dyn.mask_id, tokens_BTN), actions_BT)
            pred_BN = jnp.argmax(jax.lax.dynamic_index_in_dim(logits_BTNV, t, axis=1, keepdims=False), axis=-1)
            real_BN = jax.lax.dynamic_index_in_dim(tokens_BTN, t, axis=1, keepdims=False)
            return jnp.mean(pred_BN == real_BN, axis=-1)

        return jax.lax.map(one_frame, jnp.arange(1, tokens_BTN.shape[1])).mean(axis=0)

    return _batched(lambda frames: accuracy(states, frames), (frames_BTHWC,), batch_size, mesh)


@dataclass(frozen=True)
class RolloutScores:
    """Scores of generated frame h (1-based horizon h = index + 1) against the real frame it should match."""

    psnr_BH: np.ndarray
    ssim_BH: np.ndarray
    token_accuracy_BH: np.ndarray
    copy_last_psnr_BH: np.ndarray  # the trivial predictor "nothing moves": last context frame vs the real frame
    generated_BHHWC: np.ndarray  # uint8 generated frames (B, H, height, width, 3)


def rollout_scores(sim: WorldSimulator, frames_BTHWC: np.ndarray, tokens_BTN: np.ndarray, *, context_frames: int,
                   horizon: int) -> RolloutScores:
    """Rolls every clip out for ``horizon`` frames from its first ``context_frames`` real frames, steered by the
    latent actions the LAM infers from the real clip (teacher-forced actions, generated frames), and scores each
    generated frame. B must be a multiple of ``sim.batch_size``; context + horizon must fit the window."""
    b = len(frames_BTHWC)
    needed = context_frames + horizon
    if needed > min(frames_BTHWC.shape[1], sim.window, tokens_BTN.shape[1]):
        raise ValueError(f"{context_frames} context + {horizon} generated frames do not fit clips of "
                         f"{frames_BTHWC.shape[1]} frames and a {sim.window}-frame window")
    if b % sim.batch_size:
        raise ValueError(f"{b} clips are not a multiple of the simulator's {sim.batch_size} worlds")
    generated, token_hits = [], []
    for start in range(0, b, sim.batch_size):
        clip = frames_BTHWC[start:start + sim.batch_size, :needed]
        actions = sim.infer_actions(clip)[:, context_frames - 1:]
        sim.reset(clip[:, :context_frames])
        frames, hits = [], []
        for h in range(horizon):
            frames.append(sim.step_batch(actions[:, h]))
            state = sim.state()
            made = np.asarray(state.tokens_BWN[:, state.length - 1])
            hits.append((made == tokens_BTN[start:start + sim.batch_size, context_frames + h]).mean(axis=-1))
        generated.append(np.stack(frames, axis=1))
        token_hits.append(np.stack(hits, axis=1))
    generated_BHHWC = np.concatenate(generated)
    real = jnp.asarray(frames_BTHWC[:, context_frames:needed], jnp.float32) / 255
    fake = jnp.asarray(generated_BHHWC, jnp.float32) / 255
    last = jnp.broadcast_to(jnp.asarray(frames_BTHWC[:, context_frames - 1:context_frames], jnp.float32) / 255,
                            real.shape)
    return RolloutScores(np.asarray(psnr(fake, real)), np.asarray(ssim(fake, real)), np.concatenate(token_hits),
                         np.asarray(psnr(last, real)), generated_BHHWC)
