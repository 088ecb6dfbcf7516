"""POP score of a 2-D projection and its per-projection statistics (SPEC 1, THE METRIC and score.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd

# Distances per block (128 KB of float64): small enough to stay in cache, which makes the blocked loop
# several times faster than one (M, N) matrix (bench/bench_score.py).
_BLOCK_ELEMENTS = 16_384


def nearest_labels(ref_z: np.ndarray, ref_labels: np.ndarray, query_z: np.ndarray) -> np.ndarray:
    """Label of each query point's nearest reference point (Euclidean, brute force; ties -> lowest index).

    Distances are exact differences in float64 (not |a|^2 - 2ab + |b|^2), so a query equal to a
    reference point is at distance 0 and finds it; argmin takes the first minimum, like sklearn's brute kNN.
    """
    ref = np.asarray(ref_z, dtype=np.float64)
    query = np.asarray(query_z, dtype=np.float64)
    ref_labels = np.asarray(ref_labels)
    if ref.ndim != 2 or query.ndim != 2 or ref.shape[1] != query.shape[1] or ref.shape[1] == 0:
        raise ValueError(f"ref_z and query_z must be (N, d) and (M, d), d >= 1; got {ref.shape}, {query.shape}")
    if len(ref) == 0 or len(ref_labels) != len(ref):
        raise ValueError(f"need >= 1 reference point with one label each; "
                         f"got {len(ref)} points, {len(ref_labels)} labels")
    step = max(1, _BLOCK_ELEMENTS // len(ref))
    out = np.empty(len(query), dtype=np.int64)
    for lo in range(0, len(query), step):
        q = query[lo:lo + step]
        d2 = np.subtract.outer(q[:, 0], ref[:, 0])
        d2 *= d2
        for k in range(1, ref.shape[1]):  # per axis, in place: no (block, N, d) temporary
            diff = np.subtract.outer(q[:, k], ref[:, k])
            diff *= diff
            d2 += diff
        out[lo:lo + step] = d2.argmin(axis=1)
    return ref_labels[out]


def pop_score(clean_z: np.ndarray, clean_labels: np.ndarray, adv_z: np.ndarray, adv_pred: np.ndarray) -> float:
    """POP: fraction of adv points whose nearest clean point (1-NN on clean_z) has label adv_pred (SPEC 1)."""
    adv_pred = np.asarray(adv_pred)
    if len(adv_pred) != len(adv_z) or len(adv_z) == 0:
        raise ValueError(f"need >= 1 adversarial point with one prediction each; got {len(adv_z)} points, "
                         f"{len(adv_pred)} predictions")
    return float(np.mean(nearest_labels(clean_z, clean_labels, adv_z) == adv_pred))


def score_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (model, projection): mean_<attack>, std_<attack>, mean_mean over attacks; best first (SPEC 1, score.py).

    `scores` is long form with columns model, attack, projection, trial, metric, value, holding one metric.
    Columns come out as vrapi's: model, projection, mean_<a> for every attack, std_<a> for every attack,
    mean_mean; attacks, models and projections keep their order of first appearance. std is pandas' sample
    std (ddof=1, as vrapi) except that a single trial gives 0 rather than NaN. Rows are grouped by model
    (one block per model, as vrapi's one table per workspace) and sorted by mean_mean, highest first;
    ties keep projection order. mean_mean skips attacks a projection lacks (pandas' mean, as vrapi).
    """
    need = ["model", "attack", "projection", "trial", "metric", "value"]
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lacks column(s) {missing}; has {list(scores.columns)}")
    metrics = scores["metric"].unique()
    if len(metrics) != 1:
        raise ValueError(f"score_stats needs one metric, got {list(metrics)}; filter the table first")
    keys = ["model", "attack", "projection", "trial"]
    dup = scores.duplicated(keys)
    if dup.any():
        first = scores.loc[dup, keys].head().to_dict("records")
        raise ValueError(f"duplicate (model, attack, projection, trial) rows, e.g. {first}")

    attacks = list(pd.unique(scores["attack"]))
    grouped = scores.groupby(["model", "projection", "attack"], sort=False)["value"]
    agg = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).where(grouped.size() > 1, 0.0)})
    wide = agg.unstack("attack")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([["mean", "std"], attacks]))
    wide.columns = [f"{stat}_{attack}" for stat, attack in wide.columns]
    wide["mean_mean"] = wide[[f"mean_{a}" for a in attacks]].mean(axis=1)
    wide = wide.reset_index()

    model_rank = {m: i for i, m in enumerate(pd.unique(scores["model"]))}
    proj_rank = {p: i for i, p in enumerate(pd.unique(scores["projection"]))}
    # lexsort: last key first, i.e. by model, then mean_mean descending, then projection order.
    order = np.lexsort((wide["projection"].map(proj_rank), -wide["mean_mean"].to_numpy(),
                        wide["model"].map(model_rank)))
    return wide.iloc[order].reset_index(drop=True)
