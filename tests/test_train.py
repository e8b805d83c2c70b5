"""The trainer: each stage learns, sharded == unsharded, and a killed run resumes on the same curve."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_config, write_preset

from genie_jax.config import ConfigError, apply_overrides
from genie_jax.data import DataError
from genie_jax.metrics_log import read_metrics
from genie_jax.run import RunError
from genie_jax.sharding import make_mesh
from genie_jax.stages import ModelShape, build_lam, build_tokenizer
from genie_jax.train import compile_steps, init_train_state, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["tokenizer", "lam", "dynamics"])
def test_loss_falls_when_overfitting_one_batch(stage, frames):
    from flax import nnx

    config = tiny_config(steps=40)
    shape = ModelShape(16, 16, 8)
    frozen = {}
    if stage == "dynamics":  # random frozen models still give a fixed token/action target to fit
        frozen = {"tokenizer": build_tokenizer(config, shape, "float32", nnx.Rngs(1)),
                  "lam": build_lam(config, shape, "float32", nnx.Rngs(2))}
    setup = init_train_state(stage, config, shape, frozen, make_mesh())
    step_fn, _ = compile_steps(setup)
    state, batch = setup.state, {"frames": jax.numpy.asarray(frames)}
    losses = []
    for i in range(40):
        state, metrics = step_fn(state, setup.frozen_state, batch, jax.random.key(i if stage == "dynamics" else 0))
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.7 * first, f"{stage} loss did not fall: {losses[:3]} ... {losses[-3:]}"


def _losses(run: Path, stage: str) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(run / stage / "metrics.jsonl")}


@pytest.mark.slow
def test_kill_and_resume_continues_the_same_curve(tiny_data, tmp_path):
    preset = write_preset(tmp_path / "preset.py", steps=8)
    config = apply_overrides(tiny_config(steps=8), [])
    reference = tmp_path / "reference"
    train("tokenizer", config, tiny_data, reference, progress=False)

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "genie_jax.cli", "train", "tokenizer", "--config", preset, "--data",
           str(tiny_data), "--run", str(killed), "--no-progress", "--set", "train.steps=8"]
    proc = subprocess.Popen(cmd, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "tokenizer" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt.is_dir() and any(p.name in ("2", "4") for p in ckpt.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 8, f"the run was not killed mid-way (checkpoints {saved})"

    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    want, got = _losses(reference, "tokenizer"), _losses(killed, "tokenizer")
    assert sorted(got) == sorted(want) == [2, 4, 6, 8]
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)


@pytest.mark.slow
def test_one_device_and_eight_fake_devices_give_the_same_losses(tiny_data, tmp_path):
    config = tiny_config(steps=4, log_every=1)
    one = tmp_path / "one"
    train("lam", config, tiny_data, one, progress=False)
    script = f"""
import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})
import jax
assert jax.device_count() == 8, jax.devices()
from conftest import tiny_config
from genie_jax.train import train
config = tiny_config(steps=4, log_every=1, mesh_data=2, mesh_fsdp=2, mesh_tensor=2)
train("lam", config, {str(tiny_data)!r}, {str(tmp_path / 'eight')!r}, progress=False)
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    want, got = _losses(one, "lam"), _losses(tmp_path / "eight", "lam")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=2e-4)


def test_clear_errors(tiny_data, tmp_path):
    config = tiny_config()
    with pytest.raises(DataError, match="genie ingest"):
        train("tokenizer", config, tmp_path / "no_such_data", tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="empty_run does not exist"):
        train("dynamics", config, tiny_data, tmp_path / "empty_run", progress=False)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(RunError, match="no trained tokenizer: run `genie train tokenizer"):
        train("dynamics", config, tiny_data, tmp_path / "empty_run", progress=False)
    with pytest.raises(ConfigError, match="unknown config key 'train.tokenizer.stepz'"):
        apply_overrides(config, ["train.tokenizer.stepz=3"])
    with pytest.raises(ConfigError, match="expects int"):
        apply_overrides(config, ["train.steps=many"], stage="lam")
    assert apply_overrides(config, ["train.steps=7"], stage="lam").train.lam.steps == 7
    too_long = dataclasses.replace(config, train=dataclasses.replace(
        config.train, tokenizer=dataclasses.replace(config.train.tokenizer, num_frames=99)))
    with pytest.raises(ValueError, match="exceeds the dataset's clip length"):
        train("tokenizer", too_long, tiny_data, tmp_path / "run2", progress=False)


def test_random_mask_keeps_frame_zero_and_clean_frames_visible():
    from genie_jax.stages import random_mask

    key = jax.random.key(0)
    mask = np.asarray(random_mask(key, (16, 8, 64), 0.5))
    assert not mask[:, 0].any()
    rates = mask[:, 1:].mean(axis=(1, 2))
    assert (rates > 0.4).all()  # every later frame masked at U(0.5, 1)
    assert not np.asarray(random_mask(key, (16, 8, 64), 0.5, clean_frame_prob=1.0)).any()
    half = np.asarray(random_mask(key, (64, 8, 64), 0.5, clean_frame_prob=0.5))
    clean_share = (~half[:, 1:].any(axis=2)).mean()
    assert 0.35 < clean_share < 0.65


@pytest.mark.slow
def test_gradient_accumulation_matches_the_whole_batch(frames):
    """grad_accum=2 averages two micro-batches' gradients: the same losses and gradient norms as one batch of both
    (the tokenizer's loss is a mean over equal micro-batches)."""
    import jax.numpy as jnp

    shape = ModelShape(16, 16, 8)
    batch = {"frames": jnp.asarray(np.concatenate([frames, frames[:, ::-1]]))}  # 4 clips
    losses = {}
    for accum in (1, 2):
        setup = init_train_state("tokenizer", tiny_config(steps=3, grad_accum=accum), shape, {}, make_mesh())
        step_fn, _ = compile_steps(setup)
        state, curve = setup.state, []
        for i in range(3):
            state, metrics = step_fn(state, setup.frozen_state, batch, jax.random.key(i))
            curve.append((float(metrics["loss"]), float(metrics["grad_norm"])))
        losses[accum] = np.array(curve)
    assert losses[1][0, 0] > losses[1][-1, 0]
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4)  # the gradient's norm too: averaged, not summed


def test_gradient_accumulation_must_split_the_batch(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="grad_accum=3 must be >= 1 and split train.batch_size=4"):
        train("tokenizer", tiny_config(grad_accum=3), tiny_data, tmp_path / "run", progress=False)
