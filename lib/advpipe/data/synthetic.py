"""SPEC 5's synthetic datasets (ricbl/gradient-direction-of-robust-models), generated in natural units and stored
as pixels in [0, 1] like every other source; extras["dx"] is the ground-truth Δx in natural units.

spheres    x = g / |g|_2 * radii[y], g ~ N(0, I_dim), y ~ Bernoulli(0.5) (sphere_dataset.py). The original draws
           fresh samples on every access: here every training epoch is its own seeded sample (`epoch`), while
           validation and test are fixed sets.
squares    1x224x224 (direct method, synth_dataset.py) and square32, 1xSxS with S = image_size (indirect method):
square32   a template of -0.5 with a centred square of +0.5 and half-side int(int(S/2) * 0.8 * r), plus Gaussian-
           smoothed noise rescaled to a fixed std (square32: clipped to [-0.5, 0.5]); r = 0.8 -> y = 0 ("large"),
           r = 0.5 -> y = 1 ("small"), the original's y = (r < 0.7). Fixed numpy seeds 7 / 8 / 9 for train /
           validation / test, whatever the config seed; cached as HDF5 under data_root.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advpipe import sources
from advpipe.io.atomic import atomic_path
from advpipe.runtime import derive_seed

from .splits import DataError, Split, to_pixels

SYNTHETIC_SOURCES = sources.SYNTHETIC
NATURAL_RANGE = sources.NATURAL_RANGES["spheres"]  # SPEC 5: every attack clamps to [-1, 1]; so do the data
DEFAULT_SIZES = {"train": 10000, "validation": 200, "test": 1000}
SPHERE_DIM = 500
SPHERE_RADII = (1.0, 1.3)
SQUARE_CLASSES = ["large", "small"]

# Keys that only some sources read; elsewhere they are refused rather than silently ignored.
_KEY_SOURCES = {"dim": ("spheres",), "radii": ("spheres",), "train_size": SYNTHETIC_SOURCES,
                "validation_size": SYNTHETIC_SOURCES, "test_size": SYNTHETIC_SOURCES}


def check_keys(cfg: dict[str, Any]) -> None:
    """DataError for a key the entry's source does not read (dim for squares, train_size for mnist, ...)."""
    for key, sources in _KEY_SOURCES.items():
        if key in cfg and cfg["source"] not in sources:
            raise DataError(f"dataset key `{key}` applies to {', '.join(sources)} only, not to source "
                            f"{cfg['source']!r}; expected it removed from this entry")


def declared_range(cfg: dict[str, Any]) -> tuple[float, float]:
    """The natural value range (lo, hi) of a dataset (advpipe.sources.declared_range: its `range` key, else the
    source's), checked: a malformed `range` is a DataError."""
    raw = cfg.get("range")
    ok = raw is None or (isinstance(raw, (list, tuple)) and len(raw) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in raw) and raw[0] < raw[1])
    if not ok:
        raise DataError(f"dataset key `range`: {raw!r}; expected [lo, hi], two finite numbers with lo < hi "
                        "(natural = lo + (hi - lo) * pixels)")
    return sources.declared_range(cfg)


def split_size(cfg: dict[str, Any], split: str) -> int:
    """Samples in `split` (train: per epoch for spheres): the `<split>_size` key, else DEFAULT_SIZES."""
    key = f"{split}_size"
    n = cfg.get(key, DEFAULT_SIZES[split])
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DataError(f"dataset key `{key}`: {n!r}; expected a whole number >= 1 (samples in the {split} split)")
    return n


# ---- spheres ------------------------------------------------------------------------------------------------

_SPHERE_BLOCK = 4096  # rows of g per randn call: part of the stream, and bounds the float64 working memory


def sphere_params(cfg: dict[str, Any]) -> tuple[int, tuple[float, float]]:
    """(dim, radii) of a spheres entry, checked."""
    dim = cfg.get("dim", SPHERE_DIM)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise DataError(f"dataset key `dim`: {dim!r}; expected a whole number >= 1 (the dimension of the vectors)")
    radii = cfg.get("radii", SPHERE_RADII)
    ok = isinstance(radii, (list, tuple)) and len(radii) == 2 and all(
        isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in radii)
    if not ok or radii[0] == radii[1]:
        raise DataError(f"dataset key `radii`: {radii!r}; expected two different positive numbers, the radius of "
                        "class 0 and of class 1 (SPEC 5: [1.0, 1.3])")
    return dim, (float(radii[0]), float(radii[1]))


def sphere_classes(radii: tuple[float, float]) -> list[str]:
    return [f"r{r}" for r in radii]  # e.g. ["r1.0", "r1.3"]


def sphere_split(cfg: dict[str, Any], split: str, seed: int, epoch: int = 1) -> Split:
    """The fixed validation/test set, or training epoch `epoch` (1-based), of a spheres entry.

    Stream: a torch.Generator seeded derive_seed(seed, "spheres", split) for validation/test and
    derive_seed(seed, "spheres", "train", epoch) for training; it draws y = randint(0, 2, (n,)) first, then g as
    float64 randn in blocks of 4096 rows. x = g/|g| * radii[y] and dx = (radii[1-y] - radii[y]) * g/|g| (the
    vector to the nearest point of the other sphere) are computed in float64 and stored as float32.
    index: 0..n-1 for validation/test, (epoch - 1) * n + i for training (unique over epochs).
    """
    dim, radii = sphere_params(cfg)
    lo, hi = declared_range(cfg)
    n = split_size(cfg, split)
    if split == "train":
        if not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be a whole number >= 1, got {epoch!r}")
        gen_seed, first = derive_seed(seed, "spheres", "train", epoch), (epoch - 1) * n
    else:
        gen_seed, first = derive_seed(seed, "spheres", split), 0
    gen = torch.Generator().manual_seed(gen_seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    g = torch.cat([torch.randn(min(_SPHERE_BLOCK, n - s), dim, generator=gen, dtype=torch.float64)
                   for s in range(0, n, _SPHERE_BLOCK)])
    unit = g.div_(g.norm(dim=1, keepdim=True))  # in place: one n x dim float64 copy fewer
    r = torch.tensor(radii, dtype=torch.float64)
    x = unit * r[y, None]
    dx = unit * (r[1 - y] - r[y])[:, None]
    if x.min() < lo or x.max() > hi:
        raise DataError(f"spheres (dim {dim}, radii {list(radii)}): coordinates reach [{x.min().item():.4g}, "
                        f"{x.max().item():.4g}], outside the declared range [{lo:g}, {hi:g}]; expected a wider "
                        "`range` (or smaller radii, or a larger dim)")
    return Split(x=to_pixels(x, (lo, hi)).clamp_(0, 1).float(), y=y, index=first + np.arange(n, dtype=np.int64),
                 classes=sphere_classes(radii), extras={"dx": dx.float()})


def sphere_stats(cfg: dict[str, Any]) -> tuple[tuple[float], tuple[float]]:
    """Pixel mean and std over all coordinates, exact expectations rather than a sample's: every coordinate has
    mean 0 and E[x_i^2] = mean(r^2) / dim (each radius with probability 1/2), before the map to pixels."""
    dim, radii = sphere_params(cfg)
    lo, hi = declared_range(cfg)
    return ((0.0 - lo) / (hi - lo),), (math.sqrt((radii[0] ** 2 + radii[1] ** 2) / 2 / dim) / (hi - lo),)


# ---- squares ------------------------------------------------------------------------------------------------

# source -> (fixed side or None for image_size, noise filter sigma, noise std, noise clip)
_SQUARES = {"squares": (224, 2.5, 0.5, None), "square32": (None, 1.0, 0.25, 0.5)}
_SQUARE_SEEDS = {"train": 7, "validation": 8, "test": 9}  # the original's np.random.seed per split
_SQUARE_R = (0.8, 0.5)  # r of label 0 and 1: the original labels y = (r < 0.7)
_CACHE_DIR = ".advpipe-cache"
_CACHE_FORMAT = 1  # part of the cache key: bump when the cached arrays change meaning
_BLOCK_VALUES = 2 ** 24  # noise values generated at once (128 MB of float64)


def square_side(cfg: dict[str, Any]) -> int:
    """S: 224 for squares (image_size is not read: the schema gives every entry image_size 32); square32 takes
    image_size (32 by default)."""
    fixed = _SQUARES[cfg["source"]][0]
    if fixed is not None:
        return fixed
    side = cfg.get("image_size", 32)
    if not isinstance(side, int) or isinstance(side, bool) or side < 4:
        raise DataError(f"dataset key `image_size`: {side!r}; expected a whole number >= 4 (the side of the "
                        "square32 images)")
    return side


def square_template(r: float, side: int) -> np.ndarray:
    """The original's get_clean_square: -0.5 background, +0.5 centred square of half-side int(half * 0.8 * r)."""
    half = int(side / 2)
    block = int((half * 0.8) * r)  # this float arithmetic, as the original: 224 -> 44 (r 0.5), 71 (r 0.8)
    t = np.full((side, side), -0.5)
    t[half - block:half + block, half - block:half + block] = 0.5
    return t


def generate_squares(n: int, side: int, sigma: float, noise_std: float, noise_clip: float | None,
                     np_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (n, S, S), r float32 (n,)) exactly as the original's prepare_data_squares_by_size.

    Order of the numpy legacy stream (RandomState(np_seed) == np.random.seed): r = choice([0.5, 0.8], n) for
    all samples first, then one N(0, 1) SxS noise image per sample in sample order (drawn here in blocks of
    samples: the same values). Each noise image is smoothed as skimage.filters.gaussian(noise, sigma) does
    (scipy's gaussian_filter, mode 'nearest', truncate 4), divided by its own std (population) and multiplied
    by noise_std, clipped to +-noise_clip (square32), and added to the template in float64; stored as float32.
    """
    from scipy.ndimage import gaussian_filter

    rs = np.random.RandomState(np_seed)
    r = np.around(rs.choice([0.5, 0.8], n), decimals=2)
    templates = np.stack([square_template(v, side) for v in _SQUARE_R])
    y = (r < 0.7).astype(np.int64)
    features = np.empty((n, side, side), dtype=np.float32)
    step = max(1, _BLOCK_VALUES // (side * side))
    for start in range(0, n, step):  # blocks of samples, not samples: bounded memory, batched filtering
        stop = min(n, start + step)
        noise = rs.normal(scale=1, size=(stop - start, side, side))
        noise = gaussian_filter(noise, (0, sigma, sigma), mode="nearest", truncate=4.0)
        noise = noise / noise.std(axis=(1, 2), keepdims=True) * noise_std
        if noise_clip is not None:
            noise = np.clip(noise, -noise_clip, noise_clip)
        features[start:stop] = templates[y[start:stop]] + noise
    return features, r.astype(np.float32)


def _square_params(cfg: dict[str, Any], split: str) -> dict[str, Any]:
    """Everything the generated arrays depend on (the cache key)."""
    _, sigma, noise_std, clip = _SQUARES[cfg["source"]]
    return {"format": _CACHE_FORMAT, "source": cfg["source"], "split": split, "n": split_size(cfg, split),
            "side": square_side(cfg), "sigma": sigma, "noise_std": noise_std, "noise_clip": clip,
            "np_seed": _SQUARE_SEEDS[split]}


def _cache_file(params: dict[str, Any], data_root: Path) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return data_root / _CACHE_DIR / f"{params['source']}-{params['split']}-{key}.h5"


def _cache_read(file: Path, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (features, r), or None (with a warning) when the file is unreadable or not what was asked."""
    import h5py

    if not file.is_file():
        return None
    n, side = params["n"], params["side"]
    try:
        with h5py.File(file, "r") as f:
            if json.loads(f.attrs["params"]) != params:
                raise ValueError(f"written for {f.attrs['params']}")
            features, r = f["features"][()], f["regression_target"][()]  # fletcher32: corrupt bytes raise OSError
        if features.dtype != np.float32 or features.shape != (n, side, side) or r.shape != (n,):
            raise ValueError(f"holds {features.dtype} {features.shape} and {r.shape}, expected float32 "
                             f"{(n, side, side)} and ({n},)")
        if not np.isin(r, np.float32(_SQUARE_R)).all() or not np.isfinite(features).all():
            raise ValueError("holds labels other than r 0.5/0.8, or non-finite values")
    except (OSError, KeyError, ValueError, TypeError) as err:
        warnings.warn(f"{file}: unusable {params['source']} cache ({err}); generating the {params['split']} split "
                      "again", stacklevel=4)
        return None
    return features, r


def _cache_write(file: Path, features: np.ndarray, r: np.ndarray, params: dict[str, Any]) -> None:
    import h5py

    try:
        with atomic_path(file) as tmp, h5py.File(tmp, "w") as f:  # parallel jobs may write the same file
            f.attrs["params"] = json.dumps(params, sort_keys=True)
            f.create_dataset("features", data=features, fletcher32=True)  # checksummed: corruption is detected
            f.create_dataset("regression_target", data=r, fletcher32=True)
    except OSError as err:  # a read-only data_root: fine, only slower next time
        warnings.warn(f"{file}: {params['source']} cache not written ({err}); the next job generates the "
                      f"{params['split']} split again (set `cache: false` on the dataset entry to skip this)",
                      stacklevel=4)


def square_arrays(cfg: dict[str, Any], split: str, data_root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (n, S, S) in natural units, unclipped as the original's HDF5 holds them; r (n,)),
    from <data_root>/.advpipe-cache/<source>-<split>-<key>.h5 or generated (and cached unless `cache: false`)."""
    params = _square_params(cfg, split)
    use_disk = bool(cfg.get("cache", True))
    file = _cache_file(params, Path(data_root))
    cached = _cache_read(file, params) if use_disk else None
    if cached is not None:
        return cached
    features, r = generate_squares(params["n"], params["side"], params["sigma"], params["noise_std"],
                                   params["noise_clip"], params["np_seed"])
    if use_disk:
        _cache_write(file, features, r, params)
    return features, r


def square_split(cfg: dict[str, Any], split: str, data_root: str | Path) -> Split:
    """One split of a squares/square32 entry: x (n, 1, S, S) pixels, y = (r < 0.7), index 0..n-1 and
    extras["dx"] = T(other class) - T(own class), the difference of the clean templates (natural units).

    Range decision: Squares-224 adds noise of std 0.5 to +-0.5 without clipping, so ~16% of its values leave
    [-1, 1] (up to about +-3 inside the image and +-6.5 on the border, where mode 'nearest' smooths less); the
    original trains on them as they are but clamps every attacked image to [-1, 1]. Here values are clipped to
    the declared range (default [-1, 1]): the clean images are the ones the original's attacks see, and the
    pixel box [0, 1] is exactly its attack box. Declare e.g. `range: [-10, 10]` to keep the original's
    unclipped values instead (attacks then clamp to that wider box). square32's values are already in
    [-1, 1] (noise clipped to +-0.5), so its default range clips nothing.
    """
    lo, hi = declared_range(cfg)
    features, r = square_arrays(cfg, split, data_root)
    side = features.shape[-1]
    y = torch.from_numpy((r < 0.7).astype(np.int64))
    x = torch.from_numpy(features).unsqueeze(1)  # a fresh array: converted in place, no second copy
    x.clamp_(lo, hi).sub_(lo).div_(hi - lo)
    t = torch.from_numpy(np.stack([square_template(v, side) for v in _SQUARE_R])).float()
    diff = torch.stack([t[1] - t[0], t[0] - t[1]]).unsqueeze(1)  # (2, 1, S, S): dx of label 0 and of label 1
    return Split(x=x, y=y, index=np.arange(len(y), dtype=np.int64), classes=list(SQUARE_CLASSES),
                 extras={"dx": diff[y]})
