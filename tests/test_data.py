"""advpipe.data: digits splits, loaders on tiny files in the real on-disk formats, subsets, augmentation."""
from __future__ import annotations

import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from advpipe.data import (SOURCES, crop_flip, crop_flip_params, dataset_info, load_split, random_crop_flip,
                          subset)

DIGITS = {"source": "digits", "test_fraction": 0.3}


# ---- digits -------------------------------------------------------------------------------------------

def test_digits_split_shapes_grid_and_disjoint():
    train, test = (load_split(DIGITS, s, "unused", seed=0) for s in ("train", "test"))
    assert len(train) + len(test) == 1797
    assert len(test) == 540  # sklearn: ceil(0.3 * 1797)
    assert train.x.shape == (len(train), 1, 8, 8) and test.x.shape == (540, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64 and train.index.dtype == np.int64
    for s in (train, test):
        scaled = s.x * 255
        assert torch.equal(scaled, scaled.round()) and s.x.min() == 0 and s.x.max() == 1
    assert not set(train.index) & set(test.index)
    assert sorted(np.concatenate([train.index, test.index]).tolist()) == list(range(1797))
    assert train.classes == [str(i) for i in range(10)]


def test_digits_pixels_are_sklearn_values_on_the_255_grid():
    from sklearn.datasets import load_digits
    d = load_digits()
    test = load_split(DIGITS, "test", "unused", seed=0)
    expected = np.round(d.images[test.index] / 16 * 255) / 255
    np.testing.assert_allclose(test.x[:, 0].numpy(), expected, atol=1e-7)
    assert np.array_equal(test.y.numpy(), d.target[test.index])


def test_digits_split_is_stratified_and_seeded():
    a = load_split(DIGITS, "test", "unused", seed=0)
    b = load_split(DIGITS, "test", "unused", seed=0)
    c = load_split(DIGITS, "test", "unused", seed=1)
    assert np.array_equal(a.index, b.index) and torch.equal(a.x, b.x)
    assert not np.array_equal(a.index, c.index)
    train = load_split(DIGITS, "train", "unused", seed=0)
    for k in range(10):  # each class keeps its share in both splits (within one sample)
        n_test, n_train = int((a.y == k).sum()), int((train.y == k).sum())
        assert abs(n_test - 0.3 * (n_test + n_train)) <= 1


def test_digits_info_is_computed_on_train_and_deterministic():
    info = dataset_info(DIGITS, "unused", seed=0)
    x = load_split(DIGITS, "train", "unused", seed=0).x.double()
    assert (info.in_channels, info.image_size, info.num_classes) == (1, 8, 10)
    assert info.mean == pytest.approx((x.mean().item(),)) and info.std == pytest.approx((x.std(correction=0).item(),))
    assert dataset_info(DIGITS, "unused", seed=0) == info


def test_subset_is_seeded_and_a_subset():
    train = load_split(DIGITS, "train", "unused", seed=0)
    s1, s2, s3 = subset(train, 100, seed=5), subset(train, 100, seed=5), subset(train, 100, seed=6)
    assert len(s1) == 100 and np.array_equal(s1.index, s2.index) and not np.array_equal(s1.index, s3.index)
    assert set(s1.index) <= set(train.index) and np.all(np.diff(s1.index) > 0)
    pos = np.searchsorted(train.index, s1.index)
    assert torch.equal(s1.x, train.x[pos]) and torch.equal(s1.y, train.y[pos])
    assert subset(train, 10**6, seed=0) is train


def test_bad_source_and_split():
    with pytest.raises(ValueError, match="source"):
        load_split({"source": "svhn"}, "train", "unused", 0)
    with pytest.raises(ValueError, match="split"):
        load_split(DIGITS, "val", "unused", 0)
    assert SOURCES == ("digits", "mnist", "cifar10", "cifar100", "imagefolder", "npz", "tinyimagenet", "spheres", "squares",
                       "square32")


# ---- MNIST: IDX files in MNIST/raw, as torchvision reads them ----------------------------------------------

def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX (big-endian): magic 0x00 0x00 0x08(ubyte) ndim, the dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(tmp_path / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(tmp_path / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = images, labels
    for split, prefix in (("train", "train"), ("test", "t10k")):
        s = load_split({"source": "mnist"}, split, tmp_path, seed=0)
        images, labels = written[prefix]
        assert s.x.shape == (len(labels), 1, 28, 28)
        assert np.array_equal((s.x[:, 0] * 255).round().to(torch.uint8).numpy(), images)
        assert np.array_equal(s.y.numpy(), labels) and np.array_equal(s.index, np.arange(len(labels)))
    info = dataset_info({"source": "mnist"}, tmp_path, seed=0)
    assert (info.in_channels, info.image_size, info.num_classes) == (1, 28, 10)
    assert (info.mean, info.std) == ((0.1307,), (0.3081,))


# ---- CIFAR: python pickled batches ----------------------------------------------------------------------

def _write_cifar(root: Path, source: str, rng: np.random.Generator, data_dtype=np.uint8,
                 bad: float | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write tiny CIFAR-10/100 python batches (dicts with `data` (N, 3072) row = R, G, B planes) and the meta."""
    if source == "cifar10":
        folder, files, label_key = root / "cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)],
                                                                   "test": ["test_batch"]}, "labels"
        meta, n_classes = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]}), 10
    else:
        folder, files, label_key = root / "cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels"
        meta = ("meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                         "coarse_label_names": [f"k{i}" for i in range(20)]})
        n_classes = 100
    folder.mkdir(parents=True)
    written = {}
    for split, names in files.items():
        images, labels = [], []
        for name in names:
            x = rng.integers(0, 256, (2, 3, 32, 32)).astype(data_dtype)
            if bad is not None:
                x[0, 1, 2, 3] = bad
            y = rng.integers(0, n_classes, 2).tolist()
            entry = {"data": x.reshape(2, 3072), label_key: y, "batch_label": name}
            if source == "cifar100":
                entry["coarse_labels"] = [v // 5 for v in y]
            (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
            images.append(x)
            labels += y
        written[split] = np.concatenate(images), np.array(labels)
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return written


@pytest.mark.parametrize("source", ["cifar10", "cifar100"])
def test_cifar_batches_round_trip(tmp_path, source):
    written = _write_cifar(tmp_path, source, np.random.default_rng(1))
    for split in ("train", "test"):
        with pytest.warns(UserWarning, match="md5"):  # tiny files cannot match the official md5
            s = load_split({"source": source, "download": False}, split, tmp_path, seed=0)
        images, labels = written[split]
        assert s.x.shape == images.shape and s.x.dtype == torch.float32
        assert np.array_equal((s.x * 255).round().to(torch.uint8).numpy(), images)
        assert np.array_equal(s.y.numpy(), labels) and np.array_equal(s.index, np.arange(len(labels)))
    info = dataset_info({"source": source}, tmp_path, seed=0)
    assert info.classes == s.classes and info.num_classes == (10 if source == "cifar10" else 100)
    assert info.classes[:2] == (["c0", "c1"] if source == "cifar10" else ["f0", "f1"])
    assert (info.in_channels, info.image_size) == (3, 32)
    assert info.mean == ((0.4914, 0.4822, 0.4465) if source == "cifar10" else (0.5071, 0.4865, 0.4409))


@pytest.mark.parametrize("dtype, bad, message", [(np.int64, 300, "outside"), (np.float64, np.nan, "NaN")])
def test_cifar_bad_values_are_rejected(tmp_path, dtype, bad, message):
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(2), data_dtype=dtype, bad=bad)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"CIFAR-10.*{message}"):
        load_split({"source": "cifar10"}, "train", tmp_path, seed=0)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(3))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({"data": _Exploit(), "labels": [0]}, protocol=2))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="data_batch_2.*refusing"):
        load_split({"source": "cifar10"}, "train", tmp_path, seed=0)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_cifar_batch_names_the_file(tmp_path):
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(4))
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="test_batch: not a readable CIFAR batch"):
        load_split({"source": "cifar10"}, "test", tmp_path, seed=0)


@pytest.mark.parametrize("source, folder", [("mnist", "MNIST"), ("cifar10", "cifar-10-batches-py"),
                                            ("cifar100", "cifar-100-python")])
def test_missing_torchvision_data_names_the_path(tmp_path, source, folder):
    root = tmp_path / "no_data_here"
    for call in (lambda: load_split({"source": source, "download": False}, "test", root, 0),
                 lambda: dataset_info({"source": source}, root, 0)):
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert str(root / folder) in str(err.value) and "download: true" in str(err.value)


# ---- ImageFolder of PNGs ----------------------------------------------------------------------------------

def _write_pngs(root: Path, size: tuple[int, int], per_class: int = 4) -> list[tuple[np.ndarray, int]]:
    """PNGs under root/<class>/<i>.png; returns (HWC uint8 image, label) in ImageFolder's (sorted) order."""
    rng, out = np.random.default_rng(3), []
    for label, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
            out.append((img, label))
    return out


def test_imagefolder_round_trip_and_split(tmp_path):
    written = _write_pngs(tmp_path / "imgs", (8, 8))
    cfg = {"source": "imagefolder", "path": "imgs", "image_size": 8, "test_fraction": 0.5}  # relative to data_root
    train, test = (load_split(cfg, s, tmp_path, seed=0) for s in ("train", "test"))
    assert len(train) == len(test) == 4 and not set(train.index) & set(test.index)
    assert sorted(test.y.tolist()) == [0, 0, 1, 1] and train.classes == ["cat", "dog"]
    for s in (train, test):
        assert s.x.shape[1:] == (3, 8, 8)
        for x, y, i in zip(s.x, s.y, s.index):
            img, label = written[i]
            assert np.array_equal((x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), img) and y == label
    gray = load_split({**cfg, "path": str(tmp_path / "imgs"), "grayscale": True}, "test", "elsewhere", seed=0)
    assert gray.x.shape[1] == 1 and np.array_equal(gray.index, test.index)
    expected = np.array(Image.fromarray(written[gray.index[0]][0]).convert("L"))
    assert np.array_equal((gray.x[0, 0] * 255).round().to(torch.uint8).numpy(), expected)


def test_imagefolder_resizes_and_computes_info(tmp_path):
    _write_pngs(tmp_path / "imgs", (12, 10))
    cfg = {"source": "imagefolder", "path": str(tmp_path / "imgs"), "image_size": 6, "test_fraction": 0.5}
    s = load_split(cfg, "train", tmp_path, seed=0)
    assert s.x.shape == (4, 3, 6, 6)
    info = dataset_info(cfg, tmp_path, seed=0)
    assert (info.in_channels, info.image_size, info.classes) == (3, 6, ["cat", "dog"])
    assert info.mean == pytest.approx(tuple(s.x.double().mean((0, 2, 3)).tolist()))


def test_missing_image_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_split({"source": "imagefolder", "path": "nope"}, "train", tmp_path, 0)


# ---- augmentation -------------------------------------------------------------------------------------------

def _reference_crop_flip(x, padding, top, left, flip):
    """Per-sample torchvision reference: pad, crop at the given offsets, flip."""
    h, w = x.shape[-2:]
    out = []
    for xi, t, l, f in zip(x, top.tolist(), left.tolist(), flip.tolist()):
        yi = TF.crop(TF.pad(xi, [padding]), t, l, h, w)
        out.append(TF.hflip(yi) if f else yi)
    return torch.stack(out)


@pytest.mark.parametrize("padding, hflip", [(4, True), (2, False), (0, True)])
def test_random_crop_flip_matches_per_sample_reference(padding, hflip):
    x = torch.rand(16, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(x, padding, hflip, torch.Generator().manual_seed(42))
    top, left, flip = crop_flip_params(16, padding, hflip, torch.Generator().manual_seed(42))
    assert torch.equal(out, _reference_crop_flip(x, padding, top, left, flip))
    assert int(top.max()) <= 2 * padding and (flip.any() if hflip else not flip.any())
    assert torch.equal(out, random_crop_flip(x, padding, hflip, torch.Generator().manual_seed(42)))
    assert not (padding or hflip) or not torch.equal(out, random_crop_flip(x, padding, hflip,
                                                                           torch.Generator().manual_seed(43)))


def test_crop_flip_known_values():
    x = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    one = torch.ones(1, dtype=torch.long)
    assert torch.equal(crop_flip(x, 1, one, one, torch.tensor([False])), x)  # centre crop = identity
    assert torch.equal(crop_flip(x, 1, one, one, torch.tensor([True])), x.flip(-1))
    zero = torch.zeros(1, dtype=torch.long)
    assert torch.equal(crop_flip(x, 1, zero, zero, torch.tensor([False])), torch.tensor([[[[0.0, 0], [0, 0]]]]))


def test_cifar_official_path_through_torchvision_agrees(tmp_path, monkeypatch):
    """When the md5 check passes (here: patched to existence-only), torchvision reads the batches, identically."""
    import torchvision.datasets.cifar as tv_cifar
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(4))
    with pytest.warns(UserWarning, match="md5"):
        ours = load_split({"source": "cifar10"}, "train", tmp_path, seed=0)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: torchvision's own loader ran
        theirs = load_split({"source": "cifar10"}, "train", tmp_path, seed=0)
    assert torch.equal(ours.x, theirs.x) and torch.equal(ours.y, theirs.y) and ours.classes == theirs.classes
