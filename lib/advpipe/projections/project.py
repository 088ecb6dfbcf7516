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

Joint variants fit on [clean; adv] and split the embedding; `*_oos` variants fit on clean only and, as
vrapi does, take both parts from `transform` (for UMAP, `transform` of the training data returns the
fitted embedding itself).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

import numpy as np

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


def _parametric_umap(seed: int, **kw: Any):
    from advpipe.projections.parametric_umap import ParametricUMAP
    return ParametricUMAP(**{"n_components": 2, "random_state": seed, **kw})


_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "pca": _pca, "umap": _umap, "tsne": _tsne, "parametric_umap": _parametric_umap,
}


def estimator_class(base: str) -> type:
    """The estimator class behind projection `base` (pca, umap, tsne, parametric_umap), imported late."""
    if base == "pca":
        from sklearn.decomposition import PCA
        return PCA
    if base == "tsne":
        from sklearn.manifold import TSNE
        return TSNE
    if base == "umap":
        from umap import UMAP
        return UMAP
    if base == "parametric_umap":
        from advpipe.projections.parametric_umap import ParametricUMAP
        return ParametricUMAP
    raise ValueError(f"unknown projection {base!r}; known: {', '.join(_ESTIMATORS)}")


def accepted_options(name: str) -> set[str]:
    """Keyword options projection `name` accepts (its estimator's constructor arguments, seed aside)."""
    params = inspect.signature(estimator_class(name.removesuffix("_oos"))).parameters
    return {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD} - {
        "random_state"}


def _check_name(name: str) -> None:
    if name not in PROJECTIONS:
        raise ValueError(f"unknown projection {name!r}; known: {', '.join(PROJECTIONS)}")


def estimator_options(name: str, options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """Keyword overrides for projection `name`: options[base] then options[name] (e.g. umap, then umap_oos)."""
    options = dict(options or {})
    for key in options:
        _check_name(key)
    base = name.removesuffix("_oos")
    return {**options.get(base, {}), **(options.get(name, {}) if name != base else {})}


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
    make = functools.partial(_ESTIMATORS[name.removesuffix("_oos")], int(seed), **estimator_options(name, options))
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
