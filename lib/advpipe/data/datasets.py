"""Datasets by config entry: bundled digits, torchvision MNIST/CIFAR-10/CIFAR-100 from data_root, image folders.

Every loader ends in `_to_split`: images arrive on the 0..255 scale, become float32 in [0, 1]
(N, C, H, W), and are validated, so all sources share one conversion and one check.
"""
from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torchvision import datasets as tvd
from torchvision import transforms as T

from .splits import Split, stratified_split

SOURCES = ("digits", "mnist", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "test")


@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset: input shape, classes, normalisation statistics."""

    in_channels: int
    image_size: int
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class _TorchvisionSet:
    """A torchvision dataset with an official train/test split, its files and its usual statistics."""

    cls: type
    title: str
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


# Facts about the published datasets (usual normalisation statistics of their training sets).
_TORCHVISION = {
    "mnist": _TorchvisionSet(tvd.MNIST, "MNIST", 1, 28, (0.1307,), (0.3081,)),
    "cifar10": _TorchvisionSet(tvd.CIFAR10, "CIFAR-10", 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": _TorchvisionSet(tvd.CIFAR100, "CIFAR-100", 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def load_split(cfg: dict[str, Any], split: str, data_root: str | Path, seed: int) -> Split:
    """Load the `split` ("train" or "test") of the dataset configured by `cfg` (a `datasets:` entry)."""
    source = _check(cfg, split)
    if source in _TORCHVISION:
        images, labels, classes, name = _read_torchvision(source, cfg, split == "train", Path(data_root))
        return _to_split(images, labels, np.arange(len(labels), dtype=np.int64), classes, name)
    images, labels, classes, name = _read_unsplit(cfg, Path(data_root))
    train, test = stratified_split(labels.numpy(), cfg.get("test_fraction", 0.3), seed)
    pos = train if split == "train" else test
    sel = torch.from_numpy(pos)
    return _to_split(images[sel], labels[sel], pos, classes, name)


def dataset_info(cfg: dict[str, Any], data_root: str | Path, seed: int) -> DatasetInfo:
    """Shape, classes and normalisation statistics of a dataset; torchvision sets are not loaded for it."""
    source = _check(cfg, "train")
    if source in _TORCHVISION:
        spec, root = _TORCHVISION[source], Path(data_root)
        _ensure_present(source, cfg, root)
        if source == "mnist":
            classes = list(tvd.MNIST.classes)
        else:  # CIFAR class names live in the small meta pickle
            meta = spec.cls.meta
            classes = list(_read_pickle(root / spec.cls.base_folder / meta["filename"])[meta["key"]])
        return DatasetInfo(spec.in_channels, spec.image_size, len(classes), classes, spec.mean, spec.std)
    # Sources without published statistics: computed on the training split, so deterministic per seed.
    train = load_split(cfg, "train", data_root, seed)
    x = train.x.transpose(0, 1).reshape(train.x.shape[1], -1).double()  # (C, N*H*W)
    return DatasetInfo(in_channels=train.x.shape[1], image_size=train.x.shape[-1], num_classes=len(train.classes),
                       classes=list(train.classes), mean=tuple(x.mean(1).tolist()),
                       std=tuple(x.std(1, correction=0).tolist()))


def _check(cfg: dict[str, Any], split: str) -> str:
    """Validate the source and split names; return the source."""
    source = cfg.get("source")
    if source not in SOURCES:
        raise ValueError(f"dataset source must be one of {SOURCES}, got {source!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return source


def _to_split(images: torch.Tensor, labels: torch.Tensor, index: np.ndarray, classes: list[str], name: str) -> Split:
    """(N, C, H, W) images on the 0..255 scale -> validated Split with float32 pixels in [0, 1]."""
    x = images.to(torch.float32).div(255)  # the same arithmetic as torchvision's ToTensor
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: images contain NaN or Inf")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: pixel values outside 0..255 ([{x.min().item() * 255:g}, {x.max().item() * 255:g}])")
    y = labels.to(torch.int64)
    if y.numel() and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError(f"{name}: labels outside 0..{len(classes) - 1}")
    return Split(x=x.contiguous(), y=y, index=np.asarray(index, dtype=np.int64), classes=list(classes))


# ---- sources without an official test split ------------------------------------------------------------

def _read_unsplit(cfg: dict[str, Any], data_root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """All images (uint8 NCHW), labels, classes and a name of a digits or imagefolder dataset."""
    if cfg["source"] == "digits":
        return (*_read_digits(), "digits (scikit-learn)")
    if "path" not in cfg:
        raise ValueError("an imagefolder dataset needs `path`")
    path = Path(cfg["path"])
    path = path if path.is_absolute() else data_root / path  # relative paths live under data_root
    if not path.is_dir():
        raise FileNotFoundError(f"image folder not found: {path}")
    return (*_read_imagefolder(str(path.resolve()), int(cfg.get("image_size", 32)), bool(cfg.get("grayscale", False))),
            f"image folder {path}")


def _read_digits() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """scikit-learn's bundled digits (1797 8x8 images, values 0..16) as 8-bit images."""
    d = load_digits()
    # Put them on the 1/255 grid like any image read from disk, so quantised attacks and saved
    # PNGs treat them exactly as they treat MNIST or CIFAR.
    images = torch.from_numpy(np.round(d.images / 16 * 255).astype(np.uint8)).unsqueeze(1)
    return images, torch.from_numpy(d.target.astype(np.int64)), [str(c) for c in d.target_names]


@lru_cache(maxsize=1)  # dataset_info and load_split in one job read the folder once
def _read_imagefolder(path: str, image_size: int, grayscale: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of an ImageFolder, resized and centre-cropped to image_size, as uint8 NCHW."""
    steps = [T.Resize(image_size), T.CenterCrop(image_size)] + ([T.Grayscale(1)] if grayscale else [])
    ds = tvd.ImageFolder(path, transform=T.Compose(steps + [T.PILToTensor()]))  # uint8: 4x less memory than float
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


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
    raise FileNotFoundError(
        f"{spec.title} not found under data_root: missing {', '.join(str(p) for p in missing)}. "
        f"Set `download: true` in this dataset's config entry to let torchvision fetch it into {root}, "
        f"or place the files there.")


def _read_torchvision(source: str, cfg: dict[str, Any], train: bool,
                      root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """Images (uint8 NCHW), labels, classes and a name of one official split of a torchvision set."""
    spec = _TORCHVISION[source]
    _ensure_present(source, cfg, root)
    name = f"{spec.title} ({'train' if train else 'test'}) under {root}"
    if source == "mnist":  # torchvision only checks that the raw IDX files exist, not their md5
        ds = tvd.MNIST(str(root), train=train)
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
            raise ValueError(f"{folder / file_name}: CIFAR batch lacks 'data' or '{key}' (has {sorted(entry)})")
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
        raise ValueError(f"{path}: not a readable CIFAR batch (truncated, corrupt or unsafe): {err}") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR batch (expected a dict, got {type(entry).__name__})")
    return entry
