"""The one trainer for every stage: mesh, sharding, optimizer, checkpoints, metrics. A stage supplies its loss.

Resuming: the step's RNG key is ``fold_in(seed, step)`` and the data loader indexes batches by step, so
restoring the step from the latest checkpoint restores the RNG and the data position with it; a run killed at
any moment (SIGKILL included) continues the same curve from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from tqdm.auto import tqdm

from genie_jax.checkpoint import Checkpointer
from genie_jax.config import Config, TrainConfig, config_to_dict
from genie_jax.data import ClipDataset, Loader
from genie_jax.metrics_log import MetricsLog
from genie_jax.run import RunDir, RunError, load_model, trained_in
from genie_jax.sharding import batch_sharding, batch_shards, make_mesh, state_shardings
from genie_jax.stages import (BUILDERS, LossFn, ModelShape, Trainable, after_update, frozen_names, stage_eval_metrics,
                              stage_loss, trainable_names)
from genie_jax.token_cache import tokenize_split, use_token_cache

log = logging.getLogger(__name__)

# Fields that may change between a run and its resumption (they do not change what is being trained).
RESUMABLE_CHANGES = {"steps", "log_every", "checkpoint_every", "keep_checkpoints", "token_cache"}


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup, then cosine decay to ``min_lr`` or warmup-stable-decay (WSD)."""
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(cfg.steps, warmup + 1), cfg.min_lr)
    if cfg.schedule == "wsd":
        decay = max(int(cfg.steps * cfg.decay_fraction), 1)
        stable = max(cfg.steps - warmup - decay, 0)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr),
             optax.cosine_decay_schedule(cfg.lr, decay, alpha=cfg.min_lr / cfg.lr)],
            boundaries=[warmup, warmup + stable])
    raise ValueError(f"unknown schedule {cfg.schedule!r}: choose cosine or wsd")


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW (decay on matrices only, not on norms, biases or position tables) with global-norm clipping."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim == 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                    mask=decay_mask))


def _train_step(loss_fn: LossFn, grad_accum: int, graphdef, frozen_graphdef, state, frozen_state, batch: dict,
                key: jax.Array):
    models, optimizer = nnx.merge(graphdef, state)
    frozen = nnx.merge(frozen_graphdef, frozen_state)
    loss_key, reset_key = jax.random.split(key)
    model_graph, params, rest = nnx.split(models, nnx.Param, ...)

    def loss_of(params, batch: dict, key: jax.Array):
        loss, metrics, updates = loss_fn(nnx.merge(model_graph, params, rest), frozen, batch, key)
        return loss, (metrics, updates)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    if grad_accum == 1:
        (loss, (metrics, updates)), grads = grad_fn(params, batch, loss_key)
    else:
        (loss, (metrics, updates)), grads = _accumulated(grad_fn, params, batch, loss_key, grad_accum)
    optimizer.update(models, grads)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads))
    metrics.update(after_update(models, updates, reset_key))
    return nnx.state((models, optimizer)), metrics


def _accumulated(grad_fn, params, batch: dict, key: jax.Array, parts: int):
    """``grad_fn`` over ``parts`` micro-batches in a loop, so activations are held for one at a time: gradients,
    loss and metrics averaged, updates (codes, latents) stacked. Micro-batch j is rows j, j+parts, ... of the
    batch, so on a data-sharded batch every device keeps its own rows."""
    micro = jax.tree.map(lambda x: x.reshape((x.shape[0] // parts, parts) + x.shape[1:]).swapaxes(0, 1), batch)

    def one(grads_sum, inputs):
        part, part_key = inputs
        out, grads = grad_fn(params, part, part_key)
        return jax.tree.map(jnp.add, grads_sum, grads), out

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, (metrics, updates)) = jax.lax.scan(one, zeros, (micro, jax.random.split(key, parts)))
    mean = partial(jnp.mean, axis=0)
    return (mean(losses), (jax.tree.map(mean, metrics), updates)), jax.tree.map(lambda g: g / parts, grads)


def _eval_step(metrics_fn, graphdef, frozen_graphdef, state, frozen_state, batch: dict, key: jax.Array):
    models, _ = nnx.merge(graphdef, state)
    return metrics_fn(models, nnx.merge(frozen_graphdef, frozen_state), batch, key)


@dataclasses.dataclass
class TrainState:
    """A stage's models and optimizer split into a graph and (sharded) state, the frozen models, and the stage's
    loss and evaluation metrics."""

    graphdef: Any
    state: Any
    shardings: Any
    frozen_graphdef: Any
    frozen_state: Any
    loss_fn: LossFn
    metrics_fn: Any
    grad_accum: int = 1


def init_train_state(stage: str, config: Config, shape: ModelShape, frozen: dict[str, nnx.Module],
                     mesh) -> TrainState:
    """Builds the stage's trainable models (seeded by train.seed) and optimizer, placed on ``mesh``."""
    cfg = config.stage_train(stage)
    rngs = nnx.Rngs(cfg.seed)
    models = Trainable(**{name: BUILDERS[name](config, shape, cfg.dtype, rngs)
                          for name in trainable_names(stage, config)})
    optimizer = nnx.Optimizer(models, make_optimizer(cfg), wrt=nnx.Param)
    graphdef, state = nnx.split((models, optimizer))
    shardings = state_shardings(state, mesh)
    frozen_graphdef, frozen_state = nnx.split(nnx.Dict(frozen))
    return TrainState(graphdef, jax.device_put(state, shardings), shardings, frozen_graphdef,
                      jax.device_put(frozen_state, state_shardings(frozen_state, mesh)),
                      stage_loss(stage, config), stage_eval_metrics(stage, config), cfg.grad_accum)


def compile_steps(setup: TrainState):
    """The jitted train step (state donated, shardings kept) and the jitted evaluation step."""
    step_fn = jax.jit(partial(_train_step, setup.loss_fn, setup.grad_accum, setup.graphdef, setup.frozen_graphdef),
                      donate_argnums=(0,),
                      out_shardings=(setup.shardings, None))
    eval_fn = jax.jit(partial(_eval_step, setup.metrics_fn, setup.graphdef, setup.frozen_graphdef))
    return step_fn, eval_fn


@dataclasses.dataclass
class TrainResult:
    stage: str
    step: int
    metrics: dict[str, float]
    frames_per_second: float


def check_resumable(run: RunDir, stage: str, config: Config) -> None:
    """A run directory may only be resumed with the config it was started with (step counts may change)."""
    saved = config_to_dict(run.stage_config(stage))
    wanted = config_to_dict(config)
    for d in (saved, wanted):
        for name in RESUMABLE_CHANGES:
            d["train"][stage].pop(name)
        d.pop("name")
    if saved != wanted:
        raise RunError(f"{run.stage_dir(stage)} was trained with a different config; resume with the same config "
                       f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change) or use a new --run directory")


def train(stage: str, config: Config, data_dir: str | Path, run_dir: str | Path, *, progress: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Trains ``stage`` (tokenizer, lam or dynamics) into ``run_dir``, resuming from its latest checkpoint.

    ``stop_after`` ends the call after that many steps of this invocation (tests use it to simulate a kill).
    """
    cfg = config.stage_train(stage)
    dataset = ClipDataset(data_dir)
    info = dataset.info
    if cfg.num_frames > info.clip_len:
        raise ValueError(f"train.num_frames={cfg.num_frames} exceeds the dataset's clip length {info.clip_len} "
                         f"({info.path})")
    mesh = make_mesh(cfg.mesh_data, cfg.mesh_fsdp, cfg.mesh_tensor)
    if cfg.batch_size % batch_shards(mesh):
        raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by the {batch_shards(mesh)} "
                         f"batch shards of mesh {dict(mesh.shape)}")
    if cfg.grad_accum < 1 or cfg.batch_size % (cfg.grad_accum * batch_shards(mesh)):
        raise ValueError(f"train.grad_accum={cfg.grad_accum} must be >= 1 and split train.batch_size={cfg.batch_size} "
                         f"into micro-batches with whole rows on each of the {batch_shards(mesh)} batch shards")
    run = RunDir(run_dir)
    needed = frozen_names(stage, config)
    if needed:
        run.require(*needed)
    shape = ModelShape(info.height, info.width, cfg.num_frames)

    frozen = {name: load_model(run, name, dtype=cfg.dtype) for name in needed}
    for name in needed:
        _check_compatible(run, name, shape)
    setup = init_train_state(stage, config, shape, frozen, mesh)
    state, frozen_state = setup.state, setup.frozen_state

    checkpointer = Checkpointer(run.checkpoint_dir(stage), keep=cfg.keep_checkpoints)
    start = checkpointer.latest_step() or 0
    data_record = {"path": str(Path(data_dir).absolute()), "fingerprint": info.fingerprint}
    if start:
        check_resumable(run, stage, config)
        state = _restore(checkpointer, start, state)
        log.info("resumed %s from step %d", stage, start)
    else:
        run.write_stage(stage, config, shape, cfg.dtype, data_record)

    step_fn, eval_fn = compile_steps(setup)
    tokens = None
    if stage == "dynamics" and use_token_cache(
            cfg.token_cache, steps=cfg.steps - start, batch_size=cfg.batch_size, num_clips=info.num_clips["train"],
            tokens_per_clip=cfg.num_frames * frozen["tokenizer"].num_tokens, process_count=jax.process_count()):
        tokens = tokenize_split(frozen["tokenizer"], dataset, "train", cfg.num_frames, cfg.batch_size, mesh,
                                progress=progress)
    loader = Loader(dataset, "train", cfg.batch_size, cfg.seed, start, batch_sharding(mesh),
                    num_frames=cfg.num_frames, tokens=tokens)
    metrics_log = MetricsLog(run.stage_dir(stage), start_step=start, enabled=jax.process_index() == 0)
    base_key = jax.random.key(cfg.seed)
    schedule = learning_rate_schedule(cfg)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(total=cfg.steps, initial=start, desc=stage, disable=not progress or jax.process_index() != 0,
               dynamic_ncols=True)
    host_metrics: dict[str, float] = {}
    fps = 0.0
    last_time, last_step = time.perf_counter(), start
    step = start
    try:
        for step in range(start, end):
            batch = {k: v for k, v in next(loader).items() if k in ("frames", "tokens")}
            step_key = jax.random.fold_in(base_key, step)
            state, metrics = step_fn(state, frozen_state, batch, step_key)
            done = step + 1
            if done % cfg.log_every == 0 or done == end:
                metrics = dict(metrics, **eval_fn(state, frozen_state, batch, jax.random.fold_in(step_key, 1)))
                host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                now = time.perf_counter()
                fps = (done - last_step) * cfg.batch_size * cfg.num_frames / max(now - last_time, 1e-9)
                last_time, last_step = now, done
                host_metrics.update(lr=float(schedule(step)), frames_per_second=fps)
                metrics_log.write(done, host_metrics)
                bar.set_postfix(loss=f"{host_metrics['loss']:.4g}", fps=f"{fps:.0f}")
            bar.update(1)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                _save(checkpointer, done, state, cfg, data_record)
        step = end
    finally:
        bar.close()
        loader.close()
        checkpointer.close()
        metrics_log.close()
    return TrainResult(stage, step, host_metrics, fps)


def _split_state(state) -> tuple[dict, dict]:
    pure = nnx.to_pure_dict(state)
    return pure[0], pure[1]


def _save(checkpointer: Checkpointer, step: int, state, cfg: TrainConfig, data_record: dict) -> None:
    model_state, optimizer_state = _split_state(state)
    record = {"step": step, "seed": cfg.seed, "data_position": step, "data": data_record}
    checkpointer.save(step, model_state, optimizer_state, record)


def _restore(checkpointer: Checkpointer, step: int, state):
    model_like, optimizer_like = _split_state(state)
    model_state, optimizer_state, record = checkpointer.restore(step, model_like, optimizer_like)
    if record.get("data_position") != step:
        raise RunError(f"checkpoint {step} in {checkpointer.directory} is inconsistent (data position "
                       f"{record.get('data_position')}); delete it to resume from the one before")
    nnx.replace_by_pure_dict(state, {0: model_state, 1: optimizer_state})
    return state


def _check_compatible(run: RunDir, name: str, shape: ModelShape) -> None:
    saved = ModelShape(**run.stage_record(trained_in(run, name))["shape"])
    if (saved.height, saved.width) != (shape.height, shape.width):
        raise RunError(f"the {name} in {run.root} was trained on {saved.height}x{saved.width} frames but this "
                       f"dataset has {shape.height}x{shape.width}")
    if shape.max_frames > saved.max_frames:
        raise RunError(f"the {name} in {run.root} has a {saved.max_frames}-frame window; train.num_frames="
                       f"{shape.max_frames} is longer")


def describe(result: TrainResult) -> str:
    shown = {k: v for k, v in result.metrics.items() if k in ("loss", "psnr", "lam_action_gain_db", "ce",
                                                               "masked_token_accuracy", "lam_perplexity")}
    parts = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
    return f"{result.stage}: step {result.step}, {parts}, {result.frames_per_second:.1f} frames/s"
