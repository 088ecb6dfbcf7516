"""Datasets by config entry: bundled digits, torchvision MNIST/CIFAR-10/CIFAR-100 from data_root, image folders,
arrays of your own in an .npz file, Tiny ImageNet in its official layout (SPEC 4), and SPEC 5's synthetic
spheres / squares / square32 (synthetic.py). Any source can keep a few of its classes (`subset_classes`).

Every loader ends in `_to_split`: images arrive on the 0..255 scale (or 0..1 for float arrays), become float32
in [0, 1] (N, C, H, W), and are validated, so all sources share one conversion and one check. Bad data raises
DataError (a ValueError) naming the file and what was expected; missing files raise FileNotFoundError.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from zlib import error as zlib_error

import numpy as np
import torch

from . import synthetic
from .splits import DataError, Split, stratified_split, take
from .synthetic import SYNTHETIC_SOURCES

SOURCES = ("digits", "mnist", "cifar10", "cifar100", "imagefolder", "npz", "tinyimagenet") + SYNTHETIC_SOURCES
# "validation" exists only for sources with a fixed validation set of their own (has_validation_split).
SPLITS = ("train", "validation", "test")


@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset: input shape, classes, normalisation statistics (of the
    pixels), and the natural value range: natural = lo + (hi - lo) * pixels."""

    in_channels: int
    image_size: int
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, ...] = ()  # per-sample shape of x: (C, H, W), or (D,) for vectors; () -> (C, S, S)
    range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not self.shape:
            self.shape = (self.in_channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class _TorchvisionSet:
    """A torchvision dataset with an official train/test split, its files and its usual statistics."""

    cls_name: str
    title: str
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def cls(self) -> type:
        # torchvision (with torch._dynamo) and scikit-learn are imported only by the sources that use them:
        # together ~3 s of start-up for every job otherwise.
        from torchvision import datasets as tvd

        return getattr(tvd, self.cls_name)


# Facts about the published datasets (usual normalisation statistics of their training sets).
_TORCHVISION = {
    "mnist": _TorchvisionSet("MNIST", "MNIST", 1, 28, (0.1307,), (0.3081,)),
    "cifar10": _TorchvisionSet("CIFAR10", "CIFAR-10", 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": _TorchvisionSet("CIFAR100", "CIFAR-100", 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def load_split(cfg: dict[str, Any], split: str, data_root: str | Path, seed: int) -> Split:
    """Load the `split` ("train", "test", or "validation" where has_validation_split) of the dataset configured by
    `cfg` (a `datasets:` entry), keeping only `subset_classes` when given. Spheres' "train" is epoch 1's sample
    (see epoch_split)."""
    source = _check(cfg, split)
    if split == "validation" and not has_validation_split(cfg):
        raise DataError(f"dataset source {source!r} has no validation split of its own (only "
                        f"{', '.join(SYNTHETIC_SOURCES)} have one); expected split 'train' or 'test', or a "
                        "validation share held out of the training split (the train recipe's validation_fraction)")
    return _select_classes(_load_source(cfg, source, split, Path(data_root), seed), cfg)


def epoch_split(cfg: dict[str, Any], epoch: int, data_root: str | Path, seed: int) -> Split | None:
    """The training samples of epoch `epoch` (1-based) for sources that draw fresh samples every epoch (spheres),
    deterministic per (seed, epoch); None for sources with fixed training data (use load_split)."""
    source = _check(cfg, "train")
    if source != "spheres":
        return None
    return _select_classes(synthetic.sphere_split(cfg, "train", seed, epoch), cfg)


def has_validation_split(cfg: dict[str, Any]) -> bool:
    """Whether load_split(cfg, "validation", ...) exists: the source has a fixed validation set of its own."""
    return cfg.get("source") in SYNTHETIC_SOURCES


def _load_source(cfg: dict[str, Any], source: str, split: str, data_root: Path, seed: int) -> Split:
    """One split of the source, all classes."""
    if source == "spheres":
        return synthetic.sphere_split(cfg, split, seed)
    if source in SYNTHETIC_SOURCES:
        return synthetic.square_split(cfg, split, data_root)
    if source in _TORCHVISION:
        images, labels, classes, name = _read_torchvision(source, cfg, split == "train", data_root)
        return _to_split(images, labels, np.arange(len(labels), dtype=np.int64), classes, name)
    if source == "tinyimagenet":  # official split: train/ for training, val/ (labelled) as the test split
        images, labels, classes, name = _read_tinyimagenet(cfg, split, data_root)
        return _to_split(images, labels, np.arange(len(labels), dtype=np.int64), classes, name)
    images, labels, classes, name, scale = _read_unsplit(cfg, data_root)
    _check_classes(classes, name)
    _check_split_sizes(len(labels), len(classes), cfg.get("test_fraction", 0.3), name)
    try:
        train, test = stratified_split(labels.numpy(), cfg.get("test_fraction", 0.3), seed)
    except ValueError as err:  # scikit-learn: a class too small for the held-out share
        raise DataError(f"{name}: no stratified train/test split ({err}); expected at least 2 images per class "
                        "and enough of them for test_fraction") from err
    pos = train if split == "train" else test
    sel = torch.from_numpy(pos)
    return _to_split(images[sel], labels[sel], pos, classes, name, scale)


def dataset_info(cfg: dict[str, Any], data_root: str | Path, seed: int) -> DatasetInfo:
    """Shape, classes, normalisation statistics and natural range of a dataset; torchvision sets are not loaded
    for it, nor the synthetic sources' training data."""
    source = _check(cfg, "train")
    info = _source_info(cfg, source, Path(data_root), seed)
    return dataclasses.replace(info, range=synthetic.declared_range(cfg))


def _source_info(cfg: dict[str, Any], source: str, data_root: Path, seed: int) -> DatasetInfo:
    if source == "spheres":  # exact expectations of the pixel statistics: nothing generated
        dim, radii = synthetic.sphere_params(cfg)
        classes = _kept_classes(synthetic.sphere_classes(radii), cfg)
        mean, std = synthetic.sphere_stats(cfg)
        return DatasetInfo(1, dim, len(classes), classes, mean, std, shape=(dim,))
    if source in SYNTHETIC_SOURCES:
        # Statistics of the fixed validation split (200 images by default, cached): cheap, and the same for
        # every seed since the squares' seeds are fixed.
        val = load_split(cfg, "validation", data_root, seed)
        x = val.x.double()
        side = val.x.shape[-1]
        return DatasetInfo(1, side, len(val.classes), list(val.classes), (x.mean().item(),),
                           (x.std(correction=0).item(),), shape=(1, side, side))
    if source in _TORCHVISION:  # published statistics of the whole set, also under subset_classes
        spec = _TORCHVISION[source]
        _ensure_present(source, cfg, data_root)
        if source == "mnist":
            classes = list(spec.cls.classes)
        else:  # CIFAR class names live in the small meta pickle
            meta = spec.cls.meta
            classes = list(_read_pickle(data_root / spec.cls.base_folder / meta["filename"])[meta["key"]])
        classes = _kept_classes(classes, cfg)
        return DatasetInfo(spec.in_channels, spec.image_size, len(classes), classes, spec.mean, spec.std)
    if source == "tinyimagenet":
        info = _tinyimagenet_info(cfg, data_root)
        classes = _kept_classes(info.classes, cfg)
        return dataclasses.replace(info, classes=classes, num_classes=len(classes))
    # Sources without published statistics: computed on the training split (of the kept classes), so
    # deterministic per seed.
    train = load_split(cfg, "train", data_root, seed)
    x = train.x.transpose(0, 1).reshape(train.x.shape[1], -1).double()  # (C, N*H*W)
    return DatasetInfo(in_channels=train.x.shape[1], image_size=train.x.shape[-1], num_classes=len(train.classes),
                       classes=list(train.classes), mean=tuple(x.mean(1).tolist()),
                       std=tuple(x.std(1, correction=0).tolist()), shape=tuple(train.x.shape[1:]))


def _check(cfg: dict[str, Any], split: str) -> str:
    """Validate the source and split names and the source-specific keys; return the source."""
    source = cfg.get("source")
    if source not in SOURCES:
        raise ValueError(f"dataset source must be one of {SOURCES}, got {source!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    synthetic.check_keys(cfg)
    return source


# ---- subset_classes: keep some classes of any source, relabelled 0..k-1 in the given order -----------------

def _class_positions(cfg: dict[str, Any], classes: list[str]) -> list[int] | None:
    """Source class indices named by `subset_classes` (indices or class names), in its order; None if absent."""
    wanted = cfg.get("subset_classes")
    if wanted is None:
        return None
    what = (f"expected a list of at least 2 different classes of source {cfg['source']!r}, each an index in "
            f"0..{len(classes) - 1} or one of its names {classes[:12]}{' ...' if len(classes) > 12 else ''}")
    if not isinstance(wanted, (list, tuple)) or len(wanted) < 2:
        raise DataError(f"dataset key `subset_classes`: {wanted!r}; {what}")
    keep = []
    for c in wanted:
        if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(classes):
            keep.append(c)
        elif isinstance(c, str) and c in classes:
            keep.append(classes.index(c))
        else:
            raise DataError(f"dataset key `subset_classes`: {c!r} is not a class of the source; {what}")
    if len(set(keep)) < len(keep):
        raise DataError(f"dataset key `subset_classes`: {wanted!r} names a class twice; {what}")
    return keep


def _kept_classes(classes: list[str], cfg: dict[str, Any]) -> list[str]:
    keep = _class_positions(cfg, classes)
    return list(classes) if keep is None else [classes[k] for k in keep]


def _select_classes(split: Split, cfg: dict[str, Any]) -> Split:
    """The samples of the `subset_classes` only, relabelled by their position in that list; index unchanged."""
    keep = _class_positions(cfg, split.classes)
    if keep is None:
        return split
    relabel = torch.full((len(split.classes),), -1, dtype=torch.int64)
    relabel[torch.tensor(keep)] = torch.arange(len(keep))
    new_y = relabel[split.y]
    kept = take(split, torch.nonzero(new_y >= 0).flatten().numpy())
    if len(kept) == 0:
        raise DataError(f"dataset key `subset_classes`: {cfg['subset_classes']!r} keeps no sample of this split of "
                        f"source {cfg['source']!r}; expected classes that have samples")
    kept.y = new_y[new_y >= 0]
    kept.classes = [split.classes[k] for k in keep]
    return kept


def _check_classes(classes: list[str], name: str) -> None:
    if len(classes) < 2:
        raise DataError(f"{name}: {len(classes)} class(es) {list(classes)}; expected at least 2 classes "
                        "(a classifier tells classes apart)")


def _check_split_sizes(n: int, k: int, test_fraction: float, name: str) -> None:
    """DataError unless a stratified split at `test_fraction` leaves each of the k classes a place in both splits
    (scikit-learn's rule: ceil(test_fraction * n) test images, the rest for training, each at least k)."""
    if not 0 < test_fraction < 1:
        return  # the schema's range; stratified_split names it
    n_test = int(np.ceil(test_fraction * n))
    n_train = n - n_test
    if n_test < k or n_train < k:
        empty = "an empty split: " if min(n_test, n_train) == 0 else ""
        raise DataError(f"{name}: test_fraction {test_fraction:g} of {n} images leaves {empty}{n_train} for training "
                        f"and {n_test} for test; expected at least one image of each of the {k} classes in each split "
                        f"(a test_fraction in [{k / n:.3g}, {1 - k / n:.3g}], or more images)")


def _to_split(images: torch.Tensor, labels: torch.Tensor, index: np.ndarray, classes: list[str], name: str,
              scale: int = 255) -> Split:
    """(N, C, H, W) images on the 0..scale scale -> validated Split with float32 pixels in [0, 1]."""
    _check_classes(classes, name)
    if len(labels) == 0:
        raise DataError(f"{name}: the split holds no images; expected at least one image of each class")
    x = images.to(torch.float32)
    if scale != 1:
        x = x.div(scale)  # the same arithmetic as torchvision's ToTensor
    expected = "pixel values in [0, 1]" if scale == 1 else f"pixel values in 0..{scale}"
    if not torch.isfinite(x).all():
        raise DataError(f"{name}: images contain NaN or Inf; expected finite {expected}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{name}: pixel values outside {'[0, 1]' if scale == 1 else f'0..{scale}'} "
                        f"([{x.min().item() * scale:g}, {x.max().item() * scale:g}]); expected {expected}")
    y = labels.to(torch.int64)
    if y.numel() and (y.min() < 0 or y.max() >= len(classes)):
        raise DataError(f"{name}: labels outside 0..{len(classes) - 1} ([{y.min().item()}, {y.max().item()}]); "
                        f"expected one of the {len(classes)} class indices")
    return Split(x=x.contiguous(), y=y, index=np.asarray(index, dtype=np.int64), classes=list(classes))


# ---- sources without an official test split ------------------------------------------------------------

def _read_unsplit(cfg: dict[str, Any], data_root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], str, int]:
    """All images (NCHW), labels, classes, a name and the pixel scale (255 or 1) of a dataset without an
    official split: digits, an image folder or an npz file."""
    if cfg["source"] == "digits":
        return (*_read_digits(), "digits (scikit-learn)", 255)
    source = cfg["source"]
    if "path" not in cfg:
        raise DataError(f"an {source} dataset needs `path`; expected the {_PATH_WHAT[source]}")
    path = Path(cfg["path"])
    path = path if path.is_absolute() else data_root / path  # relative paths live under data_root
    exists = path.is_dir() if source == "imagefolder" else path.is_file()
    if not exists:
        relative = "" if Path(cfg["path"]).is_absolute() else f" (`path` {cfg['path']!r} under data_root {data_root})"
        raise FileNotFoundError(f"{path}: {source} dataset not found{relative}; expected the {_PATH_WHAT[source]}")
    if source == "npz":
        stat = path.stat()
        return _read_npz(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return (*_read_imagefolder(str(path.resolve()), int(cfg.get("image_size", 32)), bool(cfg.get("grayscale", False))),
            f"image folder {path}", 255)


_PATH_WHAT = {"imagefolder": "folder of class/image files", "npz": ".npz file with arrays x and y"}


def _read_digits() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """scikit-learn's bundled digits (1797 8x8 images, values 0..16) as 8-bit images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    # Put them on the 1/255 grid like any image read from disk, so quantised attacks and saved
    # PNGs treat them exactly as they treat MNIST or CIFAR.
    images = torch.from_numpy(np.round(d.images / 16 * 255).astype(np.uint8)).unsqueeze(1)
    return images, torch.from_numpy(d.target.astype(np.int64)), [str(c) for c in d.target_names]


@lru_cache(maxsize=1)  # dataset_info and load_split in one job read the folder once
def _read_imagefolder(path: str, image_size: int, grayscale: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of an ImageFolder, resized and centre-cropped to image_size, as uint8 NCHW."""
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    steps = [T.Resize(image_size), T.CenterCrop(image_size)] + ([T.Grayscale(1)] if grayscale else [])
    try:
        ds = tvd.ImageFolder(path, transform=T.Compose(steps + [T.PILToTensor()]))  # uint8: 4x less memory
    except FileNotFoundError as err:  # no class folder, or no image in them
        raise DataError(f"{path}: {err}; expected one sub-folder per class holding image files") from err
    images = []
    for i, (file, _) in enumerate(ds.samples):
        try:
            images.append(ds[i][0])
        except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError, truncated files
            raise DataError(f"{file}: not a readable image ({err}); expected an image file PIL can decode "
                            "(PNG, JPEG, ...)") from err
    return torch.stack(images), torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


@lru_cache(maxsize=1)  # dataset_info and load_split in one job read the file once; keyed on mtime and size
def _read_npz(path: str, mtime_ns: int, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str], str, int]:
    """Arrays `x` (N, C, H, W) or (N, H, W), uint8 or float in [0, 1], and `y` (N,) integer labels from an .npz
    file; an optional `classes` array names the classes (default: "0".."K-1")."""
    expected = "expected an .npz file (numpy.savez) with arrays x (N, C, H, W) and y (N,)"
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise DataError(f"{path}: empty file (0 bytes); {expected}")
    if head.startswith(b"\x93NUMPY"):  # np.load would return that one array
        raise DataError(f"{path}: a single .npy array (numpy.save), not an .npz archive; {expected}")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # an .npz is a zip archive of .npy files
        raise DataError(f"{path}: not an .npz file (it starts with {head!r}, not the zip archive numpy.savez "
                        f"writes); {expected}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not {"x", "y"} <= set(data.files):
                raise DataError(f"{path}: holds arrays {sorted(data.files)}; {expected}")
            x, y = data["x"], data["y"]
            names = data["classes"] if "classes" in data.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib_error) as err:  # truncated, corrupt, pickled
        raise DataError(f"{path}: not a readable .npz file ({err}); {expected}") from err
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise DataError(f"{path}: array x has shape {x.shape}; expected (N, C, H, W) or (N, H, W) with square images")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: array x has dtype {x.dtype}; expected uint8 (0..255) or float (0..1)")
    if x.dtype != np.uint8:  # checked on the whole file, so that every split and stage refuses it alike
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(f"{path}: array x holds {bad} NaN or Inf value(s); expected finite pixel values in [0, 1]")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{path}: array x holds values in [{x.min():g}, {x.max():g}]; expected pixel values "
                            "in [0, 1] (or uint8 in 0..255)")
    if y.shape != (len(x),):
        raise DataError(f"{path}: array y has shape {y.shape}; expected ({len(x)},), one label per image of x")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: array y has dtype {y.dtype}; expected integer class labels")
    if len(x) == 0:
        raise DataError(f"{path}: holds no images (array x has shape {x.shape}); expected images of at least 2 "
                        "classes, 2 or more per class")
    if y.min() < 0:
        raise DataError(f"{path}: array y holds negative labels ([{y.min()}, {y.max()}]); expected class indices "
                        "0..K-1")
    k = int(y.max()) + 1
    if names is not None and (names.ndim != 1 or len(names) < k):
        what = f"has shape {names.shape}" if names.ndim != 1 else f"names {len(names)} classes"
        raise DataError(f"{path}: array classes {what} but y holds labels 0..{k - 1} ({k} classes); expected one "
                        f"name per class, {k} names")
    if names is not None and len(names) > k:
        extra = ", ".join(f"{c} ({str(names[c])!r})" for c in range(k, min(len(names), k + 10)))
        raise DataError(f"{path}: array classes names {len(names)} classes but y holds labels 0..{k - 1} only: "
                        f"class(es) {extra}{' ...' if len(names) > k + 10 else ''} have no image; expected one "
                        f"name per class of y ({k} names), and images of every named class")
    classes = [str(c) for c in names] if names is not None else [str(c) for c in range(k)]
    absent = np.setdiff1d(np.arange(k), y)
    if len(absent):
        shown = ", ".join(f"{c} ({classes[c]!r})" if names is not None else str(c) for c in absent[:10])
        raise DataError(f"{path}: class(es) {shown}{' ...' if len(absent) > 10 else ''} of 0..{k - 1} have no image "
                        f"in y; expected every class 0..{k - 1} to have images (labels numbered without gaps)")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)), classes, path, \
        (255 if x.dtype == np.uint8 else 1)


# ---- torchvision sets (official train/test splits) -----------------------------------------------------

def _expected_files(source: str, root: Path) -> list[Path]:
    """The files torchvision reads for `source` under data_root (both splits: it checks both)."""
    cls = _TORCHVISION[source].cls
    if source == "mnist":
        return [root / "MNIST" / "raw" / Path(name).stem for name, _ in cls.resources]
    return [root / cls.base_folder / name for name, _ in cls.train_list + cls.test_list] + \
        [root / cls.base_folder / cls.meta["filename"]]


def _ensure_present(source: str, cfg: dict[str, Any], root: Path) -> None:
    """Download the dataset when allowed and missing; else fail naming the files that are missing."""
    missing = [p for p in _expected_files(source, root) if not p.is_file()]
    if source == "mnist" and all((root / "MNIST" / "processed" / f).is_file() for f in ("training.pt", "test.pt")):
        missing = []  # torchvision still reads its legacy processed cache
    if not missing:
        return
    spec = _TORCHVISION[source]
    if cfg.get("download", False):
        spec.cls(str(root), train=False, download=True)
        return
    where = (f"data_root {root} (config key 'data_root') does not exist" if not root.is_dir()
             else f"{spec.title} not found under data_root {root} (config key 'data_root')")
    raise FileNotFoundError(
        f"{where}: missing {', '.join(str(p) for p in missing)}; expected {spec.title}'s files there. "
        f"Set `download: true` in this dataset's config entry to let torchvision fetch it into {root}, "
        f"or place the files there.")


def _read_torchvision(source: str, cfg: dict[str, Any], train: bool,
                      root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """Images (uint8 NCHW), labels, classes and a name of one official split of a torchvision set."""
    spec = _TORCHVISION[source]
    _ensure_present(source, cfg, root)
    name = f"{spec.title} ({'train' if train else 'test'}) under {root}"
    if source == "mnist":  # torchvision only checks that the raw IDX files exist, not their md5
        ds = spec.cls(str(root), train=train)
        return ds.data.unsqueeze(1), ds.targets, list(ds.classes), name
    try:
        ds = spec.cls(str(root), train=train)
    except RuntimeError as err:
        # torchvision accepts only the md5 of the official release; files in the same pickled
        # format that differ (subsets, re-exports, test fixtures) are read by our own reader.
        warnings.warn(f"{name}: {err} (md5 differs from the official release); "
                      f"reading the pickled batches with advpipe's CIFAR reader", stacklevel=3)
        return (*_read_cifar_batches(spec.cls, root, train), name)
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # stored HWC
    return images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes), name


def _read_cifar_batches(cls: type, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read CIFAR python batches (dicts with `data` (N, 3072) and `labels`/`fine_labels`) as torchvision does."""
    folder = root / cls.base_folder
    data, labels = [], []
    for file_name, _ in (cls.train_list if train else cls.test_list):
        entry = _read_pickle(folder / file_name)
        key = "labels" if "labels" in entry else "fine_labels"
        if "data" not in entry or key not in entry:
            raise DataError(f"{folder / file_name}: CIFAR batch lacks 'data' or '{key}' (has {sorted(entry)}); "
                            "expected a dict with both")
        data.append(np.asarray(entry["data"]).reshape(-1, 3, 32, 32))  # rows are channel-major RGB planes
        labels.extend(entry[key])
    classes = list(_read_pickle(folder / cls.meta["filename"])[cls.meta["key"]])
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.int64), classes


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch never needs more, and refusing
    everything else means a tampered file cannot run code (torchvision's own reader would)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays and plain values)")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle (written by Python 2, hence latin1, as torchvision reads it)."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a readable CIFAR batch (truncated, corrupt or unsafe): {err}; "
                        "expected a pickled dict of arrays") from err
    if not isinstance(entry, dict):
        raise DataError(f"{path}: not a CIFAR batch (expected a dict, got {type(entry).__name__})")
    return entry


# ---- Tiny ImageNet (SPEC 4): the official tree, its train split and its labelled validation set -----------
#
# Layout under the entry's `path` (relative to data_root; default "tiny-imagenet-200", the folder the official
# zip unpacks to):
#   wnids.txt                          the 200 WordNet ids, one a line; their order is the class index
#   words.txt                          optional: "wnid<TAB>human names" (all of ImageNet's synsets)
#   train/<wnid>/images/*.JPEG         500 images per class: the train split
#   val/images/*.JPEG                  10,000 images, 50 per class: the test split (the challenge's evaluation set)
#   val/val_annotations.txt            "file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1", one line per validation image
# test/ is not read: it has no labels. Images are 64x64 RGB; the few greyscale JPEGs of the official set are
# converted to RGB (three equal channels), as the original pipeline's 3-channel decode does. Any other size is
# refused, not resized: a resized set is a different dataset, and attacks would perturb interpolated pixels.
#
# Pre-processing. advpipe keeps every image in [0, 1] and each model normalises inside its forward, so SPEC 4's
# input conventions are a model's `normalize: {mean: [...], std: [...]}` (normalised = (x - mean) / std):
#   - the original pipeline's [-1, 1] scaling, 2x - 1 == (x - 0.5) / 0.5: mean 0.5, std 0.5 per channel;
#   - the baseline ResNet-18's x_255 - (123.68, 116.78, 103.94), with x_255 = 255 x: since
#     255 x - m == (x - m / 255) / (1 / 255), mean (123.68/255, 116.78/255, 103.94/255)
#     = (0.48501961, 0.45796078, 0.40760784) and std 1/255 = 0.00392157 for each channel.
# TINYIMAGENET_NORMALIZE holds both. (`normalize: dataset` uses the train split's own mean/std instead.)
# SPEC 4's optional training augmentation (flip, hue +-0.05, saturation [0.5, 1.5]): the flip is the train
# recipe's `augment: {hflip: true, crop_padding: 0}`; hue and saturation jitter are not implemented.
#
# Decoding the 100k training JPEGs takes a while, so the decoded uint8 array (N, 3, 64, 64) is cached: in the
# process (one entry per tree and split) and on disk as <path>/.advpipe-cache/<split>-<key>.npy, the key a hash
# of the file list with each file's size and mtime (so an edited, added or removed image decodes again). The
# entry's `cache: false` turns the disk cache off; a tree that cannot be written to is read without it.

TINYIMAGENET_DIR = "tiny-imagenet-200"
TINYIMAGENET_SHAPE = (3, 64, 64)
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_NORMALIZE = {
    # x in [0, 1] -> 2x - 1 in [-1, 1], SPEC 4's pipeline scaling (the ALP ResNet-v2-50 input)
    "minus_one_one": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    # x in [0, 1] -> 255 x - (123.68, 116.78, 103.94), SPEC 4's baseline ResNet-18 input
    "resnet18_baseline": {"mean": [123.68 / 255, 116.78 / 255, 103.94 / 255], "std": [1 / 255] * 3},
}
_TINY_SUFFIXES = (".jpeg", ".jpg")
_TINY_CACHE_DIR = ".advpipe-cache"
_TINY_CACHE_FORMAT = 1  # part of the cache key: bump when the decoded array changes meaning
_TINY_MEMO: dict[tuple[str, str], tuple[str, torch.Tensor]] = {}  # (tree, split) -> (key, uint8 images)


def _tiny_root(cfg: dict[str, Any], data_root: Path) -> Path:
    """The Tiny ImageNet tree of a dataset entry; FileNotFoundError (naming it) when it is not there."""
    raw = Path(cfg.get("path", TINYIMAGENET_DIR))
    path = raw if raw.is_absolute() else data_root / raw
    if not path.is_dir():
        relative = "" if raw.is_absolute() else f" (`path` {str(raw)!r} under data_root {data_root})"
        raise FileNotFoundError(f"{path}: tinyimagenet dataset not found{relative}; expected the official Tiny "
                                f"ImageNet folder (wnids.txt, train/, val/), e.g. {TINYIMAGENET_URL} unzipped")
    return path.resolve()


def _read_text_lines(file: Path, what: str) -> list[str]:
    if not file.is_file():
        raise DataError(f"{file}: missing; expected {what}")
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: not a readable text file ({err}); expected {what}") from err


def _tiny_wnids(root: Path) -> list[str]:
    """The class ids of wnids.txt in file order (blank lines skipped)."""
    file = root / "wnids.txt"
    what = "the Tiny ImageNet class list: one WordNet id (e.g. n01443537) a line, 200 lines"
    wnids: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(_read_text_lines(file, what), 1):
        wnid = line.strip()
        if not wnid:
            continue
        if any(c.isspace() for c in wnid) or "/" in wnid or "\\" in wnid or wnid in (".", ".."):
            raise DataError(f"{file}: line {n} is {line!r}; expected {what} (a folder name under train/)")
        if wnid in seen:
            raise DataError(f"{file}: line {n} repeats {wnid!r} (first on line {seen[wnid]}); expected each class "
                            "once")
        seen[wnid] = n
        wnids.append(wnid)
    if len(wnids) < 2:
        raise DataError(f"{file}: {len(wnids)} class id(s); expected {what} (at least 2 classes)")
    return wnids


def _tiny_train_files(root: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """train/<wnid>/images/*.JPEG, sorted by name within each class in wnids.txt order, and their labels."""
    files: list[Path] = []
    labels: list[int] = []
    for k, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataError(f"{folder}: missing; expected the training images of class {wnid!r} (listed in "
                            f"{root / 'wnids.txt'}) as train/{wnid}/images/*.JPEG")
        names = sorted(e.name for e in os.scandir(folder)
                       if e.name.lower().endswith(_TINY_SUFFIXES) and e.is_file())
        if not names:
            raise DataError(f"{folder}: no JPEG images; expected the training images of class {wnid!r} "
                            f"(train/{wnid}/images/*.JPEG, 500 in the official set)")
        files += [folder / name for name in names]
        labels += [k] * len(names)
    return files, np.asarray(labels, dtype=np.int64)


def _tiny_val_files(root: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """The validation images in val_annotations.txt order, and their labels."""
    ann = root / "val" / "val_annotations.txt"
    what = ("the validation labels: one tab-separated line per image of val/images (file, wnid, x0, y0, x1, y1), "
            "with wnids from wnids.txt")
    index = {w: k for k, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(_read_text_lines(ann, what), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 2 or not fields[0] or Path(fields[0]).name != fields[0]:
            raise DataError(f"{ann}: line {n} is {line!r}; expected {what}")
        name, wnid = fields[0], fields[1].strip()
        if wnid not in index:
            raise DataError(f"{ann}: line {n} labels {name} with {wnid!r}, which is not in {root / 'wnids.txt'}; "
                            f"expected one of its {len(wnids)} class ids")
        if name in seen:
            raise DataError(f"{ann}: line {n} repeats {name} (first on line {seen[name]}); expected one label per "
                            "image")
        seen[name] = n
        image = root / "val" / "images" / name
        if not image.is_file():
            raise DataError(f"{image}: missing (named on line {n} of {ann}); expected the validation image there")
        files.append(image)
        labels.append(index[wnid])
    if not files:
        raise DataError(f"{ann}: no image listed; expected {what}")
    return files, np.asarray(labels, dtype=np.int64)


def _tiny_key(root: Path, files: list[Path], labels: np.ndarray) -> str:
    """A hash of the file list, each file's size and mtime, and the labels: what the decoded array depends on."""
    h = hashlib.sha256(f"advpipe tinyimagenet {_TINY_CACHE_FORMAT} {TINYIMAGENET_SHAPE}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(labels.tobytes())
    return h.hexdigest()[:20]


def _decode_tiny(path: Path) -> np.ndarray:
    """One 64x64 image as uint8 (3, 64, 64) RGB."""
    from PIL import Image

    c, h, w = TINYIMAGENET_SHAPE
    try:
        with Image.open(path) as img:
            if img.size != (w, h):
                raise DataError(f"{path}: image of {img.size[0]}x{img.size[1]} pixels; expected {w}x{h} (Tiny "
                                "ImageNet's size; advpipe does not resize it)")
            rgb = np.asarray(img.convert("RGB"))  # the official set holds some greyscale JPEGs
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # truncated, not an image
        raise DataError(f"{path}: not a readable image ({err}); expected a {w}x{h} JPEG that PIL can decode") \
            from err
    return rgb.transpose(2, 0, 1)


def _decode_all(files: list[Path], desc: str) -> np.ndarray:
    """Decode `files` into one uint8 (N, 3, 64, 64) array, on a few threads (PIL's decoder releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    out = np.empty((len(files), *TINYIMAGENET_SHAPE), dtype=np.uint8)
    chunk = 256

    def decode(start: int) -> int:
        for i in range(start, min(start + chunk, len(files))):
            out[i] = _decode_tiny(files[i])
        return min(chunk, len(files) - start)

    workers = max(1, min(8, torch.get_num_threads(), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(files), desc=desc, unit="img", mininterval=1) as bar:
        try:
            for done in pool.map(decode, range(0, len(files), chunk)):  # raises the first DataError, in file order
                bar.update(done)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # not decode the rest of 100k files for nothing
            raise
    return out


def _tiny_cache_load(file: Path, n: int) -> np.ndarray | None:
    if not file.is_file():
        return None
    try:
        x = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        warnings.warn(f"{file}: unreadable Tiny ImageNet cache ({err}); decoding the images again", stacklevel=4)
        return None
    if x.dtype != np.uint8 or x.shape != (n, *TINYIMAGENET_SHAPE):
        warnings.warn(f"{file}: Tiny ImageNet cache holds {x.dtype} {x.shape}, not uint8 {(n, *TINYIMAGENET_SHAPE)}; "
                      "decoding the images again", stacklevel=4)
        return None
    return x


def _tiny_cache_save(file: Path, x: np.ndarray, split: str) -> None:
    """Write atomically (parallel jobs may decode the same tree), then drop this split's older caches."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, x, allow_pickle=False)
        os.replace(tmp, file)
        for old in file.parent.glob(f"{split}-*.npy"):
            if old != file:
                old.unlink(missing_ok=True)
    except OSError as err:  # a read-only tree: fine, only slower next time
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"{file}: Tiny ImageNet cache not written ({err}); the images will be decoded again by the "
                      "next job (set `cache: false` on the dataset entry to skip this)", stacklevel=4)


def _tiny_images(cfg: dict[str, Any], split: str,
                 data_root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], Path]:
    """uint8 images (N, 3, 64, 64), labels and wnids of one split, from the caches or decoded; and the tree."""
    root = _tiny_root(cfg, data_root)
    wnids = _tiny_wnids(root)
    files, labels = (_tiny_train_files if split == "train" else _tiny_val_files)(root, wnids)
    key = _tiny_key(root, files, labels)
    memo = _TINY_MEMO.get((str(root), split))
    if memo is not None and memo[0] == key:
        return memo[1], torch.from_numpy(labels), wnids, root
    use_disk = bool(cfg.get("cache", True))
    file = root / _TINY_CACHE_DIR / f"{split}-{key}.npy"
    x = _tiny_cache_load(file, len(files)) if use_disk else None
    if x is None:
        x = _decode_all(files, f"Tiny ImageNet {split} ({root.name})")
        if use_disk:
            _tiny_cache_save(file, x, split)
    images = torch.from_numpy(x)
    _TINY_MEMO.pop((str(root), split), None)
    while len(_TINY_MEMO) >= 2:  # one tree's train and test: the full train split alone is 1.2 GB
        _TINY_MEMO.pop(next(iter(_TINY_MEMO)))
    _TINY_MEMO[(str(root), split)] = (key, images)
    return images, torch.from_numpy(labels), wnids, root


def _read_tinyimagenet(cfg: dict[str, Any], split: str,
                       data_root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """Images (uint8 NCHW), labels, classes (the wnids) and a name of one split of Tiny ImageNet."""
    images, labels, wnids, root = _tiny_images(cfg, split, data_root)
    part = "train" if split == "train" else "val, the test split"
    return images, labels, wnids, f"Tiny ImageNet ({part}) in {root}"


def _tinyimagenet_info(cfg: dict[str, Any], data_root: Path) -> DatasetInfo:
    """Classes from wnids.txt; mean/std per channel of the train split, exact (from pixel-value counts)."""
    images, _, wnids, _ = _tiny_images(cfg, "train", data_root)
    x = images.numpy()
    counts = np.zeros((x.shape[1], 256), dtype=np.int64)
    for start in range(0, len(x), 4096):
        block = x[start:start + 4096]
        for c in range(x.shape[1]):
            counts[c] += np.bincount(block[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255
    n = counts.sum(1)
    mean = counts @ values / n
    std = np.sqrt(np.maximum(counts @ values**2 / n - mean**2, 0))
    return DatasetInfo(in_channels=x.shape[1], image_size=x.shape[-1], num_classes=len(wnids), classes=list(wnids),
                       mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def tinyimagenet_names(cfg: dict[str, Any], data_root: str | Path) -> list[str]:
    """Human names of the classes (words.txt, in wnids.txt order); a wnid words.txt lacks, or every wnid when
    there is no words.txt, stands for itself."""
    root = _tiny_root(cfg, Path(data_root))
    wnids = _tiny_wnids(root)
    file = root / "words.txt"
    if not file.exists():
        return list(wnids)
    wanted, names = set(wnids), {}
    for n, line in enumerate(_read_text_lines(file, "one 'wnid<TAB>names' line per WordNet id"), 1):
        if not line.strip():
            continue
        wnid, sep, words = line.partition("\t")
        if not sep:
            raise DataError(f"{file}: line {n} is {line!r}; expected 'wnid<TAB>names' (e.g. "
                            "'n01443537\\tgoldfish, Carassius auratus')")
        if wnid.strip() in wanted:
            names[wnid.strip()] = words.strip()
    return [names.get(w) or w for w in wnids]
