"""Robustness curves and eps50 (SPEC 5, ricbl/gradient-direction-of-robust-models metrics.py)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from advpipe.metrics import (curve_from_distances, curve_from_success, eps50, eps50_from_curve,
                             step_curve_from_distances)
from advpipe.plots.curves import plot_robustness_curves


# ---------------------------------------------------------------- eps50


def original_eps50(eps, err) -> float:
    """Transcription of the original's loop (Metrics.calculate_average): last upward crossing, 0 if none."""
    threshold = min(0.5, err[-1] - 0.01)
    previous_score, previous_eps, result = 0, None, 0
    for e, s in zip(eps, err):
        if s >= threshold and previous_score < threshold and previous_eps is not None:
            result = (threshold - previous_score) * (e - previous_eps) / (s - previous_score) + previous_eps
        previous_score, previous_eps = s, e
    return result


def first_reach_eps50(eps, err) -> float:
    """SPEC 5 read literally, with the first grid point counted: 0 if err[0] >= thr, else the first pair."""
    thr = min(0.5, err[-1] - 0.01)
    if err[0] >= thr:
        return 0.0
    for k in range(1, len(err)):
        if err[k - 1] < thr <= err[k]:
            return eps[k - 1] + (thr - err[k - 1]) * (eps[k] - eps[k - 1]) / (err[k] - err[k - 1])
    return 0.0


def test_eps50_spec_examples() -> None:
    # SPEC 5 (b): grid (0, 0.1, 0.2), errors (0, 0.2, 0.8): thr 0.5, eps50 = 0.1 + (0.3 / 0.6) * 0.1
    assert eps50([0, 0.1, 0.2], [0, 0.2, 0.8]) == pytest.approx(0.15, abs=1e-15)
    # largest (last) error 0.3: thr = 0.29, eps50 = 0.1 + (0.09 / 0.1) * 0.1
    assert eps50([0, 0.1, 0.2], [0, 0.2, 0.3]) == pytest.approx(0.19, abs=1e-15)


def test_eps50_threshold_uses_the_last_grid_point_not_the_largest_error() -> None:
    # err(eps_max) = 0.4 -> thr 0.39 (the max 0.9 would give 0.5): crossing in the first pair
    assert eps50([0, 1, 2, 3], [0, 0.78, 0.9, 0.4]) == pytest.approx(0.5)


def test_eps50_crossing_at_a_grid_point_returns_that_eps_exactly() -> None:
    grid = [0.0, 0.002, 0.006, 0.02, 0.04]
    assert eps50(grid, [0.0, 0.1, 0.5, 0.7, 0.9]) == 0.006
    assert eps50(grid, [0.0, 0.1, 0.2, 0.3 - 0.01, 0.3]) == 0.02  # thr = 0.3 - 0.01 met exactly


def test_eps50_interpolates_linearly_between_the_bracketing_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 12))
        eps = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 1.0, k - 1))])
        err = np.sort(rng.uniform(0, 1, k))
        err[0] = min(err[0], 0.2)
        err[-1] = max(err[-1], 0.35)
        thr = min(0.5, err[-1] - 0.01)
        got = eps50(eps, err)
        b = int(np.argmax(err >= thr))  # first grid point at or above thr; err is non-decreasing
        assert eps[b - 1] <= got <= eps[b]
        # the point lies on the chord between the bracketing points: the curve's linear interpolant there is thr
        assert np.interp(got, eps, err) == pytest.approx(thr, abs=1e-12)
        assert got == pytest.approx(original_eps50(eps, err), rel=1e-12, abs=0)


def test_eps50_edge_cases() -> None:
    # already reached at the first grid point (clean error 0.6 >= 0.5): 0, the original gives the same
    assert eps50([0, 0.1, 0.2], [0.6, 0.7, 0.9]) == 0.0 == original_eps50([0, 0.1, 0.2], [0.6, 0.7, 0.9])
    # non-monotone, two upward crossings: first by default, the original's last with match_original
    eps, err = [0, 1, 2, 3, 4], [0.0, 0.6, 0.2, 0.8, 0.9]
    assert eps50(eps, err) == pytest.approx(0.5 / 0.6)
    assert eps50(eps, err, match_original=True) == pytest.approx(2 + 0.3 / 0.6) == original_eps50(eps, err)
    # starts above thr, dips, crosses again: "first reaches" -> 0; the original takes the later crossing
    eps, err = [0, 1, 2], [0.6, 0.3, 0.8]
    assert eps50(eps, err) == 0.0
    assert eps50(eps, err, match_original=True) == pytest.approx(1 + 0.2 / 0.5)
    # one grid point: thr = err - 0.01 < err, reached at once
    assert eps50([0.0], [0.4]) == 0.0
    # non-monotone but a single crossing: both agree
    assert eps50([0, 1, 2, 3], [0.1, 0.05, 0.7, 0.6]) == pytest.approx(1 + 0.45 / 0.65)


def test_eps50_no_crossing_gives_0() -> None:
    # SPEC 5 step 4: no consecutive pair (a, b) with err_a < thr <= err_b -> 0, as the original's loop leaves it
    above = ([0, 0.1, 0.2], [0.55, 0.7, 0.9])  # at or above thr = 0.5 from the clean point on
    assert eps50(*above) == 0.0 == original_eps50(*above)
    with pytest.warns(RuntimeWarning, match="not measurable"):  # never fooled: thr = -0.01
        assert eps50([0, 0.1, 0.2], [0.0, 0.0, 0.0]) == 0.0 == original_eps50([0, 0.1, 0.2], [0.0, 0.0, 0.0])


def test_eps50_unmeasurable_threshold_warns() -> None:
    with pytest.warns(RuntimeWarning, match="not measurable"):
        assert eps50([0, 1, 2], [0.0, 0.0, 0.005]) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eps50([0, 1, 2], [0.0, 0.0, 0.02])


@pytest.mark.parametrize("eps, err, match", [
    ([0, 0.1], [0, 0.2, 0.3], "grid points"),
    ([0, 0.2, 0.1], [0, 0.2, 0.3], "strictly increasing"),
    ([0, 0.1, 0.1], [0, 0.2, 0.3], "strictly increasing"),
    ([0, 0.1, 0.2], [0, 0.2, 1.3], r"\[0, 1\]"),
    ([0, 0.1, 0.2], [0, np.nan, 0.3], "finite"),
    ([-0.1, 0.1, 0.2], [0, 0.2, 0.3], ">= 0"),
    ([], [], "non-empty"),
])
def test_eps50_refuses_bad_input(eps, err, match) -> None:
    with pytest.raises(ValueError, match=match):
        eps50(eps, err)


def test_eps50_matches_both_references_on_random_curves() -> None:
    rng = np.random.default_rng(1)
    for _ in range(500):
        k = int(rng.integers(1, 10))
        eps = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 1.0, k - 1))])
        err = rng.choice(np.linspace(0, 1, 21), size=k)  # ties with thr and non-monotone curves included
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert eps50(eps, err) == pytest.approx(first_reach_eps50(eps, err), rel=1e-12, abs=1e-15)
            assert eps50(eps, err, match_original=True) == pytest.approx(original_eps50(eps, err), rel=1e-12,
                                                                          abs=1e-15)


def test_eps50_from_curve_adds_the_clean_point() -> None:
    curve = pd.DataFrame({"eps": [0.2, 0.1], "robust_accuracy": [0.2, 0.8], "n": [10, 10]})
    assert eps50_from_curve(curve, clean_accuracy=1.0) == pytest.approx(0.15)
    with_clean = pd.DataFrame({"eps": [0.0, 0.1, 0.2], "robust_accuracy": [1.0, 0.8, 0.2]})
    assert eps50_from_curve(with_clean) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="already has a point at eps = 0"):
        eps50_from_curve(with_clean, clean_accuracy=1.0)


# ---------------------------------------------------------------- curves from fixed-budget success (K, N)


def reference_success_curve(eps, success, clean_correct):
    out = []
    for k in range(len(eps)):
        robust = 0
        for i in range(success.shape[1]):
            if (clean_correct is None or clean_correct[i]) and not success[k, i]:
                robust += 1
        out.append(robust / success.shape[1])
    return out


def test_curve_from_success_known_values() -> None:
    success = np.array([[False, False, False], [True, False, False]])
    curve = curve_from_success([0.0, 0.1], success, clean_correct=[True, True, False])
    assert list(curve.columns) == ["eps", "robust_accuracy", "n"]
    np.testing.assert_allclose(curve["robust_accuracy"], [2 / 3, 1 / 3])
    assert curve["n"].tolist() == [3, 3] and curve["eps"].tolist() == [0.0, 0.1]
    # without clean_correct all count as initially correct
    np.testing.assert_allclose(curve_from_success([0.0, 0.1], success)["robust_accuracy"], [1.0, 2 / 3])


def test_curve_from_success_matches_a_loop_and_takes_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    eps = np.array([0.002, 0.006, 0.02, 0.04, 0.1])
    success = rng.random((5, 37)) < np.linspace(0.1, 0.9, 5)[:, None]
    cc = rng.random(37) < 0.8
    for clean in (cc, None):
        want = reference_success_curve(eps, success, clean)
        np.testing.assert_allclose(curve_from_success(eps, success, clean)["robust_accuracy"], want)
        got = curve_from_success(torch.tensor(eps), torch.tensor(success),
                                 None if clean is None else torch.tensor(clean))
        np.testing.assert_allclose(got["robust_accuracy"], want)
    # 0/1 integers are accepted as booleans
    np.testing.assert_allclose(curve_from_success(eps, success.astype(np.int64), cc)["robust_accuracy"],
                               reference_success_curve(eps, success, cc))


@pytest.mark.parametrize("eps, success, cc, match", [
    ([0.1], np.zeros((2, 3), bool), None, "expected shape"),
    ([0.1], np.zeros((1, 0), bool), None, "expected shape"),
    ([0.1], np.zeros(3, bool), None, "2-D"),
    ([0.1], np.full((1, 3), 0.5), None, "booleans"),
    ([0.1], np.zeros((1, 3), bool), [True, False], "2 entries for 3 samples"),
    ([-0.1], np.zeros((1, 3), bool), None, ">= 0"),
])
def test_curve_from_success_refuses_bad_input(eps, success, cc, match) -> None:
    with pytest.raises(ValueError, match=match):
        curve_from_success(eps, success, cc)


# ---------------------------------------------------------------- curves from minimal distances (N,)


def reference_distance_curve(distance, eps, clean_correct):
    out = []
    for e in eps:
        robust = 0
        for i, d in enumerate(distance):
            if (clean_correct is None or clean_correct[i]) and d > e:
                robust += 1
        out.append(robust / len(distance))
    return out


def test_curve_from_distances_known_values_and_boundary() -> None:
    d = [0.0, 0.1, 0.2, math.inf]
    curve = curve_from_distances(d, [0.0, 0.1, 0.15, 0.2], budget=0.2)
    # d == eps is a success (foolbox: clip_perturbation keeps a perturbation of size eps), so not robust
    np.testing.assert_allclose(curve["robust_accuracy"], [0.75, 0.5, 0.5, 0.25])
    assert curve["n"].tolist() == [4] * 4
    curve = curve_from_distances(d, [0.0, 0.1], budget=0.2, clean_correct=[True, True, True, False])
    np.testing.assert_allclose(curve["robust_accuracy"], [0.5, 0.25])


def test_curve_from_distances_refuses_eps_above_the_budget() -> None:
    with pytest.raises(ValueError, match="budget 0.2"):
        curve_from_distances([0.1, math.inf], [0.1, 0.25], budget=0.2)
    curve_from_distances([0.1, math.inf], [0.1, 0.2], budget=0.2)  # eps == budget is fine
    for bad in (math.inf, -1.0, math.nan, True, "1"):
        with pytest.raises(ValueError, match="budget"):
            curve_from_distances([0.1], [0.1], budget=bad)
    for d in ([math.nan], [-0.1]):
        with pytest.raises(ValueError, match="distance"):
            curve_from_distances(d, [0.1], budget=1.0)


def test_curve_from_distances_matches_a_loop_and_invariants() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    budget = 2.0
    d = rng.exponential(0.7, 300)
    d[d > budget] = np.inf  # not found within the budget
    d[:40] = 0.0  # misclassified without attack
    d[40:45] = np.round(d[40:45], 1)  # some exactly on grid points
    cc = d > 0
    eps = np.round(np.linspace(0, budget, 21), 10)
    for clean in (cc, None):
        curve = curve_from_distances(d, eps, budget, clean)
        np.testing.assert_allclose(curve["robust_accuracy"], reference_distance_curve(d, eps, clean))
        assert (np.diff(curve["robust_accuracy"]) <= 0).all()  # non-increasing in eps
        # at eps = 0: the clean accuracy, since every clean-correct sample has d > 0
        assert curve["robust_accuracy"].iloc[0] == pytest.approx(cc.mean())
    got = curve_from_distances(torch.tensor(d, dtype=torch.float64), torch.tensor(eps), budget, torch.tensor(cc))
    np.testing.assert_allclose(got["robust_accuracy"], reference_distance_curve(d, eps, cc))
    # a finite distance above the budget behaves like inf on every allowed eps
    d2 = np.where(np.isinf(d), budget + 1.0, d)
    pd.testing.assert_frame_equal(curve_from_distances(d2, eps, budget, cc), curve_from_distances(d, eps, budget, cc))


def test_step_curve_is_the_exact_step_function() -> None:
    rng = np.random.default_rng(4)
    budget = 1.5
    d = np.concatenate([np.zeros(5), rng.uniform(0, 2, 50), [0.3, 0.3, budget, np.inf]])
    cc = rng.random(len(d)) < 0.9
    step = step_curve_from_distances(d, budget, cc)
    eps, acc = step["eps"].to_numpy(), step["robust_accuracy"].to_numpy()
    assert eps[0] == 0.0 and eps[-1] == budget and (np.diff(eps) > 0).all()
    inside = np.unique(d[cc & (d > 0) & (d <= budget)])
    np.testing.assert_array_equal(eps[1:len(inside) + 1], inside)
    np.testing.assert_allclose(acc, reference_distance_curve(d, eps, cc))
    # constant between rows: the value at each row holds up to (not including) the next one
    mid = (eps[:-1] + eps[1:]) / 2
    np.testing.assert_allclose(curve_from_distances(d, mid, budget, cc)["robust_accuracy"], acc[:-1])
    assert step_curve_from_distances([0.2], 0.0)["eps"].tolist() == [0.0]


def test_foolbox_clip_keeps_a_perturbation_of_size_exactly_eps() -> None:
    """The convention curve_from_distances follows: foolbox 3 MinimizationAttack.__call__ judges success on
    distance.clip_perturbation(x, xp, eps), which leaves xp whole when |xp - x| <= eps."""
    fb = pytest.importorskip("foolbox")
    x = np.zeros((1, 2), dtype=np.float64)
    xp = np.array([[3.0, 4.0]])  # L2 norm 5
    np.testing.assert_array_equal(fb.distances.l2.clip_perturbation(x, xp, 5.0), xp)
    assert not np.array_equal(fb.distances.l2.clip_perturbation(x, xp, 4.9), xp)


# ---------------------------------------------------------------- figure


def _valid(path) -> bool:
    head = path.read_bytes()[:8]
    return head.startswith(b"%PDF-") if path.suffix == ".pdf" else head == b"\x89PNG\r\n\x1a\n"


def test_plot_robustness_curves_writes_pdf_and_png(tmp_path) -> None:
    eps = np.array([0.0, 0.002, 0.006, 0.02, 0.04])
    a = pd.DataFrame({"eps": eps, "robust_accuracy": [1.0, 0.9, 0.6, 0.3, 0.1], "n": 10})
    b = (eps, np.array([1.0, 0.95, 0.8, 0.55, 0.2]))
    e50 = {"baseline": eps50_from_curve(a), "PGD": eps50(eps, 1 - b[1])}
    paths = plot_robustness_curves({"baseline": a, "PGD": b}, tmp_path / "fig" / "robust", eps50=e50,
                                   title="Spheres, PGD-Linf")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 0 and _valid(p)
    assert not list(tmp_path.rglob("*.tmp"))
    # one curve, a plain eps50 value, step drawing
    step = step_curve_from_distances([0.1, 0.3, 0.3, np.inf], 0.5)
    paths = plot_robustness_curves(step, tmp_path / "single", eps50=0.3, steps=True, xlabel="L2 eps")
    assert all(p.stat().st_size > 0 and _valid(p) for p in paths)


def test_plot_robustness_curves_refuses_unknown_eps50_labels(tmp_path) -> None:
    curve = ([0.0, 0.1], [1.0, 0.2])
    with pytest.raises(ValueError, match="name no curve"):
        plot_robustness_curves({"a": curve}, tmp_path / "x", eps50={"b": 0.1})
    with pytest.raises(ValueError, match="several curves"):
        plot_robustness_curves({"a": curve, "b": curve}, tmp_path / "x", eps50=0.1)
    assert not list(tmp_path.iterdir())
