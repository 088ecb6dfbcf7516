"""Robustness curves (robust accuracy vs eps) and the median robustness eps50 of SPEC 5.

Curves come from the two kinds of attack outcome store: fixed-budget attacks over an eps grid (success (K, N),
foolbox's layout) and minimal-perturbation attacks (the smallest adversarial distance per sample, inf where the
search found none within its budget). numpy only; torch tensors are accepted and copied to numpy, and pandas is
imported when a table is built, so `advpipe.metrics` stays light for the scoring jobs.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CURVE_COLUMNS = ("eps", "robust_accuracy", "n")


def _numpy(a: Any) -> np.ndarray:
    """a as a numpy array; a torch tensor is detached and copied to the CPU (torch itself is never imported)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _floats(name: str, a: Any, *, allow_inf: bool = False, nonneg: bool = True) -> np.ndarray:
    v = _numpy(a)
    if v.dtype == np.bool_ or not (np.issubdtype(v.dtype, np.number)):
        raise ValueError(f"{name}: expected real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {v.shape}")
    if np.isnan(v).any() or (not allow_inf and not np.isfinite(v).all()):
        raise ValueError(f"{name}: must be {'free of nan' if allow_inf else 'finite'}")
    if nonneg and (v < 0).any():
        raise ValueError(f"{name}: must be >= 0, got min {v.min()!r}")
    return v


def _bools(name: str, a: Any, ndim: int) -> np.ndarray:
    """a bool array of ndim dimensions; integer 0/1 arrays are accepted, anything else refused."""
    v = _numpy(a)
    if v.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {v.shape}")
    if v.dtype != np.bool_:
        if not np.issubdtype(v.dtype, np.integer) or not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name}: expected booleans (or 0/1 integers), got dtype {v.dtype}")
        v = v.astype(bool)
    return v


def _clean_correct(clean_correct: Any, n: int) -> np.ndarray:
    if clean_correct is None:
        return np.ones(n, dtype=bool)
    cc = _bools("clean_correct", clean_correct, 1)
    if len(cc) != n:
        raise ValueError(f"clean_correct: {len(cc)} entries for {n} samples")
    return cc


def _table(eps: np.ndarray, robust: np.ndarray, n: int) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"eps": eps.astype(np.float64), "robust_accuracy": robust.astype(np.float64) / n,
                         "n": np.full(len(eps), n, dtype=np.int64)}, columns=list(CURVE_COLUMNS))


def curve_from_success(eps: Any, success: Any, clean_correct: Any = None) -> pd.DataFrame:
    """Robust accuracy on an eps grid from a fixed-budget attack: eps (K,), success (K, N) bool (foolbox's layout).

    robust_accuracy[k] = #(clean_correct & ~success[k]) / N: a sample misclassified without attack counts as not
    robust whatever the attack did; clean_correct None counts all N as initially correct (then success must already
    be True for the initially wrong ones, as foolbox's Misclassification criterion makes it). Columns eps,
    robust_accuracy, n (= N), one row per grid point in the given order.
    """
    e = _floats("eps", eps)
    s = _bools("success", success, 2)
    if s.shape[0] != len(e) or s.shape[1] == 0:
        raise ValueError(f"success: expected shape (K={len(e)}, N>0), got {s.shape}")
    n = s.shape[1]
    cc = _clean_correct(clean_correct, n)
    robust = np.count_nonzero(~s & cc[None, :], axis=1)
    return _table(e, robust, n)


def _budget(budget: Any) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise ValueError(f"budget: expected a number, got {budget!r}")
    b = float(budget)
    if not np.isfinite(b) or b < 0:
        raise ValueError(f"budget: expected a finite number >= 0, got {budget!r}")
    return b


def curve_from_distances(distance: Any, eps: Any, budget: float, clean_correct: Any = None) -> pd.DataFrame:
    """Robust accuracy on an eps grid from a minimal-perturbation attack: distance (N,) = smallest adversarial
    distance found per sample (inf where none was found within the search budget), eps (K,) <= budget.

    A sample is robust at eps iff clean_correct and distance > eps (strict): foolbox 3's MinimizationAttack.__call__
    clips the found perturbation to each epsilon (LpDistance.clip_perturbation scales by min(1, eps/|d|)), so a
    perturbation of size exactly eps is kept whole and counts as a success; i.e. success iff distance <= eps. It is
    also advpipe.metrics.ara's A(eps) = frac(d > eps). An eps above the budget is refused: the search says nothing
    there. A finite distance above the budget is treated like inf (no eps <= budget can reach it). Distances are
    compared in float64. Columns eps, robust_accuracy, n (= N), one row per grid point in the given order.
    """
    d = _floats("distance", distance, allow_inf=True)
    e = _floats("eps", eps)
    b = _budget(budget)
    over = e[e > b]
    if len(over):
        raise ValueError(f"eps {over.tolist()} above the search budget {b!r}: a minimal-perturbation search with "
                         f"budget {b!r} says nothing about robustness there")
    n = len(d)
    cc = _clean_correct(clean_correct, n)
    dc = np.sort(d[cc])
    # #(clean-correct with d > eps) = #clean-correct - #(d <= eps); searchsorted(side="right") counts d <= eps
    robust = len(dc) - np.searchsorted(dc, e, side="right")
    return _table(e, robust, n)


def step_curve_from_distances(distance: Any, budget: float, clean_correct: Any = None) -> pd.DataFrame:
    """The exact step function of curve_from_distances on [0, budget], for plotting with step(where="post").

    Rows at eps = 0, every distinct distance of a clean-correct sample in (0, budget], and the budget itself,
    increasing; robust_accuracy there is the value from that eps (inclusive) up to the next row (A is
    right-continuous: it drops at each distance, since d > eps is strict).
    """
    d = _floats("distance", distance, allow_inf=True)
    b = _budget(budget)
    cc = _clean_correct(clean_correct, len(d))
    dc = d[cc]
    eps = np.unique(np.concatenate([[0.0], dc[dc <= b], [b]]))
    return curve_from_distances(d, eps, b, cc)


def eps50(eps: Any, err: Any, *, match_original: bool = False) -> float:
    """eps50 of SPEC 5: the linearly interpolated eps at which the error rate first reaches
    thr = min(0.5, err(eps_max) - 0.01); eps (K,) strictly increasing (the clean point at eps = 0 first, as in the
    original), err (K,) error rates in [0, 1] in grid order; err(eps_max) = err[-1], the last grid point (not the
    largest error), as the original takes the last registered score.

    Follows ricbl/gradient-direction-of-robust-models src/direct_method/metrics.py (Metrics.calculate_average):
    a crossing is a consecutive pair a, b with err[a] < thr <= err[b], and eps50 =
    (thr - err[a]) * (eps[b] - eps[a]) / (err[b] - err[a]) + eps[a], the original's formula and order of operations.

    Edge cases:
    - err[0] >= thr (already reached at the first grid point): 0.0. With the clean point at eps = 0 first this is
      exact; without it the crossing lies somewhere in [0, eps[0]] and 0.0 is what the original returns (its first
      point has no predecessor, so it is never the b of a pair).
    - non-monotone curves: the FIRST crossing ("first reaches", SPEC 5), so a curve that has reached thr at
      err[0] stays at 0.0 even if it dips below and crosses again. The original loop keeps overwriting and
      returns the LAST crossing and does not special-case err[0]; match_original=True reproduces it exactly (it
      differs only on curves that cross thr upwards more than once, or start >= thr and cross again later).
    - never reached: impossible on valid input, since thr <= err[-1] - 0.01 < err[-1]; 0.0 like the original.
    - thr <= 0 (err(eps_max) <= 0.01: the attack essentially never succeeds): every err >= thr, so 0.0, as the
      original; a RuntimeWarning says the value means "not measurable", not "not robust".
    - err[b] == thr exactly: eps[b] exactly (the formula could be off by one ulp).
    """
    e = _floats("eps", eps)
    r = _floats("err", err, nonneg=False)
    if len(e) != len(r):
        raise ValueError(f"eps and err: {len(e)} grid points but {len(r)} error rates")
    if (np.diff(e) <= 0).any():
        raise ValueError(f"eps: must be strictly increasing (grid order), got {e.tolist()}")
    if (r < 0).any() or (r > 1).any():
        raise ValueError(f"err: error rates must lie in [0, 1], got {r.tolist()}")
    thr = min(0.5, float(r[-1]) - 0.01)
    if thr <= 0:
        warnings.warn(f"eps50: the error at eps_max is {r[-1]:.4g} <= 0.01, so the threshold {thr:.4g} is <= 0 and "
                      "eps50 = 0 means 'not measurable on this grid', not 'not robust'", RuntimeWarning,
                      stacklevel=2)
    if not match_original and r[0] >= thr:
        return 0.0
    below = r < thr
    crossings = np.flatnonzero(below[:-1] & ~below[1:])  # a with err[a] < thr <= err[a + 1]
    if len(crossings) == 0:
        return 0.0
    a = int(crossings[-1] if match_original else crossings[0])
    b = a + 1
    if r[b] == thr:
        return float(e[b])
    # ricbl metrics.py: (threshold - previous_score_average) * (eps - previous eps) / (score - previous) + previous eps
    return float((thr - r[a]) * (e[b] - e[a]) / (r[b] - r[a]) + e[a])


def eps50_from_curve(curve: pd.DataFrame, clean_accuracy: float | None = None, *,
                     match_original: bool = False) -> float:
    """eps50 of a robustness curve (columns eps, robust_accuracy; error = 1 - robust_accuracy), rows sorted by eps.

    clean_accuracy adds the clean point (0, 1 - clean_accuracy) in front, as the original evaluates clean data
    with eps = 0 before the grid; refused when the curve already has a row at eps = 0.
    """
    c = curve.sort_values("eps", kind="stable")
    eps = c["eps"].to_numpy(np.float64)
    err = 1.0 - c["robust_accuracy"].to_numpy(np.float64)
    if clean_accuracy is not None:
        if len(eps) and eps[0] == 0:
            raise ValueError("clean_accuracy: the curve already has a point at eps = 0")
        acc = float(clean_accuracy)
        if not 0 <= acc <= 1:
            raise ValueError(f"clean_accuracy: expected a fraction in [0, 1], got {clean_accuracy!r}")
        eps, err = np.concatenate([[0.0], eps]), np.concatenate([[1.0 - acc], err])
    return eps50(eps, err, match_original=match_original)
