"""Latent action model: infers a discrete action a_t for each transition x_t -> x_{t+1} from raw pixels.

The encoder sees frames x_{1:t+1} (causal in time); a learned action token per frame gathers, through spatial
attention, what changed, and its output at frame t+1 is quantised by a tiny codebook (|A| codes). The decoder
predicts x_{t+1} from x_{1:t} and the code, and exists only to train the encoder. At inference only the codebook
matters: a user's integer in [0, |A|) picks a code.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from genie_jax.config import LAMConfig
from genie_jax.nn import STTransformer, dense, patchify, to_float_frames, unpatchify
from genie_jax.vq import VectorQuantizer, VQOutput


class LAMOutput(NamedTuple):
    next_frames_BTHWC: jax.Array  # predictions of frames 1..T-1 (T-1 of them)
    vq: VQOutput  # codes (B, T-1): a_t for the transition t -> t+1
    latents_BTD: jax.Array  # pre-quantisation action vectors


def global_motion_shifts(radius: int, step: int) -> list[tuple[int, int]]:
    """Candidate (dy, dx) pixel shifts for the global-motion term; empty when radius is 0."""
    if radius <= 0:
        return []
    offsets = range(-radius, radius + 1, step)
    return [(dy, dx) for dy in offsets for dx in offsets]


def shifted_copies(frames_BTHWC: jax.Array, shifts: list[tuple[int, int]]) -> jax.Array:
    """(B, T, H, W, C) -> (B, T, K, H, W, C): frame content moved by each (dy, dx), edges repeated."""
    r = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    h, w = frames_BTHWC.shape[2:4]
    padded = jnp.pad(frames_BTHWC, ((0, 0), (0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    return jnp.stack([padded[:, :, r - dy:r - dy + h, r - dx:r - dx + w] for dy, dx in shifts], axis=2)


class LatentActionModel(nnx.Module):
    def __init__(self, cfg: LAMConfig, *, height: int, width: int, max_frames: int, dtype, rngs: nnx.Rngs):
        self.cfg, self.height, self.width = cfg, height, width
        num_patches = (height // cfg.patch) * (width // cfg.patch)
        patch_dim = cfg.patch * cfg.patch * 3
        enc, dec = cfg.encoder, cfg.decoder
        self.cost_shifts = global_motion_shifts(cfg.cost_volume_radius, cfg.cost_volume_step)
        enc_in = patch_dim * (2 if cfg.motion_input else 1) + len(self.cost_shifts)
        self.enc_embed = dense(enc_in, enc.width, (None, "embed"), dtype=dtype, rngs=rngs)
        self.action_query = nnx.Param(jax.random.normal(rngs.params(), (enc.width,), jnp.float32) * 0.02)
        self.encoder = STTransformer(enc, num_tokens=num_patches + 1, max_frames=max_frames, dtype=dtype,
                                     rngs=rngs)
        self.to_code = dense(enc.width, cfg.code_dim, ("embed", None), dtype=dtype, rngs=rngs)
        self.vq = VectorQuantizer(cfg.num_actions, cfg.code_dim, reset_after=cfg.reset_dead_after, rngs=rngs)
        self.dec_embed = dense(patch_dim, dec.width, (None, "embed"), dtype=dtype, rngs=rngs)
        self.action_in = dense(cfg.code_dim, dec.width, (None, "embed"), dtype=dtype, rngs=rngs)
        self.decoder = STTransformer(dec, num_tokens=num_patches, max_frames=max_frames, dtype=dtype, rngs=rngs)
        self.to_pixels = dense(dec.width, patch_dim, ("embed", None), dtype=dtype, rngs=rngs, zero_init=True)
        self.shifts = global_motion_shifts(cfg.global_motion_radius, cfg.global_motion_step)
        if self.shifts:
            self.motion_logits = dense(cfg.code_dim, len(self.shifts), (None, None), dtype=jnp.float32, rngs=rngs,
                                       zero_init=True)
            # Start as "nothing moved": the zero shift gets almost all the weight.
            self.motion_logits.bias[...] = 6.0 * jnp.asarray([s == (0, 0) for s in self.shifts], jnp.float32)
            if cfg.local_motion:
                self.patch_motion_logits = dense(dec.width, len(self.shifts), ("embed", None), dtype=jnp.float32,
                                                 rngs=rngs, zero_init=True)

    def encode(self, frames_BTHWC: jax.Array) -> tuple[VQOutput, jax.Array]:
        """Frames (B, T, H, W, 3) -> quantised actions for the T-1 transitions."""
        frames = to_float_frames(frames_BTHWC)
        if self.cfg.motion_input:  # frame 0 has no predecessor: its change is zero
            change = frames - jnp.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
            frames = jnp.concatenate([frames, change], axis=-1)
        patches = patchify(frames, self.cfg.patch)
        if self.cost_shifts:
            patches = jnp.concatenate([patches, self.motion_cost_volume(frames[..., :3])], axis=-1)
        x = self.enc_embed(patches)
        b, t = x.shape[:2]
        query = jnp.broadcast_to(self.action_query[...].astype(x.dtype), (b, t, 1, x.shape[-1]))
        h = self.encoder(jnp.concatenate([query, x], axis=2))
        # The action token at frame t+1 has seen frames <= t+1 only (causal time): it names the transition t -> t+1.
        latents_BTD = self.to_code(h[:, 1:, 0])
        return self.vq(latents_BTD), latents_BTD

    def motion_cost_volume(self, frames_BTHWC: jax.Array) -> jax.Array:
        """Float frames (B, T, H, W, 3) -> (B, T, N, K): per patch, the mean squared difference between frame t
        and frame t-1 moved by each candidate shift, minus the patch's smallest one and divided by their mean, so
        the pattern (which shift fits) reads the same whatever the patch's texture and contrast. Frame 0 has no
        predecessor and gets zeros."""
        previous = jnp.concatenate([frames_BTHWC[:, :1], frames_BTHWC[:, :-1]], axis=1)
        moved = shifted_copies(previous, self.cost_shifts)  # (B, T, K, H, W, 3)
        sq_err = jnp.mean((moved - frames_BTHWC[:, :, None]) ** 2, axis=-1)  # (B, T, K, H, W)
        p = self.cfg.patch
        b, t, k, h, w = sq_err.shape
        cost = sq_err.reshape(b, t, k, h // p, p, w // p, p).mean(axis=(4, 6)).reshape(b, t, k, -1)
        cost = jnp.swapaxes(cost, 2, 3)  # (B, T, N, K)
        cost = cost - cost.min(axis=-1, keepdims=True)
        cost = cost / (cost.mean(axis=-1, keepdims=True) + 1e-3)  # 1e-3: flat patches (sky) stay near 0
        return cost.at[:, 0].set(0.0)

    def decode(self, frames_BTHWC: jax.Array, actions_BTD: jax.Array) -> jax.Array:
        """Context frames x_{1:t} (B, T', H, W, 3) and action vectors (B, T', D) -> predicted x_{2:t+1}.

        The prediction is the last frame plus a learned change (zero at initialisation), so the decoder only
        has to model what moved. With ``decoder_history=False`` each prediction sees only its own last frame.
        """
        frames = to_float_frames(frames_BTHWC)
        x = self.dec_embed(patchify(frames, self.cfg.patch)) + self.action_in(actions_BTD)[:, :, None]
        if self.cfg.decoder_history:
            h = self.decoder(x)
        else:  # every frame on its own: fold time into the batch
            b, t = x.shape[:2]
            h = self.decoder(x.reshape((b * t, 1) + x.shape[2:])).reshape(x.shape)
        delta = unpatchify(self.to_pixels(h).astype(jnp.float32), self.cfg.patch, self.height, self.width)
        if not self.shifts:
            return frames + delta
        logits_BTK = self.motion_logits(actions_BTD.astype(jnp.float32))
        if not self.cfg.local_motion:
            weights = jax.nn.softmax(logits_BTK, axis=-1)
            return jnp.einsum("btk,btkhwc->bthwc", weights, shifted_copies(frames, self.shifts)) + delta
        logits_BTNK = logits_BTK[:, :, None] + self.patch_motion_logits(h.astype(jnp.float32))
        p = self.cfg.patch
        weights = rearrange(jax.nn.softmax(logits_BTNK, axis=-1), "b t (hn wn) k -> b t k hn wn",
                            hn=self.height // p)
        weights = jnp.repeat(jnp.repeat(weights, p, axis=3), p, axis=4)  # each pixel takes its patch's mix
        return jnp.einsum("btkhw,btkhwc->bthwc", weights, shifted_copies(frames, self.shifts)) + delta

    def infer_actions(self, frames_BTHWC: jax.Array) -> jax.Array:
        """Frames (B, T, H, W, 3) -> action ids (B, T-1) int32."""
        return self.encode(frames_BTHWC)[0].codes

    def __call__(self, frames_BTHWC: jax.Array) -> LAMOutput:
        vq, latents = self.encode(frames_BTHWC)
        return LAMOutput(self.decode(frames_BTHWC[:, :-1], vq.quantized), vq, latents)
