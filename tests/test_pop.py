"""POP score (SPEC 1, THE METRIC and (b)) and score_stats (SPEC 1, score.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier

from advpipe.metrics import nearest_labels, pop_score, score_stats
from advpipe.projections import project

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"parametric_umap": {"epochs": 20, "progress": False}}


def blobs(n_per: int, classes: int, dim: int, radius: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian blobs (unit variance) with centres on a circle of `radius` in a random plane of R^dim."""
    rng = np.random.default_rng(seed)
    u, v = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
    angles = 2 * np.pi * np.arange(classes) / classes
    centres = radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    labels = rng.permutation(np.repeat(np.arange(classes), n_per))  # shuffled, like a test set
    x = centres[labels] + rng.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels, centres.astype(np.float32)


@pytest.mark.parametrize("name", ["pca", "pca_oos", "umap_oos", "parametric_umap_oos"])
def test_identity_scores_one(name: str) -> None:
    # SPEC 1 (b): adv = clean and p' = g -> every adversarial point lands on its clean twin.
    x, g, _ = blobs(30, 5, 32, 8.0, seed=0)
    clean_z, adv_z = project(name, x, x.copy(), seed=0, options=SMALL)
    assert pop_score(clean_z, g, adv_z, g) == 1.0


def test_label_absent_from_clean_scores_zero() -> None:
    x, g, _ = blobs(30, 5, 32, 8.0, seed=1)
    clean_z, adv_z = project("pca_oos", x, x, seed=0)
    assert pop_score(clean_z, g, adv_z, np.full(len(g), 99)) == 0.0
    assert pop_score(clean_z, g, adv_z, (g + 1) % 5) == 0.0  # every p' names a class, never the twin's


def test_moved_points_pca_oos_scores_one() -> None:
    # SPEC 1 (b): 10 well-separated blobs in 512-d; a fraction q moved onto another blob's centre, p' = that blob.
    x, g, centres = blobs(100, 10, 512, 30.0, seed=2)
    rng = np.random.default_rng(3)
    moved = rng.random(len(g)) < 0.3
    target = (g + rng.integers(1, 10, len(g))) % 10
    adv, pred = x.copy(), g.copy()
    adv[moved], pred[moved] = centres[target[moved]], target[moved]
    clean_z, adv_z = project("pca_oos", x, adv, seed=0)
    assert pop_score(clean_z, g, adv_z, pred) >= 0.99
    # the same picture with p' left at the true class scores only the unmoved fraction
    assert pop_score(clean_z, g, adv_z, g) == pytest.approx(1 - moved.mean(), abs=0.01)


def test_nearest_labels_matches_sklearn_brute() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(500, 2)).astype(np.float32)
    labels = rng.integers(0, 10, 500)
    q = rng.normal(size=(700, 2)).astype(np.float32)
    sk = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(z, labels).predict(q)
    np.testing.assert_array_equal(nearest_labels(z, labels, q), sk)
    pred = rng.integers(0, 10, 700)
    assert pop_score(z, labels, q, pred) == np.mean(sk == pred)


def test_nearest_ties_take_lowest_index_like_sklearn() -> None:
    # Integer grid: many exact ties; the winner's index is the label here.
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 6, (300, 2)).astype(np.float64)
    q = rng.integers(0, 6, (200, 2)) + rng.choice([0.0, 0.5], (200, 2))
    sk = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(ref, np.zeros(300)).kneighbors(
        q, 1, return_distance=False)[:, 0]
    np.testing.assert_array_equal(nearest_labels(ref, np.arange(300), q), sk)


def test_nearest_labels_blocks_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    z, q, lab = rng.normal(size=(50, 2)), rng.normal(size=(333, 2)), rng.integers(0, 3, 50)
    whole = nearest_labels(z, lab, q)
    monkeypatch.setattr("advpipe.metrics.pop._BLOCK_ELEMENTS", 7 * 50)  # blocks of 7 query rows
    np.testing.assert_array_equal(nearest_labels(z, lab, q), whole)


def test_pop_rejects_bad_input() -> None:
    z = np.zeros((3, 2))
    with pytest.raises(ValueError):
        pop_score(z, [0, 1, 2], np.zeros((0, 2)), [])
    with pytest.raises(ValueError):
        pop_score(z, [0, 1, 2], z, [0, 1])
    with pytest.raises(ValueError):
        pop_score(z, [0, 1], z, [0, 1, 2])


def _table() -> pd.DataFrame:
    rows = []
    values = {  # (projection, attack) -> values over trials
        ("pca", "fgsm"): [0.2, 0.4], ("pca", "cw"): [0.6, 0.6],
        ("umap", "fgsm"): [0.9, 0.7], ("umap", "cw"): [0.5, 0.7],
        ("tsne", "fgsm"): [0.3], ("tsne", "cw"): [0.5],
    }
    for (proj, attack), vals in values.items():
        for t, v in enumerate(vals):
            rows.append(dict(model="m", attack=attack, projection=proj, trial=t, metric="pop", value=v))
    return pd.DataFrame(rows)


def test_score_stats_columns_order_values() -> None:
    out = score_stats(_table())
    assert list(out.columns) == ["model", "projection", "mean_fgsm", "mean_cw", "std_fgsm", "std_cw", "mean_mean"]
    assert list(out["projection"]) == ["umap", "pca", "tsne"]  # mean_mean 0.7, 0.45, 0.4
    umap = out.iloc[0]
    assert umap["mean_fgsm"] == pytest.approx(0.8)
    assert umap["std_fgsm"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    assert umap["mean_mean"] == pytest.approx(0.7)
    pca = out.iloc[1]
    assert pca["std_cw"] == 0.0 and pca["mean_mean"] == pytest.approx(0.45)
    tsne = out.iloc[2]
    assert tsne["std_fgsm"] == 0.0 and tsne["std_cw"] == 0.0  # one trial: 0, not NaN
    assert tsne["mean_mean"] == pytest.approx(0.4)


def test_score_stats_groups_by_model_and_checks_input() -> None:
    t = _table()
    two = pd.concat([t.assign(model="b", value=1 - t["value"]), t])
    out = score_stats(two)
    assert list(zip(out["model"], out["projection"])) == [
        ("b", "tsne"), ("b", "pca"), ("b", "umap"), ("m", "umap"), ("m", "pca"), ("m", "tsne")]
    with pytest.raises(ValueError, match="duplicate"):
        score_stats(pd.concat([t, t.head(1)]))
    with pytest.raises(ValueError, match="one metric"):
        score_stats(pd.concat([t, t.assign(metric="other")]))
    with pytest.raises(ValueError, match="lacks"):
        score_stats(t.drop(columns="trial"))
