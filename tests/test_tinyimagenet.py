"""The tinyimagenet source (SPEC 4) on a tiny tree in the exact official layout: classes, splits, pixels, labels,
the decoded-image caches, the normalisations that express SPEC 4's input conventions, and bad trees refused
with DataError naming the file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advpipe.config import _declared_shape, validate
from advpipe.data import (SOURCES, TINYIMAGENET_NORMALIZE, DataError, dataset_info, load_split,
                          tinyimagenet_names)
from advpipe.data import datasets as ds

# Written out of alphabetical order: the class index is the line of wnids.txt.
WNIDS = ["n02124075", "n01443537", "n09256479"]
WORDS = {"n01443537": "goldfish, Carassius auratus", "n02124075": "Egyptian cat", "n09256479": "coral reef"}
N_TRAIN, N_VAL = 4, 2
CFG = {"source": "tinyimagenet", "path": "tiny-imagenet-200"}


def _colour(k: int, j: int, val: bool) -> tuple[int, int, int]:
    """A distinct solid colour per image (well apart, so JPEG error cannot blur two together)."""
    i = 3 * (k * 10 + j) + (2 if val else 0)
    return (20 + 37 * i) % 256, (200 - 23 * i) % 256, (90 + 61 * i) % 256


def _jpeg(path: Path, colour, size=(64, 64), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path, "JPEG", quality=95)


def write_tree(root: Path) -> dict:
    """The official layout, with words.txt, the per-class *_boxes.txt files and an (unlabelled, unread) test/."""
    tree = root / "tiny-imagenet-200"
    tree.mkdir(parents=True)
    (tree / "wnids.txt").write_text("".join(w + "\n" for w in WNIDS))
    extra = {"n00001740": "entity", "n99999999": "something else"}
    (tree / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in {**extra, **WORDS}.items()))
    train = {}
    for k, wnid in enumerate(WNIDS):
        boxes = []
        for j in range(N_TRAIN):
            name = f"{wnid}_{j}.JPEG"
            train[(k, j)] = _colour(k, j, False)
            _jpeg(tree / "train" / wnid / "images" / name, train[(k, j)])
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        (tree / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val, lines = [], []
    for j in range(N_VAL):  # interleaved classes, as in the official file
        for k, wnid in enumerate(WNIDS):
            name = f"val_{len(val)}.JPEG"
            val.append((name, k, _colour(k, j, True)))
            _jpeg(tree / "val" / "images" / name, val[-1][2])
            lines.append(f"{name}\t{wnid}\t{j}\t{k}\t{40 + j}\t{50 + k}\n")
    (tree / "val" / "val_annotations.txt").write_text("".join(lines))
    _jpeg(tree / "test" / "images" / "test_0.JPEG", (1, 2, 3))
    return {"tree": tree, "train": train, "val": val}


@pytest.fixture(autouse=True)
def _fresh_memo():
    ds._TINY_MEMO.clear()
    yield
    ds._TINY_MEMO.clear()


def test_classes_sizes_pixels_and_labels(tmp_path):
    written = write_tree(tmp_path)
    assert "tinyimagenet" in SOURCES
    train, test = (load_split(CFG, s, tmp_path, seed=0) for s in ("train", "test"))
    assert train.classes == test.classes == WNIDS
    assert train.x.shape == (3 * N_TRAIN, 3, 64, 64) and test.x.shape == (3 * N_VAL, 3, 64, 64)
    assert train.x.dtype == torch.float32 and 0 <= train.x.min() and train.x.max() <= 1
    assert np.array_equal(train.index, np.arange(3 * N_TRAIN)) and np.array_equal(test.index, np.arange(3 * N_VAL))
    # train: classes in wnids.txt order, files by name within a class
    assert train.y.tolist() == [k for k in range(3) for _ in range(N_TRAIN)]
    for i, (x, y) in enumerate(zip(train.x, train.y)):
        colour = torch.tensor(written["train"][(int(y), i % N_TRAIN)], dtype=torch.float32) / 255
        assert (x - colour[:, None, None]).abs().max() <= 3 / 255
    # test: the validation images in val_annotations.txt order, labelled by its wnid column
    assert test.y.tolist() == [k for _, k, _ in written["val"]]
    for x, (_, _, colour) in zip(test.x, written["val"]):
        assert (x - torch.tensor(colour, dtype=torch.float32)[:, None, None] / 255).abs().max() <= 3 / 255


def test_info_names_default_path_and_greyscale(tmp_path):
    written = write_tree(tmp_path)
    info = dataset_info({"source": "tinyimagenet"}, tmp_path, seed=0)  # path defaults to tiny-imagenet-200
    x = load_split(CFG, "train", tmp_path, seed=0).x.double()
    assert (info.in_channels, info.image_size, info.num_classes, info.classes) == (3, 64, 3, WNIDS)
    # info's statistics are exact (from pixel-value counts); x went through float32
    assert info.mean == pytest.approx(tuple(x.mean((0, 2, 3)).tolist()), abs=1e-6)
    assert info.std == pytest.approx(tuple(x.transpose(0, 1).reshape(3, -1).std(1, correction=0).tolist()), abs=1e-6)
    assert tinyimagenet_names(CFG, tmp_path) == [WORDS[w] for w in WNIDS]
    (written["tree"] / "words.txt").unlink()
    assert tinyimagenet_names(CFG, tmp_path) == WNIDS  # words.txt is optional
    # a greyscale JPEG (the official set has some) becomes three equal channels
    _jpeg(written["tree"] / "val" / "images" / "val_0.JPEG", (77, 0, 0), mode="L")
    x0 = load_split(CFG, "test", tmp_path, seed=0).x[0]
    assert torch.equal(x0[0], x0[1]) and torch.equal(x0[1], x0[2]) and (x0 - 77 / 255).abs().max() <= 3 / 255


def test_decoded_images_are_cached_on_disk_and_keyed_by_the_files(tmp_path, monkeypatch):
    written = write_tree(tmp_path)
    first = load_split(CFG, "test", tmp_path, seed=0)
    cached = list((written["tree"] / ".advpipe-cache").glob("test-*.npy"))
    assert len(cached) == 1
    ds._TINY_MEMO.clear()
    decode = ds._decode_tiny
    monkeypatch.setattr(ds, "_decode_tiny", lambda path: pytest.fail(f"decoded {path} despite the cache"))
    assert torch.equal(load_split(CFG, "test", tmp_path, seed=0).x, first.x)  # from the .npy file
    monkeypatch.setattr(ds, "_decode_tiny", decode)
    image = written["tree"] / "val" / "images" / "val_1.JPEG"
    _jpeg(image, (255, 255, 255))
    os.utime(image, ns=(1, 1))  # a changed image: new key, decoded again, the old cache replaced
    again = load_split(CFG, "test", tmp_path, seed=0)
    assert (again.x[1] - 1).abs().max() <= 3 / 255 and torch.equal(again.x[0], first.x[0])
    assert [p.name for p in (written["tree"] / ".advpipe-cache").glob("test-*.npy")] != [cached[0].name]
    assert len(list((written["tree"] / ".advpipe-cache").glob("test-*.npy"))) == 1


def test_cache_false_writes_nothing(tmp_path):
    written = write_tree(tmp_path)
    load_split({**CFG, "cache": False}, "train", tmp_path, seed=0)
    assert not (written["tree"] / ".advpipe-cache").exists()


def test_normalizations_express_spec4_preprocessing():
    x = torch.rand(2, 3, 64, 64)
    base = TINYIMAGENET_NORMALIZE["resnet18_baseline"]
    mean, std = torch.tensor(base["mean"])[:, None, None], torch.tensor(base["std"])[:, None, None]
    torch.testing.assert_close((x - mean) / std, x * 255 - torch.tensor([123.68, 116.78, 103.94])[:, None, None],
                               atol=1e-3, rtol=0)
    pm = TINYIMAGENET_NORMALIZE["minus_one_one"]
    torch.testing.assert_close((x - pm["mean"][0]) / pm["std"][0], 2 * x - 1)


def test_config_accepts_tinyimagenet():
    assert _declared_shape({"source": "tinyimagenet"}) == (3, 64, 64)
    cfg = validate({
        "datasets": {"tiny": {"source": "tinyimagenet", "path": "tiny-imagenet-200"}},
        "models": {"r18": {"dataset": "tiny", "arch": "small_cnn",
                           "normalize": TINYIMAGENET_NORMALIZE["resnet18_baseline"]},
                   "alp": {"dataset": "tiny", "arch": "small_cnn",
                           "normalize": TINYIMAGENET_NORMALIZE["minus_one_one"]}},
        "attacks": {"fgsm": {"method": "fgsm"}},
        "vrapi": {"models": ["r18", "alp"], "attacks": ["fgsm"], "trials": 2},
    })
    assert cfg["datasets"]["tiny"]["source"] == "tinyimagenet"
    validate({"datasets": {"tiny": {"source": "tinyimagenet", "cache": False}},
              "models": {"m": {"dataset": "tiny", "arch": "small_cnn"}}, "attacks": {"fgsm": {"method": "fgsm"}},
              "vrapi": {"models": ["m"], "attacks": ["fgsm"], "trials": 2}})


def _break(tree: Path, case: str) -> tuple[Path, str]:
    """Break the tree one way; return the file the error must name and a phrase of it."""
    ann = tree / "val" / "val_annotations.txt"
    if case == "no wnids.txt":
        (tree / "wnids.txt").unlink()
        return tree / "wnids.txt", "missing"
    if case == "repeated wnid":
        (tree / "wnids.txt").write_text("".join(w + "\n" for w in WNIDS + WNIDS[:1]))
        return tree / "wnids.txt", "repeats"
    if case == "wnid without train folder":
        (tree / "wnids.txt").write_text("".join(w + "\n" for w in WNIDS + ["n07747607"]))
        return tree / "train" / "n07747607" / "images", "n07747607"
    if case == "train folder without images":
        for f in (tree / "train" / WNIDS[2] / "images").iterdir():
            f.unlink()
        return tree / "train" / WNIDS[2] / "images", "no JPEG"
    if case == "no val_annotations.txt":
        ann.unlink()
        return ann, "missing"
    if case == "unknown wnid in val_annotations.txt":
        ann.write_text(ann.read_text().replace(WNIDS[1], "n04067472", 1))
        return ann, "n04067472"
    if case == "missing val image":
        (tree / "val" / "images" / "val_4.JPEG").unlink()
        return tree / "val" / "images" / "val_4.JPEG", "val_annotations.txt"
    if case == "malformed annotation line":
        ann.write_text(ann.read_text() + "val_9.JPEG n01443537 0 0 1 1\n")
        return ann, "line 7"
    if case == "unreadable image":
        bad = tree / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_2.JPEG"
        bad.write_bytes(b"not a jpeg at all")
        return bad, "not a readable image"
    if case == "truncated image":
        bad = tree / "val" / "images" / "val_3.JPEG"
        bad.write_bytes(bad.read_bytes()[:200])
        return bad, "not a readable image"
    if case == "image not 64x64":
        bad = tree / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_1.JPEG"
        _jpeg(bad, (9, 9, 9), size=(32, 64))
        return bad, "expected 64x64"
    raise AssertionError(case)


CASES = ["no wnids.txt", "repeated wnid", "wnid without train folder", "train folder without images",
         "no val_annotations.txt", "unknown wnid in val_annotations.txt", "missing val image",
         "malformed annotation line", "unreadable image", "truncated image", "image not 64x64"]


@pytest.mark.parametrize("case", CASES)
def test_bad_trees_are_refused_naming_the_file(tmp_path, case):
    tree = write_tree(tmp_path)["tree"]
    file, phrase = _break(tree, case)
    split = "test" if any(w in case for w in ("val", "annotation", "truncated")) else "train"
    with pytest.raises(DataError) as err:
        load_split(CFG, split, tmp_path, seed=0)
    assert str(file) in str(err.value) and phrase in str(err.value) and "expected" in str(err.value)
    assert not list((tree / ".advpipe-cache").glob(f"{split}-*.npy"))  # nothing cached from a bad tree


def test_missing_tree_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tiny-imagenet-200")):
        load_split({"source": "tinyimagenet"}, "train", tmp_path, seed=0)
