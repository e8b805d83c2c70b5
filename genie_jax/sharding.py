"""Meshes, logical-axis rules and multi-process start-up.

Model code names parameter axes logically (``embed``, ``mlp``, ``heads``, ``vocab``). Here those names map to the
mesh axes ``data``, ``fsdp`` and ``tensor``; an axis whose size the mesh axis does not divide stays replicated, so
the same model runs on 1 device, 8 fake CPU devices, one GPU or many hosts.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
# Logical parameter axis -> mesh axis. The batch is split over data and fsdp (see batch_sharding).
LOGICAL_RULES: dict[str, str] = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor", "vocab": "tensor"}


def maybe_initialize_distributed(force: bool = False) -> None:
    """Starts ``jax.distributed`` when launched as one of several processes.

    Triggered by ``force`` or by the variables JAX itself reads (``JAX_COORDINATOR_ADDRESS``) or a SLURM
    multi-task launch; JAX then discovers the process count and id from the cluster environment.
    """
    multi = "JAX_COORDINATOR_ADDRESS" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if (force or multi) and not jax.distributed.is_initialized():
        jax.distributed.initialize()
        log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: list | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices; one axis size may be -1 (whatever is left)."""
    devices = devices if devices is not None else jax.devices()
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"only one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh axes {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                         f"found {len(devices)}")
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                         devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over data x fsdp, everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def batch_shards(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def logical_to_mesh_spec(names: tuple | None, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Maps logical axis names to mesh axes, replicating axes the mesh cannot divide evenly."""
    if not names:
        return PartitionSpec()
    axes = []
    for name, size in zip(names, shape):
        mesh_axis = LOGICAL_RULES.get(name) if name else None
        if mesh_axis and mesh.shape[mesh_axis] > 1 and size % mesh.shape[mesh_axis] == 0:
            axes.append(mesh_axis)
        else:
            axes.append(None)
    return PartitionSpec(*axes)


def state_shardings(state: nnx.State, mesh: Mesh):
    """NamedShardings for every leaf of an nnx State, from each Variable's logical ``out_sharding`` metadata.

    Variables without names (optimizer counters, usage statistics) are replicated. Optimizer moments carry the
    metadata of the parameter they belong to, so they shard the same way.
    """

    def one(variable):
        names = variable.get_metadata().get("out_sharding")
        return NamedSharding(mesh, logical_to_mesh_spec(names, np.shape(variable[...]), mesh))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def placed(model: nnx.Module, mesh: Mesh) -> tuple:
    """``model`` split into its graph and its state, the state placed on ``mesh`` (for a jitted function of state)."""
    graph, state = nnx.split(model)
    return graph, jax.device_put(state, state_shardings(state, mesh))
