"""Configuration as data: a frozen dataclass tree, loaded from a Python preset and overridden by dotted keys.

A preset file (``configs/demo.py``) defines ``get_config() -> Config``. The command line adds
``--set train.steps=3`` style overrides. A resolved config is saved as JSON in the run directory and read back
with :func:`config_from_dict` (no pickles).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("tokenizer", "lam", "dynamics")


class ConfigError(ValueError):
    """A user-facing configuration problem (bad preset path, unknown key, bad value)."""


@dataclass(frozen=True)
class TransformerConfig:
    """An ST-transformer stack: ``depth`` blocks of spatial attention, causal temporal attention, one FFN."""

    width: int = 128
    depth: int = 2
    heads: int = 4
    ffn_dim: int = 512
    # 2D rotary position embedding in spatial attention (on top of the learned positions): attention scores then
    # depend on the relative (row, column) offset, so "take the token one column to the right" (a camera scroll
    # of one patch) is one pattern for every position instead of one to learn per position.
    spatial_rope: bool = False
    # Time positions of the temporal attention. "learned": a table added to the input, one row per window slot.
    # "rope": a rotary embedding at each frame's number, so attention scores depend on how far apart two frames
    # are, and each frame attends to the last ``window`` frames (its own included). A generated world can then run
    # past the window with its cached keys and values kept (simulator.py), instead of rebuilding them each frame.
    temporal_positions: str = "learned"


@dataclass(frozen=True)
class TokenizerConfig:
    """ST-ViViT VQ-VAE over patches of each frame (Genie: patch 4, 1024 codes of dim 32)."""

    patch: int = 4
    codebook_size: int = 1024
    code_dim: int = 32
    encoder: TransformerConfig = TransformerConfig()  # depth 0: per-patch MLP encoder (tokens = f(patch pixels))
    decoder: TransformerConfig = TransformerConfig()
    commitment: float = 0.25
    vq_weight: float = 1.0  # weight of codebook+commitment terms next to the pixel MSE
    reset_dead_after: int = 100  # steps a code may go unused before it is re-seeded from encoder outputs


@dataclass(frozen=True)
class LAMConfig:
    """Latent action model on raw pixels: encoder over x_{1:t+1} -> tiny VQ codebook -> decoder predicting x_{t+1}."""

    patch: int = 16
    num_actions: int = 8
    code_dim: int = 32
    encoder: TransformerConfig = TransformerConfig()
    decoder: TransformerConfig = TransformerConfig()
    commitment: float = 0.25
    # The pixel MSE is ~1e-3 while codebook terms are O(1): with equal weights the encoder collapses to a
    # constant (GENIE_NOTES, "Known failure"). The reconstruction is therefore weighted up by default.
    recon_weight: float = 1000.0
    reset_dead_after: int = 50
    # Genie's decoder sees x_{1:t}. With actions held for several frames, the history alone predicts most motion
    # and the codes learn little; False makes the decoder see only x_t, so the motion must come from a_t.
    decoder_history: bool = True
    # Each encoder patch also carries its change since the previous frame (x_{t+1} - x_t), so motion is visible to
    # the first layer instead of having to be discovered by attention across time. Still causal.
    motion_input: bool = True
    # Optional global-motion term in the decoder: the prediction adds an action-weighted mix of x_t shifted by
    # (dy, dx) in {-r, .., r} (step `global_motion_step` pixels) to the transformer's residual. Camera scrolls
    # then cost the decoder one softmax instead of learned token routing, which a small CPU budget does not
    # reach. 0 turns it off (Genie's plain decoder).
    global_motion_radius: int = 0
    global_motion_step: int = 2
    # With the global-motion term on: True lets each decoder patch re-weight the shifts (its transformer output adds
    # to the action's shift logits), so parallax layers and sprites can move by different amounts than the camera.
    local_motion: bool = False
    # Optional motion cost volume for the encoder: each patch also carries, for every shift (dy, dx) in
    # {-r, .., r} (step `cost_volume_step`), how far x_t moved by that shift is from x_{t+1} in the patch. The
    # direction of motion is then read off the input rather than learned from patch pixels (which a few hundred
    # steps do not teach: a left and a right scroll look alike in a patch's pixels and its change). 0: off.
    cost_volume_radius: int = 0
    cost_volume_step: int = 2


@dataclass(frozen=True)
class DynamicsConfig:
    """MaskGIT transformer over tokenizer tokens, conditioned on latent actions."""

    transformer: TransformerConfig = TransformerConfig()
    action_conditioning: str = "additive"  # "additive" (Genie) or "prepend" (one action token per frame, Jasmine)
    mask_rate_min: float = 0.5  # per-example Bernoulli mask rate drawn from U(mask_rate_min, 1)
    # Share of frames left wholly unmasked in training (they are context, not targets). At inference the past is
    # always complete; with 0 (Genie's scheme) training almost never shows a complete previous frame.
    clean_frame_prob: float = 0.0
    maskgit_steps: int = 25
    temperature: float = 1.0
    schedule: str = "cosine"  # "cosine" or "linear" unmasking schedule


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping for one stage."""

    steps: int = 1000
    batch_size: int = 8
    num_frames: int = 16  # frames per training clip (<= the dataset's clip length)
    seed: int = 0
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" or "wsd" (warmup-stable-decay)
    decay_fraction: float = 0.2  # wsd only: share of steps spent decaying
    b1: float = 0.9
    b2: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16" (parameters stay float32)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    co_train_lam: bool = False  # dynamics stage only: train the LAM jointly, as in the paper
    # With co_train_lam, what the LAM learns from: "reconstruction" (Genie: its own decoder's loss; the dynamics sees
    # stopped actions) or "dynamics" (Jasmine: no LAM decoder; its encoder learns through the dynamics' loss).
    co_train_lam_loss: str = "reconstruction"
    # Dynamics stage only: tokenize the training clips once before training instead of in every step (the tokenizer
    # is frozen): "auto" (when the run draws each clip at least once on average), "always" or "never".
    token_cache: str = "auto"
    # Micro-batches per step: the batch is split into this many (strided) parts whose gradients are averaged, so the
    # backward pass holds one part's activations at a time (the paper-sized presets at batch 8 on a CPU need it).
    grad_accum: int = 1
    # Mesh axis sizes; -1 takes the remaining devices. data x fsdp shard the batch, fsdp/tensor shard parameters.
    mesh_data: int = -1
    mesh_fsdp: int = 1
    mesh_tensor: int = 1


@dataclass(frozen=True)
class StageTrainConfigs:
    tokenizer: TrainConfig = TrainConfig()
    lam: TrainConfig = TrainConfig(lr=3e-4)
    dynamics: TrainConfig = TrainConfig(lr=3e-4)


@dataclass(frozen=True)
class Config:
    name: str = "default"
    tokenizer: TokenizerConfig = TokenizerConfig()
    lam: LAMConfig = LAMConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    train: StageTrainConfigs = StageTrainConfigs()

    def stage_train(self, stage: str) -> TrainConfig:
        check_stage(stage)
        return getattr(self.train, stage)


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")


# ----------------------------------------------------------------------------------------------------------
# Loading and overriding


def load_preset_module(path: str | Path) -> types.ModuleType:
    """Executes a preset file such as ``configs/demo.py`` and returns it as a module."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (presets live in configs/, e.g. configs/demo.py)")
    spec = importlib.util.spec_from_file_location(f"genie_preset_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_preset(path: str | Path) -> Config:
    """Runs ``get_config()`` from a preset file such as ``configs/demo.py``."""
    module = load_preset_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} must define get_config() -> genie_jax.config.Config")
    config = module.get_config()
    if not isinstance(config, Config):
        raise ConfigError(f"get_config() in {path} returned {type(config).__name__}, expected Config")
    return config


def preset_path(name: str) -> Path:
    """The bundled preset ``configs/<name>.py``."""
    return Path(__file__).resolve().parent.parent / "configs" / f"{name}.py"


def apply_overrides(config: Config, overrides: list[str], stage: str | None = None) -> Config:
    """Applies ``key=value`` overrides with dotted keys; values are Python literals (or bare strings).

    ``train.X`` with X a TrainConfig field is shorthand for ``train.<stage>.X`` when a stage is given.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.steps=3)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if stage and len(parts) == 2 and parts[0] == "train" and parts[1] in _field_names(TrainConfig):
            parts = ["train", stage, parts[1]]
        config = _replace_path(config, parts, _parse_value(raw.strip()), key)
    return config


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _parse_value(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # bare strings such as schedule=wsd


def _replace_path(node: Any, parts: list[str], value: Any, full_key: str) -> Any:
    name = parts[0]
    if not dataclasses.is_dataclass(node) or name not in _field_names(type(node)):
        options = sorted(_field_names(type(node))) if dataclasses.is_dataclass(node) else []
        raise ConfigError(f"unknown config key {full_key!r} (at {name!r}; valid here: {', '.join(options)})")
    current = getattr(node, name)
    if len(parts) == 1:
        if dataclasses.is_dataclass(current):
            raise ConfigError(f"config key {full_key!r} names a section; set one of its fields instead")
        expected = _field_types(type(node))[name]
        return dataclasses.replace(node, **{name: _coerce(value, expected, full_key)})
    return dataclasses.replace(node, **{name: _replace_path(current, parts[1:], value, full_key)})


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, expected: Any, key: str) -> Any:
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif expected is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key {key!r} expects {getattr(expected, '__name__', expected)}, got {value!r}")


# ----------------------------------------------------------------------------------------------------------
# JSON round trip


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(data: dict, cls: type = Config) -> Any:
    """Rebuilds a dataclass tree from :func:`config_to_dict` output; unknown keys are an error."""
    hints = _field_types(cls)
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"unknown keys in saved {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = config_from_dict(value, hint)
        elif isinstance(hint, types.GenericAlias) or typing.get_origin(hint) is not None:
            kwargs[name] = value
        else:
            kwargs[name] = _coerce(value, hint, f"{cls.__name__}.{name}")
    return cls(**kwargs)


def save_config(config: Config, path: Path) -> None:
    from genie_jax.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True))


def load_config_json(path: Path) -> Config:
    return config_from_dict(json.loads(Path(path).read_text()))
