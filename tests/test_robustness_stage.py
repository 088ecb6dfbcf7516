"""Stage robustness: curves and eps50 from synthetic attack dumps, against a reference loop written here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advpipe.io.h5 import DumpError, write_dump
from advpipe.pipeline import robustness


def reference_eps50(eps: list[float], err: list[float]) -> float:
    """SPEC 5 in a loop: thr = min(0.5, err[-1] - 0.01); the first a with err[a] < thr <= err[a+1], interpolated;
    0 when the first point already reaches thr."""
    thr = min(0.5, err[-1] - 0.01)
    if err[0] >= thr:
        return 0.0
    for a in range(len(eps) - 1):
        if err[a] < thr <= err[a + 1]:
            return eps[a] + (thr - err[a]) * (eps[a + 1] - eps[a]) / (err[a + 1] - err[a])
    return 0.0


def dump_arrays(n: int, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"index": np.arange(n) * 3, "label": rng.integers(0, 10, n), "clean_correct": rng.random(n) < 0.9,
            "success_eps": np.zeros((n, k), dtype=bool), "pred_eps": rng.integers(0, 10, (n, k))}


def run_stage(tmp_path, h5) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    stem = tmp_path / "figures" / "robustness" / "m" / "a"
    robustness.run(attack_h5=h5, out_csv=tmp_path / "a.csv", out_eps50=tmp_path / "a_eps50.csv", figure_stem=stem,
                   dpi=50, title="m: a", log=lambda _: None)
    return pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "a_eps50.csv"), stem


def test_grid_dump(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n, eps = 200, [0.01, 0.03, 0.05, 0.1, 0.2]
    arrays = dump_arrays(n, len(eps), rng)
    # success grows with eps (monotone in each row), and some clean-wrong images are marked successful too
    threshold = rng.random(n) * 0.25
    arrays["success_eps"] = threshold[:, None] <= np.asarray(eps)[None, :]
    h5 = tmp_path / "grid.h5"
    write_dump(h5, arrays, {"eps": np.asarray(eps), "space": "pixels", "config": '{"attack": {"norm": "linf"}}'})
    curve, e50, stem = run_stage(tmp_path, h5)

    cc, s = arrays["clean_correct"], arrays["success_eps"]
    ref = [sum(bool(cc[i] and not s[i, k]) for i in range(n)) / n for k in range(len(eps))]
    assert list(curve.columns) == ["eps", "robust_accuracy", "n"]
    np.testing.assert_allclose(curve["eps"], eps)
    np.testing.assert_allclose(curve["robust_accuracy"], ref, rtol=1e-9)
    assert (curve["n"] == n).all()

    clean = cc.mean()
    want = reference_eps50([0.0] + eps, [1 - clean] + [1 - r for r in ref])  # the clean point first (SPEC 5)
    assert want > eps[0]  # a crossing inside the grid, not the trivial 0
    row = e50.iloc[0]
    assert row["eps50"] == pytest.approx(want, rel=1e-9)
    assert row["threshold"] == pytest.approx(min(0.5, 1 - ref[-1] - 0.01))
    assert row["clean_accuracy"] == pytest.approx(clean)
    assert row["robust_accuracy_eps_max"] == pytest.approx(ref[-1])
    assert (row["eps_max"], row["n"], row["curve"], row["space"]) == (0.2, n, "grid", "pixels")
    assert stem.with_suffix(".pdf").stat().st_size > 0 and stem.with_suffix(".png").stat().st_size > 0


def test_grid_dump_in_any_order_with_a_clean_point(tmp_path) -> None:
    """An eps grid given out of order comes out sorted; a grid point at eps 0 is the clean point itself."""
    eps = [0.2, 0.0, 0.1]
    arrays = dump_arrays(4, 3, np.random.default_rng(1))
    arrays["clean_correct"] = np.ones(4, dtype=bool)
    arrays["success_eps"] = np.array([[True, False, False], [True, False, True], [True, False, True],
                                      [False, False, False]])
    h5 = tmp_path / "grid.h5"
    write_dump(h5, arrays, {"eps": np.asarray(eps), "space": "pixels"})
    curve, e50, _ = run_stage(tmp_path, h5)
    assert curve["eps"].tolist() == [0.0, 0.1, 0.2]
    np.testing.assert_allclose(curve["robust_accuracy"], [1.0, 0.5, 0.25])
    # thr = min(0.5, 0.75 - 0.01) = 0.5, reached exactly at 0.1
    assert e50["eps50"].iloc[0] == pytest.approx(reference_eps50([0.0, 0.1, 0.2], [0.0, 0.5, 0.75]))
    assert e50["eps50"].iloc[0] == pytest.approx(0.1)


def reference_step(distance: np.ndarray, cc: np.ndarray, budget: float) -> tuple[list[float], list[float]]:
    """The exact curve's breakpoints: 0, each distance of a clean-correct image up to the budget, the budget;
    robust at eps iff clean-correct and distance > eps."""
    points = sorted({0.0, budget, *(float(d) for d, c in zip(distance, cc) if c and d <= budget)})
    acc = [sum(bool(c and d > e) for d, c in zip(distance, cc)) / len(distance) for e in points]
    return points, acc


@pytest.mark.parametrize("eps_attr", [[0.5], [np.inf]], ids=["budget", "no_budget"])
def test_minimal_dump(tmp_path, eps_attr) -> None:
    rng = np.random.default_rng(2)
    n = 150
    arrays = dump_arrays(n, 1, rng)
    distance = rng.random(n) * 0.8
    distance[rng.random(n) < 0.1] = np.inf  # nothing found within the search budget
    distance[:3] = [0.25, 0.25, 0.0]  # ties and an image already adversarial
    arrays["distance"] = distance
    arrays["success_eps"] = (distance <= eps_attr[0])[:, None]
    h5 = tmp_path / "min.h5"
    write_dump(h5, arrays, {"eps": np.asarray(eps_attr), "space": "pixels", "config": '{"attack": {"norm": "l2"}}'})
    curve, e50, stem = run_stage(tmp_path, h5)

    cc = arrays["clean_correct"]
    # a search budget bounds the curve; C&W without one ([inf]): the largest finite distance found
    budget = eps_attr[0] if np.isfinite(eps_attr[0]) else max(d for d, c in zip(distance, cc) if c and np.isfinite(d))
    points, acc = reference_step(distance, cc, budget)
    np.testing.assert_allclose(curve["eps"], points, rtol=1e-9)
    np.testing.assert_allclose(curve["robust_accuracy"], acc, rtol=1e-9)
    assert acc[0] == pytest.approx(cc.mean() - np.mean(cc & (distance == 0)))
    row = e50.iloc[0]
    assert row["eps50"] == pytest.approx(reference_eps50(points, [1 - a for a in acc]), rel=1e-9)
    assert row["eps50"] > 0
    assert (row["eps_max"], row["curve"]) == (pytest.approx(budget), "step")
    assert row["clean_accuracy"] == pytest.approx(cc.mean())
    assert stem.with_suffix(".pdf").exists() and stem.with_suffix(".png").exists()


def test_minimal_dump_that_found_nothing(tmp_path) -> None:
    """C&W without a budget that found no adversarial: a flat curve at the clean accuracy from eps 0."""
    arrays = dump_arrays(5, 1, np.random.default_rng(3))
    arrays["distance"] = np.full(5, np.inf)
    h5 = tmp_path / "min.h5"
    write_dump(h5, arrays, {"eps": np.array([np.inf]), "space": "pixels"})
    with pytest.warns(RuntimeWarning, match="not measurable"):
        curve, e50, _ = run_stage(tmp_path, h5)
    assert curve["eps"].tolist() == [0.0]
    assert curve["robust_accuracy"].iloc[0] == pytest.approx(arrays["clean_correct"].mean())
    assert e50["eps50"].iloc[0] == 0.0


@pytest.mark.parametrize("missing", ["success_eps", "clean_correct"])
def test_refuses_a_dump_missing_a_dataset(tmp_path, missing) -> None:
    arrays = dump_arrays(6, 2, np.random.default_rng(4))
    del arrays[missing]
    h5 = tmp_path / "broken.h5"
    write_dump(h5, arrays, {"eps": np.array([0.1, 0.2]), "space": "pixels"})
    with pytest.raises(DumpError, match=rf"broken\.h5.*{missing}"):
        run_stage(tmp_path, h5)
    assert not (tmp_path / "a.csv").exists()


def test_refuses_a_dump_whose_grid_disagrees_with_its_attrs(tmp_path) -> None:
    arrays = dump_arrays(6, 2, np.random.default_rng(5))
    h5 = tmp_path / "bad.h5"
    write_dump(h5, arrays, {"eps": np.array([0.1, 0.2, 0.3]), "space": "pixels"})
    with pytest.raises(DumpError, match=r"bad\.h5.*success_eps.*K = 3"):
        run_stage(tmp_path, h5)
    write_dump(h5, arrays, {"space": "pixels"})
    with pytest.raises(DumpError, match=r"bad\.h5: missing attr 'eps'"):
        run_stage(tmp_path, h5)
    with pytest.raises(DumpError, match=r"nothing\.h5: file does not exist"):
        run_stage(tmp_path, tmp_path / "nothing.h5")
