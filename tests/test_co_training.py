"""The dynamics stage's options: the LAM co-trained through its own loss (Genie) or through the dynamics' loss
(Jasmine), and the token cache that replaces the frozen tokenizer's pass in every step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from genie_jax.config import ConfigError, apply_overrides
from genie_jax.data import ClipDataset, Loader
from genie_jax.metrics_log import read_metrics
from genie_jax.sharding import make_mesh
from genie_jax.stages import ModelShape, Trainable, build_dynamics, build_lam, build_tokenizer, dynamics_loss
from genie_jax.token_cache import MAX_AUTO_BYTES, tokenize_split, use_token_cache
from genie_jax.train import compile_steps, init_train_state, train

SHAPE = ModelShape(16, 16, 8)


def _models(config):
    trainable = Trainable(lam=build_lam(config, SHAPE, "float32", nnx.Rngs(2)),
                          dynamics=build_dynamics(config, SHAPE, "float32", nnx.Rngs(3)))
    return trainable, {"tokenizer": build_tokenizer(config, SHAPE, "float32", nnx.Rngs(1))}


def _ce_grads(models, frozen, frames, lam_loss: str):
    """Gradients of the dynamics' cross-entropy alone (not the LAM's own terms) with respect to every model."""
    def ce(models):
        return dynamics_loss(models, frozen, {"frames": frames}, jax.random.key(0), lam_loss=lam_loss)[1]["ce"]
    return nnx.grad(ce)(models)


@nnx.jit
def _straight_through_case(models, frozen, frames, probs):
    """(logits with the LAM's actions as ids, logits with ids plus straight-through probabilities, the CE's
    gradients with Jasmine's co-training, the CE's gradients with Genie's): one compiled call."""
    dynamics = models.dynamics
    tokens = frozen["tokenizer"].tokenize(frames)
    ids = dynamics.align_actions(models.lam.infer_actions(frames))
    return (dynamics(tokens, ids), dynamics(tokens, ids, dynamics.align_action_probs(probs)),
            _ce_grads(models, frozen, frames, "dynamics"), _ce_grads(models, frozen, frames, "reconstruction"))


def _norm(tree) -> float:
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_straight_through_actions_keep_the_value_and_carry_the_gradient(frames):
    config = tiny_config()
    models, frozen = _models(config)
    frames = jnp.asarray(frames)
    transitions = (frames.shape[0], frames.shape[1] - 1, config.lam.num_actions)
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(1), transitions))
    hard, straight_through, jasmine, genie = _straight_through_case(models, frozen, frames, probs)
    np.testing.assert_array_equal(np.asarray(hard), np.asarray(straight_through))
    # Jasmine's co-training: the dynamics' loss reaches the LAM's encoder and codebook, never its decoder.
    assert _norm(jasmine["lam"]["encoder"]) > 0 and _norm(jasmine["lam"]["vq"]) > 0
    assert _norm(jasmine["lam"]["decoder"]) == 0
    # Genie's co-training: the dynamics sees stopped actions, so its loss leaves the LAM alone.
    assert _norm(genie["lam"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("lam_loss", ["reconstruction", "dynamics"])
def test_co_trained_dynamics_loss_falls(lam_loss, frames):
    config = apply_overrides(tiny_config(steps=40), [
        "train.dynamics.co_train_lam=True", f"train.dynamics.co_train_lam_loss={lam_loss}"])
    frozen = {"tokenizer": build_tokenizer(config, SHAPE, "float32", nnx.Rngs(1))}
    setup = init_train_state("dynamics", config, SHAPE, frozen, make_mesh())
    step_fn, eval_fn = compile_steps(setup)
    state, batch = setup.state, {"frames": jnp.asarray(frames)}
    losses = []
    for i in range(40):
        state, metrics = step_fn(state, setup.frozen_state, batch, jax.random.key(i))
        losses.append(float(metrics["ce"]))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), f"{losses[:3]} ... {losses[-3:]}"
    logged = eval_fn(state, setup.frozen_state, batch, jax.random.key(0))
    # The LAM decoder's action gain means nothing when the decoder is not trained.
    assert ("lam_action_gain_db" in logged) == (lam_loss == "reconstruction")


def test_unknown_co_training_loss_is_a_clear_error():
    config = apply_overrides(tiny_config(), ["train.dynamics.co_train_lam=True",
                                             "train.dynamics.co_train_lam_loss=pixels"])
    frozen = {"tokenizer": build_tokenizer(config, SHAPE, "float32", nnx.Rngs(1))}
    with pytest.raises(ConfigError, match="co_train_lam_loss='pixels': choose one of reconstruction, dynamics"):
        init_train_state("dynamics", config, SHAPE, frozen, make_mesh())


def test_token_cache_choice():
    common = dict(batch_size=4, tokens_per_clip=128, process_count=1)
    assert use_token_cache("auto", steps=25, num_clips=100, **common)  # 100 clips drawn: each once on average
    assert not use_token_cache("auto", steps=24, num_clips=100, **common)
    assert not use_token_cache("auto", steps=10**9, num_clips=MAX_AUTO_BYTES // 128, **common)  # too big for auto
    assert use_token_cache("always", steps=1, num_clips=100, **common)
    assert not use_token_cache("never", steps=10**6, num_clips=100, **common)
    assert not use_token_cache("auto", steps=10**6, num_clips=100, **dict(common, process_count=2))
    with pytest.raises(ConfigError, match="single-process"):
        use_token_cache("always", steps=1, num_clips=100, **dict(common, process_count=2))
    with pytest.raises(ConfigError, match="token_cache='sometimes': choose one of auto, always, never"):
        use_token_cache("sometimes", steps=1, num_clips=100, **common)


def test_token_cache_rows_are_the_tokenizers_tokens_of_each_batch(tiny_data):
    config = tiny_config()
    shape = ModelShape(32, 32, 6)
    tokenizer = build_tokenizer(config, shape, "float32", nnx.Rngs(1))
    ds = ClipDataset(tiny_data)
    tokens = tokenize_split(tokenizer, ds, "train", 6, 4, make_mesh())
    assert tokens.shape == (len(ds.split("train")), 6, tokenizer.num_tokens) and tokens.dtype == np.int16
    assert len(np.unique(tokens)) > 1
    with Loader(ds, "train", 4, seed=3, sharding=None, num_frames=6, tokens=tokens) as loader:
        for _ in range(3):
            batch = next(loader)
            want = tokenizer.tokenize(batch["frames"])
            np.testing.assert_array_equal(np.asarray(batch["tokens"]), np.asarray(want))


@pytest.mark.slow
def test_dynamics_trains_the_same_with_and_without_the_token_cache(tiny_data, tmp_path):
    base = tiny_config(steps=4, log_every=1)
    run = tmp_path / "run"
    train("tokenizer", base, tiny_data, run, progress=False)
    train("lam", base, tiny_data, run, progress=False)
    losses = {}
    for choice in ("always", "never"):
        dyn_run = tmp_path / choice
        dyn_run.mkdir()
        for stage in ("tokenizer", "lam"):
            (dyn_run / stage).symlink_to(run / stage)
        train("dynamics", apply_overrides(base, [f"train.dynamics.token_cache={choice}"]), tiny_data, dyn_run,
              progress=False)
        losses[choice] = [m["loss"] for m in read_metrics(dyn_run / "dynamics" / "metrics.jsonl")]
    assert len(losses["always"]) == 4
    np.testing.assert_allclose(losses["always"], losses["never"], rtol=1e-5)
