"""The run directory: the one thing passed between commands after the dataset.

Layout::

    RUN/<stage>/config.json      resolved config used to train the stage
    RUN/<stage>/stage.json       frame size, window, dtype, dataset path and fingerprint
    RUN/<stage>/checkpoints/     Orbax checkpoints
    RUN/<stage>/metrics.jsonl    one JSON object per logged step
    RUN/<stage>/tensorboard/     TensorBoard event files
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from flax import nnx

from genie_jax.checkpoint import Checkpointer
from genie_jax.config import Config, check_stage, load_config_json, save_config
from genie_jax.io_utils import atomic_write_json
from genie_jax.stages import BUILDERS, ModelShape


class RunError(Exception):
    """A user-facing problem with a run directory (missing, or lacking a trained stage)."""


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        check_stage(stage)
        return self.root / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints"

    def has_stage(self, stage: str) -> bool:
        return (self.stage_dir(stage) / "stage.json").is_file() and any(self.checkpoint_dir(stage).glob("[0-9]*"))

    def require(self, *stages: str) -> None:
        if not self.root.is_dir():
            raise RunError(f"run directory {self.root} does not exist: train into it first "
                           f"(genie train tokenizer --config configs/demo.py --data DATA --run {self.root})")
        for stage in stages:
            if not self.has_stage(stage):
                raise RunError(f"run directory {self.root} has no trained {stage}: run "
                               f"`genie train {stage} --config CONFIG --data DATA --run {self.root}` first")

    def write_stage(self, stage: str, config: Config, shape: ModelShape, dtype: str, data_info: dict) -> None:
        save_config(config, self.stage_dir(stage) / "config.json")
        atomic_write_json(self.stage_dir(stage) / "stage.json",
                          {"stage": stage, "shape": asdict(shape), "dtype": dtype, "data": data_info})

    def stage_record(self, stage: str) -> dict:
        return json.loads((self.stage_dir(stage) / "stage.json").read_text())

    def stage_config(self, stage: str) -> Config:
        return load_config_json(self.stage_dir(stage) / "config.json")


def trained_in(run: RunDir, name: str) -> str:
    """The stage whose checkpoints hold model ``name`` (a co-trained LAM lives in the dynamics stage)."""
    if run.has_stage(name):
        return name
    if name == "lam" and run.has_stage("dynamics") and run.stage_config("dynamics").train.dynamics.co_train_lam:
        return "dynamics"
    run.require(name)  # raises the right message
    return name


def load_model(run: RunDir, name: str, dtype: str | None = None) -> nnx.Module:
    """Builds model ``name`` as it was configured and restores its latest weights (no optimizer state)."""
    stage = trained_in(run, name)
    record = run.stage_record(stage)
    model = BUILDERS[name](run.stage_config(stage), ModelShape(**record["shape"]), dtype or record["dtype"],
                           nnx.Rngs(0))
    checkpointer = Checkpointer(run.checkpoint_dir(stage), asynchronous=False)
    try:
        restored = checkpointer.restore_model(checkpointer.latest_step(), None)
    finally:
        checkpointer.close()
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, restored[name])
    nnx.update(model, state)
    return model
