"""WorldSimulator: the one API everything interactive uses. reset(frames) / step(action_id) -> frame.

Each step generates the next frame's tokens with MaskGIT, conditioned on the chosen latent action, and decodes it
with the tokenizer. By default the past frames' keys and values are cached (see sampling.py), so a step computes
only the new frame; ``use_cache=False`` recomputes every frame it holds at every MaskGIT step (the reference).
What happens past the models' window of W frames (their training clip length) depends on their time positions:
- learned (a table of W slots): the world keeps W frames and slides them, the oldest dropping out. Every frame
  then moves to another slot, so the cache is rebuilt from the window each frame.
- rotary (``temporal_positions="rope"`` in the dynamics model and the tokenizer decoder): each frame attends to
  the W frames up to itself, numbered by their distance, so sliding drops the oldest frame's cached keys and keeps
  the rest: every frame costs what a frame inside the window costs. A frame's keys were computed when it was
  generated, from the frames before it, so the world remembers through them; the reference recomputes the
  frames that can still reach the next one (depth x (W - 1) of them, the "history") with the same rule.
Given a mesh, the worlds are split over its data axes and the parameters placed as in training, so one jit-compiled
step runs every local device (evaluation uses this).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from genie_jax.nn import CACHE_SLOT_AXIS
from genie_jax.run import RunDir, load_model
from genie_jax.sampling import SamplingConfig, maskgit_fill_frame, maskgit_fill_frame_cached
from genie_jax.sharding import batch_sharding, batch_shards, replicated, state_shardings


@dataclass(frozen=True)
class SimulatorState:
    """Everything needed to branch a world: restore() a saved state and step differently."""

    tokens_BWN: jax.Array  # (B, history, N): the frames a step may read, oldest first
    actions_BW: jax.Array
    length: int  # frames currently held
    key: jax.Array
    # Generation caches (dynamics, tokenizer decoder) of the window's frames, or None: rebuilt on the next step.
    # Kept with the state, so a restore() continues without recomputing the window.
    caches: tuple | None = None
    first_position: int = 0  # the number of the oldest frame held (rotary time positions count from the reset)

    def without_caches(self) -> "SimulatorState":
        """The same state holding no caches (a few MB each at CoinRun size); restoring it rebuilds them once."""
        return replace(self, caches=None)


def _take_action(actions_BW, t, ids_B, key):
    """The window's actions with ``ids_B`` leading into frame t, and (next key, this frame's sampling key).
    Inside the compiled step, so a small world's frame costs no extra dispatches."""
    return actions_BW.at[:, t].set(ids_B), *jax.random.split(key)


def _generate(dyn_graph, tok_graph, dyn_state, tok_state, tokens_BWN, actions_BW, t, first, ids_B, key,
              cfg: SamplingConfig):
    """Reference path: every MaskGIT step and the decode recompute every frame held (slot 0 is frame ``first``)."""
    dynamics = nnx.merge(dyn_graph, dyn_state)
    tokenizer = nnx.merge(tok_graph, tok_state)
    actions_BW, key, step_key = _take_action(actions_BW, t, ids_B, key)
    tokens_BWN = maskgit_fill_frame(dynamics, tokens_BWN, actions_BW, t, step_key, cfg, first)
    # The tokenizer decoder is causal in time too: frame t decodes from tokens of frames <= t.
    frames = tokenizer.detokenize(_known(tokens_BWN, t + 1), first)
    frame_BHWC = jax.lax.dynamic_index_in_dim(frames, t, axis=1, keepdims=False)
    return tokens_BWN, actions_BW, None, jnp.round(frame_BHWC * 255).astype(jnp.uint8), key


def _prefill(dyn_graph, tok_graph, dyn_state, tok_state, tokens_BWN, actions_BW, t, first):
    """The (dynamics, tokenizer decoder) caches of the frames < t that frame t attends to: one pass over them."""
    dynamics = nnx.merge(dyn_graph, dyn_state)
    tokenizer = nnx.merge(tok_graph, tok_state)
    # Causal in time: slots >= t do not affect the cached slots < t, whatever they hold.
    return (dynamics.prefill(tokens_BWN, actions_BW, first, t),
            tokenizer.decode_prefill(_known(tokens_BWN, t), first, t))


def _generate_cached(dyn_graph, tok_graph, dyn_state, tok_state, caches, tokens_BWN, actions_BW, t, slot, first,
                     ids_B, key, cfg: SamplingConfig):
    """Cached path: only frame t runs through the dynamics model (each MaskGIT step) and the tokenizer decoder.

    ``caches`` = (dynamics, tokenizer decoder) caches of the frames before frame t (see :func:`_prefill`), which
    goes in their ``slot``; ``first`` numbers slot 0 of ``tokens_BWN``.
    """
    dynamics = nnx.merge(dyn_graph, dyn_state)
    tokenizer = nnx.merge(tok_graph, tok_state)
    actions_BW, key, step_key = _take_action(actions_BW, t, ids_B, key)
    position = first + t
    frame_BN, dyn_caches = maskgit_fill_frame_cached(dynamics, caches[0], actions_BW[:, t], slot, step_key, cfg,
                                                     position)
    frame_BHWC, tok_caches = tokenizer.detokenize_step(frame_BN, caches[1], slot, position)
    tokens_BWN = jax.lax.dynamic_update_index_in_dim(tokens_BWN, frame_BN.astype(tokens_BWN.dtype), t, axis=1)
    return tokens_BWN, actions_BW, (dyn_caches, tok_caches), jnp.round(frame_BHWC * 255).astype(jnp.uint8), key


def _drop_oldest_cached(caches):
    """Every cache with its oldest slot moved to the end, where the next frame overwrites it."""
    return jax.tree.map(lambda a: jnp.roll(a, -1, axis=CACHE_SLOT_AXIS), caches)


def _known(tokens_BWN: jax.Array, length) -> jax.Array:
    """Window tokens with slots >= length set to token 0 (a valid id), for decoders that must not index out."""
    return jnp.where(jnp.arange(tokens_BWN.shape[1])[None, :, None] < length, tokens_BWN, 0)


class WorldSimulator:
    def __init__(self, tokenizer, lam, dynamics, *, sampling: SamplingConfig, batch_size: int = 1, seed: int = 0,
                 use_cache: bool = True, mesh: Mesh | None = None):
        """``mesh``: split the ``batch_size`` worlds over its data axes (replicated if they do not divide it) and
        place the parameters by their logical axes; None keeps everything on the default device."""
        self.tokenizer, self.lam, self.dynamics = tokenizer, lam, dynamics
        self.sampling = sampling
        self.batch_size = batch_size
        self.num_actions = dynamics.num_actions
        self.window = dynamics.transformer.max_frames
        decoder = tokenizer.decoder
        # Rotary time positions in both generating models: sliding keeps the cache (module docstring).
        self.streaming = dynamics.transformer.temporal_rope and decoder.temporal_rope
        if self.streaming and decoder.max_frames != self.window:
            raise ValueError(f"the tokenizer decoder's window ({decoder.max_frames} frames) differs from the "
                             f"dynamics model's ({self.window}): train them on clips of one length")
        # Frames held: those that can still reach the next frame through the layers of attention.
        depth = max(len(dynamics.transformer.blocks), len(decoder.blocks))
        self.history = depth * (self.window - 1) + 1 if self.streaming else self.window
        self.height, self.width = tokenizer.height, tokenizer.width
        self.num_tokens = tokenizer.num_tokens
        self._seed = seed
        self._mesh = mesh
        self._dyn = self._split(dynamics)
        self._tok = self._split(tokenizer)
        self.use_cache = use_cache
        self._generate = jax.jit(partial(_generate, self._dyn[0], self._tok[0], cfg=sampling))
        self._generate_cached = jax.jit(partial(_generate_cached, self._dyn[0], self._tok[0], cfg=sampling))
        self._prefill = jax.jit(partial(_prefill, self._dyn[0], self._tok[0]))
        self._drop_oldest_cached = jax.jit(_drop_oldest_cached)
        self._tokenize = jax.jit(lambda state, frames: nnx.merge(self._tok[0], state).tokenize(frames))
        lam_graph, self._lam_state = self._split(lam)
        self._infer = jax.jit(lambda state, frames: nnx.merge(lam_graph, state).infer_actions(frames))
        self._state: SimulatorState | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, *, batch_size: int = 1, steps: int | None = None,
                 temperature: float | None = None, schedule: str | None = None, seed: int = 0,
                 dtype: str | None = None, mesh: Mesh | None = None) -> "WorldSimulator":
        """Loads the tokenizer, LAM and dynamics model trained in ``run_dir``. Sampling settings default to the
        dynamics config's (MaskGIT steps, temperature, schedule)."""
        run = RunDir(run_dir)
        run.require("tokenizer", "dynamics")
        dynamics = load_model(run, "dynamics", dtype)
        cfg = dynamics.cfg
        sampling = SamplingConfig(steps or cfg.maskgit_steps,
                                  cfg.temperature if temperature is None else temperature,
                                  schedule or cfg.schedule)
        return cls(load_model(run, "tokenizer", dtype), load_model(run, "lam", dtype), dynamics,
                   sampling=sampling, batch_size=batch_size, seed=seed, mesh=mesh)

    # ------------------------------------------------------------------------------------------------------
    def reset(self, frames: np.ndarray | str | Path) -> np.ndarray:
        """Starts a world from context frames: (T, H, W, 3) uint8 for every world, (B, T, H, W, 3) one per world,
        or an image file. Actions between context frames are inferred by the LAM, and (with the cache) the
        context's keys and values are computed here, once. Returns the last frame(s)."""
        frames = self._as_batch(frames)
        frames = frames[:, -(self.window - 1):]  # leave room for at least one generated frame
        b, t = frames.shape[:2]
        tokens = np.zeros((b, self.history, self.num_tokens), np.int32)
        tokens[:, :t] = np.asarray(self._tokenize(self._tok[1], self._place(frames)))
        actions = np.full((b, self.history), self.dynamics.no_action_id, np.int32)
        if t > 1:
            actions[:, 1:t] = np.asarray(self._infer(self._lam_state, self._place(frames)))
        tokens, actions = self._place(tokens), self._place(actions)
        state = SimulatorState(tokens, actions, t, jax.random.key(self._seed))
        self._state = replace(state, caches=self._rebuilt_caches(state)) if self.use_cache else state
        return frames[:, -1] if b > 1 else frames[0, -1]

    def step(self, action_id: int) -> np.ndarray:
        """Applies one latent action to every world; returns the new frame (H, W, 3) uint8 (batch 1)."""
        frames = self.step_batch([action_id] * self.batch_size)
        return frames[0] if self.batch_size == 1 else frames

    def step_batch(self, action_ids: Sequence[int]) -> np.ndarray:
        """One latent action per world -> new frames (B, H, W, 3) uint8."""
        state = self._require_state()
        ids = np.asarray(action_ids)
        if ids.shape != (self.batch_size,):
            raise ValueError(f"expected {self.batch_size} action ids (one per world), got shape {ids.shape}")
        bad = [int(a) for a in ids.reshape(-1) if not 0 <= int(a) < self.num_actions]
        if bad or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"action id {bad[0] if bad else action_ids!r} is out of range: this world has "
                             f"{self.num_actions} latent actions, 0..{self.num_actions - 1}")
        caches_full = state.length >= self.window  # (streaming) the next frame's cache slot is taken
        if state.length == self.history:  # full: the oldest frame drops out
            state = replace(state, tokens_BWN=jnp.roll(state.tokens_BWN, -1, axis=1), length=state.length - 1,
                            actions_BW=jnp.roll(state.actions_BW, -1, axis=1))
            if self.streaming:  # the others keep their numbers and their cached keys
                state = replace(state, first_position=state.first_position + 1)
            else:  # the new first frame has no action into it; every frame moved to another slot
                state = replace(state, actions_BW=state.actions_BW.at[:, 0].set(self.dynamics.no_action_id),
                                caches=None)
        t, first, ids = np.int32(state.length), np.int32(state.first_position), np.asarray(ids, np.int32)
        if self.use_cache:
            caches = state.caches
            if caches is None:
                caches = self._rebuilt_caches(state)
            elif caches_full:  # streaming: the oldest cached frame drops out
                caches = self._drop_oldest_cached(caches)
            slot = np.int32(min(state.length, self.window - 1))
            tokens, actions, caches, frame, key = self._generate_cached(
                self._dyn[1], self._tok[1], caches, state.tokens_BWN, state.actions_BW, t, slot, first, ids, state.key)
        else:
            tokens, actions, caches, frame, key = self._generate(
                self._dyn[1], self._tok[1], state.tokens_BWN, state.actions_BW, t, first, ids, state.key)
        self._state = SimulatorState(tokens, actions, state.length + 1, key, caches, state.first_position)
        return np.asarray(frame)

    def _rebuilt_caches(self, state: SimulatorState) -> tuple:
        """The caches of the frames held, for generating the next one. Until the window fills, only its first W
        slots can hold frames, so only they run (a reset costs a window, not the whole history)."""
        tokens, actions = state.tokens_BWN, state.actions_BW
        if state.length < self.window:
            tokens, actions = tokens[:, :self.window], actions[:, :self.window]
        return self._prefill(self._dyn[1], self._tok[1], tokens, actions, np.int32(state.length),
                             np.int32(state.first_position))

    def reseed(self, seed: int) -> None:
        """Sets the sampling seed that the next reset() starts from (a new simulator would compile again)."""
        self._seed = seed

    def infer_actions(self, frames_BTHWC: np.ndarray) -> np.ndarray:
        """The LAM's latent action ids (B, T-1) for the transitions of real clips (B, T, H, W, 3) uint8."""
        return np.asarray(self._infer(self._lam_state, self._place(np.asarray(frames_BTHWC))))

    def state(self) -> SimulatorState:
        return self._require_state()

    def restore(self, state: SimulatorState) -> None:
        if state.tokens_BWN.shape != (self.batch_size, self.history, self.num_tokens):
            raise ValueError(f"state of shape {state.tokens_BWN.shape} does not fit this simulator "
                             f"({self.batch_size} worlds, {self.history} frames held, {self.num_tokens} tokens)")
        self._state = state

    # ------------------------------------------------------------------------------------------------------
    def _split(self, model: nnx.Module) -> tuple:
        graph, state = nnx.split(model)
        if self._mesh is not None:
            state = jax.device_put(state, state_shardings(state, self._mesh))
        return graph, state

    def _place(self, batch: np.ndarray) -> jax.Array:
        """A batch (leading axis: worlds or clips) split over the mesh's data axes where they divide it
        (replicated where not), or on the default device without a mesh."""
        if self._mesh is None:
            return jnp.asarray(batch)
        fits = len(batch) % batch_shards(self._mesh) == 0
        return jax.device_put(batch, batch_sharding(self._mesh) if fits else replicated(self._mesh))

    def _require_state(self) -> SimulatorState:
        if self._state is None:
            raise RuntimeError("call reset(frames) before step(): the world needs a starting frame")
        return self._state

    def _as_batch(self, frames: np.ndarray | str | Path) -> np.ndarray:
        if isinstance(frames, (str, Path)):
            frames = load_image(frames, self.height, self.width)[None]
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim == 4:
            frames = np.broadcast_to(frames[None], (self.batch_size,) + frames.shape)
        expected = (self.height, self.width, 3)
        if frames.ndim != 5 or frames.shape[2:] != expected or frames.shape[0] != self.batch_size:
            raise ValueError(f"frames of shape {frames.shape} do not fit this world: expected (T, {self.height}, "
                             f"{self.width}, 3) or ({self.batch_size}, T, {self.height}, {self.width}, 3) uint8")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (0..255), got {frames.dtype}")
        return frames


def load_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """An image file -> (H, W, 3) uint8, resized to the model's frame size."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (width * 4, height * 4))  # bounds decode cost for huge JPEGs
            return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
