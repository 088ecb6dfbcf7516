"""SPEC 5's data: spheres (fresh per epoch), squares / square32 (seeded, cached), subset_classes, value ranges."""
from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from advpipe.data import (DataError, DatasetInfo, dataset_info, declared_range, epoch_split, has_validation_split,
                          load_split, to_natural, to_pixels)
from advpipe.data import synthetic

SPHERES = {"source": "spheres", "train_size": 300, "validation_size": 200, "test_size": 250}
DIGITS = {"source": "digits", "test_fraction": 0.3}


# ---- spheres ------------------------------------------------------------------------------------------------

def test_sphere_norms_pixels_and_ground_truth_dx():
    s = load_split(SPHERES, "test", "unused", seed=0)
    assert s.x.shape == (250, 500) and s.x.dtype == torch.float32 and s.y.dtype == torch.int64
    assert 0 <= s.x.min() and s.x.max() <= 1
    assert np.array_equal(s.index, np.arange(250)) and s.classes == ["r1.0", "r1.3"]
    assert 0 < s.y.sum() < 250  # both classes drawn
    x = to_natural(s.x.double(), (-1, 1))
    norms = x.norm(dim=1)
    radius = torch.where(s.y == 0, 1.0, 1.3).double()
    torch.testing.assert_close(norms, radius, atol=2e-6, rtol=0)
    dx = s.extras["dx"].double()
    assert dx.shape == (250, 500) and s.extras["dx"].dtype == torch.float32
    torch.testing.assert_close(dx.norm(dim=1), torch.full((250,), 0.3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close((x + dx).norm(dim=1), torch.where(s.y == 0, 1.3, 1.0).double(), atol=2e-6, rtol=0)
    expected = (1 - 2 * s.y.double())[:, None] * 0.3 * x / norms[:, None]  # +x outward for r 1.0, -x for r 1.3
    torch.testing.assert_close(dx, expected, atol=1e-6, rtol=0)


def test_sphere_epochs_fresh_and_reproducible():
    e1, e2 = (epoch_split(SPHERES, e, "unused", seed=0) for e in (1, 2))
    assert torch.equal(e1.x, load_split(SPHERES, "train", "unused", seed=0).x)  # "train" is epoch 1
    assert not torch.equal(e1.x, e2.x)
    again = epoch_split(SPHERES, 2, "unused", seed=0)
    assert torch.equal(again.x, e2.x) and torch.equal(again.y, e2.y) and torch.equal(again.extras["dx"],
                                                                                      e2.extras["dx"])
    assert not torch.equal(epoch_split(SPHERES, 2, "unused", seed=1).x, e2.x)
    assert np.array_equal(e1.index, np.arange(300)) and np.array_equal(e2.index, 300 + np.arange(300))
    with pytest.raises(ValueError, match="epoch"):
        epoch_split(SPHERES, 0, "unused", seed=0)


def test_sphere_validation_and_test_fixed_and_distinct_from_training():
    val, test = (load_split(SPHERES, s, "unused", seed=0) for s in ("validation", "test"))
    assert len(val) == 200 and has_validation_split(SPHERES)
    assert torch.equal(val.x, load_split(SPHERES, "validation", "unused", seed=0).x)
    rows = {tuple(r) for r in val.x[:, :3].tolist()}
    for other in (test, epoch_split(SPHERES, 1, "unused", 0), epoch_split(SPHERES, 5, "unused", 0)):
        assert not rows & {tuple(r) for r in other.x[:, :3].tolist()}


def test_sphere_info_is_analytic_and_range_is_refused_when_exceeded():
    info = dataset_info(SPHERES, "unused", seed=0)
    assert (info.in_channels, info.image_size, info.shape, info.range) == (1, 500, (500,), (-1.0, 1.0))
    assert info.classes == ["r1.0", "r1.3"] and info.num_classes == 2
    x = torch.cat([epoch_split({**SPHERES, "train_size": 4000}, 1, "unused", 0).x.double()])
    assert info.mean == pytest.approx((0.5,)) and info.std[0] == pytest.approx(x.std().item(), rel=0.02)
    with pytest.raises(DataError, match=r"outside the declared range \[-1, 1\]"):
        load_split({**SPHERES, "dim": 1}, "test", "unused", 0)  # |x| = 1.3 in one dimension
    assert epoch_split(DIGITS, 1, "unused", 0) is None and epoch_split({"source": "square32"}, 1, "unused", 0) is None


# ---- squares ------------------------------------------------------------------------------------------------

def _reference_squares(n, side, sigma, std, clip, seed):
    """SPEC 5 / synth_dataset.py as written there: one sample at a time from the global-style legacy stream."""
    rs = np.random.RandomState(seed)
    r = np.around(rs.choice([0.5, 0.8], n), decimals=2)
    out = np.zeros((n, side, side))
    for i in range(n):
        half = int(side / 2)
        b = int((half * 0.8) * r[i])
        out[i] -= 0.5
        out[i, half - b:half + b, half - b:half + b] = 0.5
        noise = gaussian_filter(rs.normal(scale=1, size=(side, side)), sigma, mode="nearest", truncate=4.0)
        noise = noise / np.std(noise) * std
        out[i] += noise if clip is None else np.clip(noise, -clip, clip)
    return out.astype(np.float32), (r < 0.7).astype(np.int64)


def test_square_half_sides_follow_the_original_arithmetic():
    # int(int(S/2) * 0.8 * r): 224 -> 44 (r 0.5) and 71 (r 0.8); SPEC 5's "89 px" is r = 1 (int(0.4 * 224)).
    for side, r, half_side in ((224, 0.5, 44), (224, 0.8, 71), (32, 0.5, 6), (32, 0.8, 10)):
        t = synthetic.square_template(r, side)
        assert set(np.unique(t)) == {-0.5, 0.5}
        assert (t == 0.5).sum() == (2 * half_side) ** 2 and t[side // 2 - half_side, side // 2 - half_side] == 0.5
        assert t[side // 2 - half_side - 1, side // 2] == -0.5


@pytest.mark.parametrize("source, split, side, sigma, std, clip, seed",
                         [("square32", "validation", 32, 1.0, 0.25, 0.5, 8), ("squares", "train", 224, 2.5, 0.5, None, 7),
                          ("squares", "test", 224, 2.5, 0.5, None, 9)])
def test_squares_reproduce_the_seeded_reference(tmp_path, source, split, side, sigma, std, clip, seed):
    cfg = {"source": source, f"{split}_size": 6, "range": [-10, 10]}  # a wide range: nothing clipped
    s = load_split(cfg, split, tmp_path, seed=123)  # the config seed plays no part
    ref_x, ref_y = _reference_squares(6, side, sigma, std, clip, seed)
    assert s.x.shape == (6, 1, side, side) and s.classes == ["large", "small"]
    assert torch.equal(s.y, torch.from_numpy(ref_y)) and np.array_equal(s.index, np.arange(6))
    np.testing.assert_allclose(to_natural(s.x[:, 0].double(), (-10, 10)).numpy(), ref_x, atol=2e-6)
    assert torch.equal(s.extras["dx"], _template_dx(s.y, side))


def _template_dx(y, side):
    t = torch.from_numpy(np.stack([synthetic.square_template(r, side) for r in (0.8, 0.5)])).float()
    return (t[1 - y] - t[y]).unsqueeze(1)


def test_square_labels_noise_std_and_dx():
    cfg = {"source": "squares", "validation_size": 8}
    features, r = synthetic.square_arrays({**cfg, "cache": False}, "validation", "unused")
    y = torch.from_numpy((r < 0.7).astype(np.int64))
    templates = np.stack([synthetic.square_template(v, 224) for v in (0.8, 0.5)])
    assert set(r.tolist()) == {np.float32(0.5), np.float32(0.8)} and y.tolist() == (r == np.float32(0.5)).tolist()
    noise = features - templates[y.numpy()]
    np.testing.assert_allclose(noise.std(axis=(1, 2)), 0.5, atol=1e-5)  # smoothed, then rescaled to std 0.5
    assert np.abs(noise).max() > 1  # unclipped in the generated data ...
    s = load_split({**cfg, "cache": False}, "validation", "unused", 0)
    nat = to_natural(s.x.double(), (-1, 1))
    assert nat.min() == -1 and nat.max() == 1  # ... clipped to the declared range [-1, 1] when loaded
    np.testing.assert_allclose(nat[:, 0].numpy(), np.clip(features, -1, 1), atol=1e-6)
    dx = s.extras["dx"]
    assert torch.equal(dx, _template_dx(s.y, 224)) and set(dx.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert int((dx[0] != 0).sum()) == 142 ** 2 - 88 ** 2  # the ring between the two squares
    assert torch.all((dx.sum((1, 2, 3)) > 0) == (s.y == 1))  # large -> small darkens the ring: dx = -1 there
    s32 = synthetic.square_arrays({"source": "square32", "validation_size": 8, "cache": False}, "validation", "x")
    n32 = s32[0] - np.stack([synthetic.square_template(v, 32) for v in (0.8, 0.5)])[(s32[1] < 0.7).astype(int)]
    assert np.abs(n32).max() <= 0.5 + 1e-6 and np.all(n32.std(axis=(1, 2)) < 0.25)  # std 0.25, then clipped


def test_square_cache_reused_and_corrupt_cache_regenerated(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate_squares
    monkeypatch.setattr(synthetic, "generate_squares", lambda *a: calls.append(a) or real(*a))
    cfg = {"source": "square32", "test_size": 20}
    first = load_split(cfg, "test", tmp_path, seed=0)
    (file,) = (tmp_path / ".advpipe-cache").glob("square32-test-*.h5")
    second = load_split(cfg, "test", tmp_path, seed=0)
    assert len(calls) == 1 and torch.equal(first.x, second.x)
    with h5py.File(file, "r") as f:
        assert f["features"].shape == (20, 32, 32) and f["regression_target"].dtype == np.float32
    raw = bytearray(file.read_bytes())
    raw[-3000:-2000] = bytes(1000)  # zero a stretch of the stored data
    file.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="unusable square32 cache"):
        third = load_split(cfg, "test", tmp_path, seed=0)
    assert len(calls) == 2 and torch.equal(third.x, first.x)
    file.write_bytes(b"not hdf5")
    with pytest.warns(UserWarning, match="generating the test split again"):
        load_split(cfg, "test", tmp_path, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_split(cfg, "test", tmp_path, seed=0)  # rewritten: read back silently
    assert len(calls) == 3
    load_split({**cfg, "test_size": 21}, "test", tmp_path, seed=0)  # other parameters: another file
    assert len(list((tmp_path / ".advpipe-cache").glob("square32-test-*.h5"))) == 2


def test_square_info_from_validation_split(tmp_path):
    cfg = {"source": "square32", "validation_size": 30, "image_size": 16}
    info = dataset_info(cfg, tmp_path, seed=0)
    val = load_split(cfg, "validation", tmp_path, seed=0)
    assert (info.in_channels, info.image_size, info.shape, info.range) == (1, 16, (1, 16, 16), (-1.0, 1.0))
    assert info.classes == ["large", "small"]
    assert info.mean == pytest.approx((val.x.double().mean().item(),))
    assert not list(tmp_path.glob(".advpipe-cache/square32-train-*"))  # the training data is not generated


# ---- any source: validation split, subset_classes, ranges, keys ---------------------------------------------

def test_validation_split_only_where_the_source_has_one():
    assert not has_validation_split(DIGITS)
    with pytest.raises(DataError, match="'digits' has no validation split"):
        load_split(DIGITS, "validation", "unused", 0)


def test_subset_classes_on_digits_relabels_and_keeps_index():
    cfg = {**DIGITS, "subset_classes": [3, 5]}
    for split in ("train", "test"):
        full, sub = load_split(DIGITS, split, "unused", 0), load_split(cfg, split, "unused", 0)
        keep = (full.y == 3) | (full.y == 5)
        assert np.array_equal(sub.index, full.index[keep.numpy()]) and torch.equal(sub.x, full.x[keep])
        assert torch.equal(sub.y, (full.y[keep] == 5).long()) and sub.classes == ["3", "5"]
    swapped = load_split({**DIGITS, "subset_classes": ["5", "3"]}, "test", "unused", 0)
    assert torch.equal(swapped.y, 1 - sub.y) and swapped.classes == ["5", "3"]
    info = dataset_info(cfg, "unused", 0)
    assert info.classes == ["3", "5"] and info.num_classes == 2
    with pytest.raises(DataError, match="`subset_classes`: 10 is not a class"):
        load_split({**DIGITS, "subset_classes": [3, 10]}, "test", "unused", 0)
    with pytest.raises(DataError, match="twice"):
        load_split({**DIGITS, "subset_classes": [3, "3"]}, "test", "unused", 0)


def test_ranges_round_trip_and_defaults():
    x = torch.rand(5, 3, dtype=torch.float64)
    for r in ((-1.0, 1.0), (0.0, 1.0), (-3.0, 3.0), (0.0, 255.0)):
        torch.testing.assert_close(to_pixels(to_natural(x, r), r), x)
    torch.testing.assert_close(to_natural(torch.tensor([0.0, 0.5, 1.0]), (-1, 1)), torch.tensor([-1.0, 0.0, 1.0]))
    assert declared_range(DIGITS) == (0.0, 1.0) and declared_range({"source": "squares"}) == (-1.0, 1.0)
    assert dataset_info({**DIGITS, "range": [-1, 1]}, "unused", 0).range == (-1.0, 1.0)  # MNIST-3/5's [-1, 1]
    assert dataset_info(DIGITS, "unused", 0).shape == (1, 8, 8)
    with pytest.raises(DataError, match="`range`"):
        declared_range({"source": "digits", "range": [1, 0]})
    assert DatasetInfo(3, 32, 10, ["a"] * 10, (0.5,) * 3, (0.5,) * 3).shape == (3, 32, 32)  # positional still fine


def test_keys_of_other_sources_are_refused():
    with pytest.raises(DataError, match="`dim` applies to spheres only"):
        load_split({**DIGITS, "dim": 3}, "test", "unused", 0)
    with pytest.raises(DataError, match="`radii`"):
        load_split({**SPHERES, "radii": [1.0, 1.0]}, "test", "unused", 0)
