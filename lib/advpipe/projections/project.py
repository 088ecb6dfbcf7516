"""The seven 2-D projections of vrapi: joint fits and out-of-sample (`*_oos`) fits (SPEC 1, projection.py).

Estimators and defaults: vrapi's calls with the library defaults of the versions vrapi pins (seed = config
seed + trial); `options` overrides any keyword.
- pca: sklearn `PCA(n_components=2, random_state=seed)`. sklearn >= 1.5 solves small-D problems by the
  covariance eigendecomposition where 0.24.2 used randomized SVD: same components up to sign and rounding.
- umap: umap-learn `UMAP(n_components=2, random_state=seed, n_jobs=1)`. vrapi passes n_jobs=-1, but a
  random_state makes umap-learn run single-threaded anyway (it warns and overrides n_jobs to 1); that is
  what makes it deterministic, so we ask for n_jobs=1 directly.
- tsne: sklearn `TSNE(n_components=2, random_state=seed, init="random", learning_rate=200.0)`: the
  defaults of vrapi's pinned sklearn 0.24.2. Later sklearn changed them to init="pca" and
  learning_rate="auto"; with a PCA start the seed no longer changes anything, every trial would be the
  same embedding, and the per-trial spread vrapi reports would vanish. {"tsne": {"init": "pca",
  "learning_rate": "auto"}} in `options` gives the current library defaults. vrapi passes n_jobs=-1; we
  keep sklearn's default of one thread because the Barnes-Hut gradient sums its normaliser with an
  OpenMP reduction whose order (and so the last bits of the result) can change between threaded runs.
- parametric_umap: advpipe's torch `ParametricUMAP` (umap-learn's needs TensorFlow; see parametric_umap.py).

Backends: `options[<projection>]["backend"]` picks the library (tsne: sklearn, the default, opentsne or cuml;
umap: umap-learn, the default, or cuml); the other options are that library's constructor arguments. The
table, the mapping of the settings above onto openTSNE and cuML, and where they differ: backends.py.

Joint variants fit on [clean; adv] and split the embedding; `*_oos` variants fit on clean only and, as
vrapi does, take both parts from `transform` (for UMAP, `transform` of the training data returns the
fitted embedding itself).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from advpipe.projections.backends import BACKEND_KEY, BACKENDS, CUML_ARGUMENTS, GPU_BACKENDS

# Light on purpose (numpy only): the Snakefile imports PROJECTIONS; estimators import their libraries late.
PROJECTIONS = ("pca", "umap", "tsne", "parametric_umap", "pca_oos", "umap_oos", "parametric_umap_oos")


def _pca(seed: int, **kw: Any):
    from sklearn.decomposition import PCA
    return PCA(**{"n_components": 2, "random_state": seed, **kw})


def _umap(seed: int, **kw: Any):
    from umap import UMAP  # imported late: umap-learn's import (numba) takes seconds

    from advpipe.projections.numba_cache import enable_umap_cache

    enable_umap_cache()
    return UMAP(**{"n_components": 2, "random_state": seed, "n_jobs": 1, **kw})


def _tsne(seed: int, **kw: Any):
    from sklearn.manifold import TSNE
    return TSNE(**{"n_components": 2, "random_state": seed, "init": "random", "learning_rate": 200.0, **kw})


def _tsne_opentsne(seed: int, **kw: Any):
    from openTSNE.sklearn import TSNE  # openTSNE.TSNE with sklearn's fit_transform

    from advpipe.projections.backends import OPENTSNE_VRAPI
    return TSNE(**{**OPENTSNE_VRAPI, "random_state": seed, **kw})


def _cuml(name: str) -> Callable[..., Any]:
    """cuML's TSNE or UMAP for projection `name`, checked for cuML and a GPU when the job builds it."""
    def make(seed: int, **kw: Any):
        from advpipe.projections import backends
        base = name.removesuffix("_oos")
        defaults = backends.CUML_TSNE_VRAPI if base == "tsne" else backends.CUML_UMAP_VRAPI
        cls = getattr(backends.cuml_module(name), base.upper())
        return backends.CumlEstimator(cls, **{**defaults, "random_state": seed, **kw})
    return make


def _parametric_umap(seed: int, **kw: Any):
    from advpipe.projections.parametric_umap import ParametricUMAP
    return ParametricUMAP(**{"n_components": 2, "random_state": seed, **kw})


# (projection, backend) -> factory (seed, **options) -> estimator; cuml's is built per variant (_estimator).
_ESTIMATORS: dict[tuple[str, str], Callable[..., Any]] = {
    ("pca", "sklearn"): _pca, ("umap", "umap-learn"): _umap, ("tsne", "sklearn"): _tsne,
    ("tsne", "opentsne"): _tsne_opentsne, ("parametric_umap", "advpipe"): _parametric_umap,
}


def _estimator(name: str, backend: str) -> Callable[..., Any]:
    """The factory of projection `name` (a variant: its base's estimator) on `backend`."""
    if backend == "cuml":  # its error names the variant's config key (umap_oos inherits umap's backend)
        return _cuml(name)
    return _ESTIMATORS[name.removesuffix("_oos"), backend]


def estimator_class(base: str, backend: str | None = None) -> type:
    """The estimator class behind projection `base` (pca, umap, tsne, parametric_umap) on `backend` (default: the
    projection's default backend), imported late. cuml raises ImportError where cuML is not installed."""
    if base not in BACKENDS:
        raise ValueError(f"unknown projection {base!r}; known: {', '.join(BACKENDS)}")
    backend = backend or BACKENDS[base][0]
    if backend not in BACKENDS[base]:
        raise ValueError(f"unknown backend {backend!r} of {base}; known: {', '.join(BACKENDS[base])}")
    if base == "pca":
        from sklearn.decomposition import PCA
        return PCA
    if backend == "cuml":
        import cuml.manifold
        return getattr(cuml.manifold, base.upper())
    if base == "tsne" and backend == "opentsne":
        from openTSNE import TSNE as OpenTSNE
        return OpenTSNE
    if base == "tsne":
        from sklearn.manifold import TSNE
        return TSNE
    if base == "umap":
        from umap import UMAP
        return UMAP
    from advpipe.projections.parametric_umap import ParametricUMAP
    return ParametricUMAP


def _keywords(cls: type) -> set[str]:
    params = inspect.signature(cls).parameters
    return {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}


def accepted_options(name: str, backend: str | None = None) -> set[str]:
    """Keyword options projection `name` accepts on `backend` (default: its default backend): `backend` and the
    backend's constructor arguments, seed aside. cuML's are read from the installed cuML, else from the list of
    the pinned version (backends.CUML_ARGUMENTS), so a config can be checked where cuML is not installed."""
    base = name.removesuffix("_oos")
    if backend == "cuml" and base in CUML_ARGUMENTS:
        from advpipe.projections.backends import cuml_installed
        keywords = set(CUML_ARGUMENTS[base])
        if cuml_installed():
            try:
                keywords = _keywords(estimator_class(base, backend))
            except Exception:  # installed but unusable here (no CUDA): the job says so; check the pinned list
                pass
    else:
        keywords = _keywords(estimator_class(base, backend))
    return (keywords - {"random_state"}) | {BACKEND_KEY}


def _check_name(name: str) -> None:
    if name not in PROJECTIONS:
        raise ValueError(f"unknown projection {name!r}; known: {', '.join(PROJECTIONS)}")


def estimator_options(name: str, options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """Keyword overrides for projection `name`: options[base] then options[name] (e.g. umap, then umap_oos).
    They include `backend` when one is chosen (so that a job's params, and its provenance, name it)."""
    options = dict(options or {})
    for key in options:
        _check_name(key)
    base = name.removesuffix("_oos")
    return {**options.get(base, {}), **(options.get(name, {}) if name != base else {})}


def backend(name: str, options: Mapping[str, Mapping[str, Any]] | None) -> str:
    """The backend that fits projection `name` under the config's projection `options` (its default if none)."""
    _check_name(name)
    return estimator_options(name, options).get(BACKEND_KEY, BACKENDS[name.removesuffix("_oos")][0])


def gpu_request(options: Mapping[str, Mapping[str, Any]] | None) -> Callable[[Any], int]:
    """The Snakemake resource `gpu` of a projection job (rules/project.smk): 1 when its projection (wildcard
    `projection`) runs on a GPU backend (cuml) under the config's projection `options`, else 0."""
    def gpu(wildcards) -> int:
        return int(backend(wildcards.projection, options) in GPU_BACKENDS)
    return gpu


def _f32(z: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(z, dtype=np.float32)


def project_many(name: str, clean: np.ndarray, advs: Sequence[np.ndarray], seed: int,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Project clean (N, D) with each adversarial set (M_k, D): one (clean_z, adv_z) float32 pair per set.

    `*_oos` variants fit once on clean and transform every set (as vrapi fits once per trial); joint
    variants fit once per set on [clean; adv].
    """
    _check_name(name)
    clean, advs = np.asarray(clean), [np.asarray(a) for a in advs]
    for adv in advs:
        if clean.ndim != 2 or adv.ndim != 2 or clean.shape[1] != adv.shape[1]:
            raise ValueError(f"clean and adv must be (N, D) and (M, D) with the same D; got {clean.shape}, {adv.shape}")
    kw = estimator_options(name, options)
    chosen = kw.pop(BACKEND_KEY, BACKENDS[name.removesuffix("_oos")][0])
    if chosen not in BACKENDS[name.removesuffix("_oos")]:  # the config check refuses it first
        from advpipe.projections.backends import backend_key
        raise ValueError(f"{backend_key(name)}: unknown backend {chosen!r}; known: "
                         f"{', '.join(BACKENDS[name.removesuffix('_oos')])}")
    make = functools.partial(_estimator(name, chosen), int(seed), **kw)
    if name.endswith("_oos"):
        model = make().fit(clean)
        clean_z = _f32(model.transform(clean))
        return [(clean_z, _f32(model.transform(adv))) for adv in advs]
    pairs = []
    for adv in advs:
        z = make().fit_transform(np.concatenate([clean, adv]))
        pairs.append((_f32(z[: len(clean)]), _f32(z[len(clean):])))
    return pairs


def project(name: str, clean: np.ndarray, adv: np.ndarray, seed: int,
            options: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Project clean (N, D) and adv (M, D) to 2-D with projection `name`; returns float32 (N, 2), (M, 2) (SPEC 1)."""
    return project_many(name, clean, [adv], seed, options)[0]
