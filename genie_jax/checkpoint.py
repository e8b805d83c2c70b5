"""Orbax checkpoints of a stage: model state, optimizer state and a JSON record (step, RNG, data position).

Orbax writes each step to a temporary directory and renames it when complete, so a process killed mid-save
(SIGKILL included) leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding stand-ins for restoring into the same layout as ``tree``."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Keeps the last ``keep`` checkpoints of one stage under ``directory``."""

    def __init__(self, directory: Path, keep: int = 3, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                               create=True)
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("model", "optimizer", "record"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, model_state: dict, optimizer_state: dict, record: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_state), optimizer=ocp.args.StandardSave(optimizer_state),
            record=ocp.args.JsonSave(record)), force=True)

    def restore(self, step: int, model_like: dict, optimizer_like: dict) -> tuple[dict, dict, dict]:
        out = self.manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(abstract_like(model_like)),
            optimizer=ocp.args.StandardRestore(abstract_like(optimizer_like)), record=ocp.args.JsonRestore()))
        return out["model"], out["optimizer"], out["record"]

    def restore_model(self, step: int, model_like: dict | None = None) -> dict:
        """Model weights only; without ``model_like`` they come back as saved, on the default device."""
        target = abstract_like(model_like) if model_like is not None else None
        out = self.manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(target)))
        return out["model"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
