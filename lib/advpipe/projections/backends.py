"""Which library fits a projection: config key `vrapi.projection_options.<projection>.backend` (issue 17).

| projection (and its _oos) | backends, the first is the default                          |
|---------------------------|-------------------------------------------------------------|
| pca                       | sklearn                                                     |
| umap                      | umap-learn, cuml                                            |
| tsne                      | sklearn, opentsne, cuml                                     |
| parametric_umap           | advpipe (the torch ParametricUMAP of parametric_umap.py)    |

The other keys of a projection's options are keyword arguments of the chosen backend's own constructor,
in that library's own terms (openTSNE's `learning_rate` is not sklearn's: see OPENTSNE_VRAPI), and are
checked against that constructor when the config loads. The defaults below are vrapi's settings carried
over to each backend; a user's option overrides them.

opentsne: openTSNE's FFT-interpolated gradient (Linderman et al. 2019) costs O(N) per iteration where
sklearn's Barnes-Hut costs O(N log N), plus a fixed cost for its interpolation grid: it pays off from a
few thousand points (bench/out/tsne_backends.md). Seeded and on one thread it is deterministic, like the
sklearn default.

cuml: RAPIDS cuML on a CUDA GPU (`pip install --extra-index-url=https://pypi.nvidia.com -e '.[gpu]'`, see
pyproject.toml). Only where a GPU is: the job fails naming the config key when cuML or the GPU is missing,
and the Snakemake project jobs of such a projection ask for one (resources gpu=1, `gpu_request`). cuML's
t-SNE and UMAP are not bit-for-bit deterministic on a GPU even with a seed (parallel float reductions):
results of a cuml run are reproducible in distribution, not in bytes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

BACKEND_KEY = "backend"
BACKENDS: dict[str, tuple[str, ...]] = {
    "pca": ("sklearn",),
    "umap": ("umap-learn", "cuml"),
    "tsne": ("sklearn", "opentsne", "cuml"),
    "parametric_umap": ("advpipe",),
}
GPU_BACKENDS = frozenset({"cuml"})
CUML_INSTALL = "pip install --extra-index-url=https://pypi.nvidia.com -e '.[gpu]'"

# vrapi's t-SNE (sklearn 0.24.2: init random, learning_rate 200, perplexity 30, early_exaggeration 12,
# n_iter 1000 of which 250 exaggerated at momentum 0.5, then momentum 0.8; exact kNN on 3*perplexity+1
# neighbours) in openTSNE's arguments.
OPENTSNE_VRAPI: dict[str, Any] = {
    "n_components": 2,
    "perplexity": 30.0,
    "initialization": "random",  # both draw N(0, 1e-4^2) from RandomState(seed): the same start, to rounding
    # sklearn multiplies the KL gradient by 2(dof+1)/dof = 4, openTSNE does not (hence sklearn's "auto"
    # rate N/12/4 against openTSNE's N/12): openTSNE's 800 takes sklearn's steps at learning_rate=200.
    "learning_rate": 800.0,
    "early_exaggeration": 12.0,
    "early_exaggeration_iter": 250,  # sklearn's fixed exploration phase
    "n_iter": 750,                   # openTSNE counts the iterations after it: 250 + 750 = sklearn's 1000
    "initial_momentum": 0.5,
    "final_momentum": 0.8,
    "neighbors": "exact",            # sklearn's exact kNN (openTSNE's "auto" takes Annoy above 1000 points)
    "negative_gradient_method": "fft",  # the point of the backend; sklearn: Barnes-Hut, angle 0.5
    "max_step_norm": 5,              # openTSNE's own default, kept: sklearn has no counterpart (see below)
    "n_jobs": 1,                     # one thread: the same bytes on every run (see project.py on sklearn)
}
# Where openTSNE still differs from sklearn, with no argument to make them agree:
# - negative forces: FFT interpolation on a grid (3 points in each of >= 50 intervals per axis) instead of
#   Barnes-Hut's quadtree with angle 0.5: a different approximation of the same gradient;
# - kNN graph: 3*perplexity = 90 neighbours where sklearn takes 3*perplexity + 1 = 91;
# - no early stop: sklearn stops when the KL divergence has not improved for 300 iterations
#   (n_iter_without_progress) or the gradient norm falls below 1e-7 (checked every 50 iterations);
#   openTSNE always runs all 1000;
# - gains: openTSNE decays a gain as 0.8 * g + 0.01, sklearn as max(0.8 * g, 0.01);
# - step clipping: openTSNE caps each point's step at max_step_norm = 5, sklearn does not cap. Kept: with
#   sklearn's learning rate a small run spreads wide early on, and the FFT grid (its cost per iteration) grows
#   with the embedding's extent (150 points, 200 iterations: extent 45 with the cap, 70 without, 2-4x the time);
# - precision: sklearn computes the affinities, the embedding and the gradient in float32, openTSNE in float64.

# vrapi's t-SNE in cuML's arguments (cuML's own defaults already are sklearn 0.24.2's: learning_rate 200,
# early_exaggeration 12 for exaggeration_iter=250 of max_iter=1000, pre_momentum 0.5, post_momentum 0.8,
# n_neighbors 90, init random). learning_rate_method "adaptive" (cuML's default) would rescale the learning
# rate, exaggeration and neighbours with N; "none" keeps vrapi's numbers.
CUML_TSNE_VRAPI: dict[str, Any] = {"n_components": 2, "init": "random", "learning_rate": 200.0,
                                   "learning_rate_method": "none", "method": "fft", "output_type": "numpy"}
# hash_input: transform of the training data returns the fitted embedding, as umap-learn's does (umap_oos).
CUML_UMAP_VRAPI: dict[str, Any] = {"n_components": 2, "hash_input": True, "output_type": "numpy"}

# The constructor arguments of cuML 26.08 (the version the `gpu` extra pins), to check options when the
# config is loaded where cuML is not installed (a login node, this CI); where it is installed, the
# installed constructor's own signature is used instead.
CUML_ARGUMENTS: dict[str, frozenset[str]] = {
    "tsne": frozenset({
        "n_components", "perplexity", "early_exaggeration", "late_exaggeration", "learning_rate", "max_iter",
        "n_iter_without_progress", "min_grad_norm", "metric", "metric_params", "init", "random_state", "method",
        "angle", "n_neighbors", "perplexity_max_iter", "exaggeration_iter", "pre_momentum", "post_momentum",
        "learning_rate_method", "square_distances", "precomputed_knn", "verbose", "output_type"}),
    "umap": frozenset({
        "n_neighbors", "n_components", "metric", "metric_kwds", "n_epochs", "learning_rate", "min_dist", "spread",
        "set_op_mix_ratio", "local_connectivity", "repulsion_strength", "negative_sample_rate",
        "transform_queue_size", "init", "a", "b", "target_n_neighbors", "target_weight", "target_metric",
        "hash_input", "random_state", "force_serial_epochs", "precomputed_knn", "callback", "build_algo",
        "build_kwds", "device_ids", "verbose", "output_type"}),
}


def cuml_installed() -> bool:
    """Whether the cuml package can be found (without importing it: the import needs CUDA and takes seconds)."""
    import importlib.util
    return importlib.util.find_spec("cuml") is not None


def backend_key(name: str) -> str:
    """The config key that selects projection `name`'s backend, in words (an _oos variant inherits its base's)."""
    base = name.removesuffix("_oos")
    key = f"config key 'vrapi.projection_options.{name}.{BACKEND_KEY}'"
    return key if name == base else f"{key} (or '{base}.{BACKEND_KEY}', which {name} inherits)"


def _unavailable(name: str, why: str) -> Exception:
    from advpipe.config import ConfigError  # late: the config module pulls in jsonschema

    others = ", ".join(b for b in BACKENDS[name.removesuffix("_oos")] if b not in GPU_BACKENDS)
    return ConfigError(f"{backend_key(name)}: backend 'cuml' {why}; expected RAPIDS cuML ({CUML_INSTALL}) on a "
                       f"machine with a CUDA GPU, or another backend ({others})")


def cuml_module(name: str):
    """cuml.manifold, after checking that cuML imports and sees a CUDA device; else a ConfigError naming the
    config key that chose cuml for projection `name`."""
    try:
        import cuml.manifold
    except Exception as err:  # ImportError, or a CUDA library that fails to load without a driver
        raise _unavailable(name, f"needs RAPIDS cuML, which does not import here ({type(err).__name__}: {err})"
                           ) from None
    try:
        import cupy
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        raise _unavailable(name, f"needs a CUDA GPU, and none is usable here ({type(err).__name__}: {err})"
                           ) from None
    if devices < 1:
        raise _unavailable(name, "needs a CUDA GPU, and none is visible here")
    return cuml.manifold


class CumlEstimator:
    """A cuML estimator with numpy in and out (float32, as cuML computes), for project_many."""

    def __init__(self, make, **kw: Any) -> None:
        self.model = make(**kw)

    def fit(self, x: np.ndarray) -> "CumlEstimator":
        self.model.fit(np.ascontiguousarray(x, dtype=np.float32))
        return self

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.fit_transform(np.ascontiguousarray(x, dtype=np.float32)))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.transform(np.ascontiguousarray(x, dtype=np.float32)))
