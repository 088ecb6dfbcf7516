"""The cross-study matrix (issue 16) through real Snakemake on the five-study tiny config (the report test's run): a
CNN trained with two seeds, its LESCI defense and a label-representation model under every metric. The table is checked against computations written here: the copies' accuracies
from their checkpoints, robust accuracy and SPEC 5's eps50 loop from the attack dumps with numpy, POP with
scikit-learn's 1-NN, the seeds' mean and sd with numpy; and the gradient-masking checks must catch LESCI."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from advpipe.config import validate
from advpipe.data import load_split
from advpipe.models import load_trained
from advpipe.pipeline.matrix_plan import METRICS
from advpipe.pipeline.specs import train_job

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).parent / "configs" / "report_tiny.yaml"  # the matrix CSV keeps 10 significant digits


@pytest.fixture(scope="module")
def run(five_studies_run):
    workdir, _ = five_studies_run
    config = validate(yaml.safe_load(CONFIG.read_text()))
    return workdir, config, pd.read_csv(workdir / "results/matrix/matrix.csv", keep_default_na=False,
                                        na_values=[""])


def rows(table: pd.DataFrame, model: str, metric: str) -> pd.DataFrame:
    return table[(table["model"] == model) & (table["metric"] == metric)]


def value(table: pd.DataFrame, model: str, metric: str, at: str = "") -> pd.Series:
    r = rows(table, model, metric)
    r = r[r["at"].fillna("") == at]
    assert len(r) == 1, (model, metric, at, r)
    return r.iloc[0]


def test_every_metric_has_a_value_or_a_reason(run):
    workdir, _, table = run
    models = ["cnn", "cnn_lesci", "labels_lowdim_100"]
    assert list(dict.fromkeys(table["model"])) == models  # seed copies join their model
    for model in models:
        for metric in METRICS:
            prefix = ("masking_",) if metric == "masking" else (metric,)
            r = table[(table["model"] == model) & table["metric"].str.startswith(prefix)]
            assert len(r), (model, metric)
            has_value, has_reason = r["value"].notna(), r["reason"].fillna("") != ""
            assert (has_value ^ has_reason).all(), r  # a value, or the reason why none
    assert value(table, "cnn", "alpha_dx")["reason"].startswith("dataset 'digits' has no ground-truth dx")
    assert "LESCI" in value(table, "cnn_lesci", "ara_attack")["reason"]
    assert value(table, "cnn_lesci", "drift")["reason"] == "not in drift.models"
    drift = rows(table, "cnn", "drift")  # the seed copy has no drift job: one row per attack and peer
    assert set(drift["at"]) == {f"{a} vs {p}" for a in ("fgsm", "pgd", "cw") for p in ("foolbox", "torchattacks")}
    assert (drift["seeds"] == 1).all()
    # the label model enters through its Classifier wrapper: every metric but the LESCI and dx ones
    assert not rows(table, "labels_lowdim_100", "eps50_l2")["value"].isna().any()
    for ext in ("pdf", "png"):
        assert (workdir / f"results/figures/matrix/matrix.{ext}").stat().st_size > 0


def test_seed_copies_train_apart_and_the_mean_and_sd_are_theirs(run):
    workdir, config, table = run
    nets = {m: load_trained(workdir / f"results/models/{m}", "cpu") for m in ("cnn", "cnn_s1")}
    w0, w1 = (torch.cat([p.flatten() for p in nets[m].parameters()]) for m in ("cnn", "cnn_s1"))
    assert not torch.equal(w0, w1)
    test = load_split(config["datasets"]["digits"], "test", str(workdir / "data"), config["seed"])
    with torch.no_grad():
        acc = [float((nets[m](test.x).argmax(1) == test.y).double().mean()) for m in ("cnn", "cnn_s1")]
    r = value(table, "cnn", "accuracy")
    assert r["seeds"] == 2 and r["n"] == len(test.y)
    assert r["value"] == pytest.approx(np.mean(acc), abs=1e-9)
    assert r["sd"] == pytest.approx(np.std(acc, ddof=1), abs=1e-9)
    assert np.isnan(value(table, "cnn_lesci", "accuracy")["sd"])  # one copy: no sd
    # listing seeds retrains nothing: the first copy's job is the entry's without the key
    raw = yaml.safe_load(CONFIG.read_text())
    raw["models"]["cnn"].pop("seeds")
    plain = validate(raw)
    assert train_job(plain, "cnn") == train_job(config, "cnn")


def _spec5_eps50(eps: np.ndarray, err: np.ndarray) -> float:
    thr = min(0.5, err[-1] - 0.01)
    for a in range(len(eps) - 1):
        if err[a] < thr <= err[a + 1]:
            return eps[a] + (thr - err[a]) * (eps[a + 1] - eps[a]) / (err[a + 1] - err[a])
    return 0.0


def test_robust_accuracy_and_eps50_from_the_dumps(run):
    workdir, _, table = run
    for norm, attack in (("linf", "pgd_grid"), ("l2", "pgd_l2")):
        per_copy = {}
        for m in ("cnn", "cnn_s1"):
            with h5py.File(workdir / f"results/attacks/{m}/{attack}.h5") as f:
                eps, correct, success = f.attrs["eps"], f["clean_correct"][()], f["success_eps"][()]
            robust = (correct[:, None] & ~success).mean(0)
            per_copy[m] = (eps, robust, _spec5_eps50(np.r_[0.0, eps], 1 - np.r_[correct.mean(), robust]))
        for k, e in enumerate(per_copy["cnn"][0]):
            r = value(table, "cnn", f"robust_accuracy_{norm}", f"eps={e:.6g}")
            assert r["value"] == pytest.approx(np.mean([per_copy[m][1][k] for m in per_copy]), abs=1e-9)
        r = value(table, "cnn", f"eps50_{norm}")
        assert r["value"] == pytest.approx(np.mean([per_copy[m][2] for m in per_copy]), abs=1e-9)


def test_pop_against_scikit_learn(run):
    from sklearn.neighbors import KNeighborsClassifier

    workdir, _, table = run
    with h5py.File(workdir / "results/projections/cnn_lesci/fgsm/pca/0.h5") as f:
        index, clean, adv = f["index"][()], f["clean"][()], f["adv"][()]
    with h5py.File(workdir / "results/representations/cnn_lesci/test.h5") as f:
        rep_index, label = f["index"][()], f["label"][()]
    with h5py.File(workdir / "results/attacks/cnn_lesci/fgsm.h5") as f:
        adv_index, pred = f["index"][()], f["pred"][()]
    by_index = dict(zip(rep_index, label))
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(clean, [by_index[i] for i in index])
    adv_pred = dict(zip(adv_index, pred))
    expected = np.mean(knn.predict(adv) == np.array([adv_pred[i] for i in index]))
    assert value(table, "cnn_lesci", "pop")["value"] == pytest.approx(expected, abs=1e-9)


def test_masking_checks_catch_lesci_and_not_its_base(run):
    workdir, _, table = run
    flags = pd.read_csv(workdir / "results/matrix/flags.csv")
    fired = set(flags[flags["flag"] == True]["model"] + ":" + flags[flags["flag"] == True]["metric"])  # noqa: E712
    # LESCI's projected outputs are one-hot: exactly zero input gradients, and the black box beats PGD
    assert "cnn_lesci:masking_zero_gradient" in fired
    assert "cnn_lesci:masking_black_box" in fired
    assert not {f for f in fired if f.startswith("cnn:")}
    assert value(table, "cnn", "masking_zero_gradient")["value"] == 0
    lesci = value(table, "cnn", "lesci_accuracy", "cnn_lesci")
    assert lesci["value"] == pytest.approx(value(table, "cnn_lesci", "accuracy")["value"], abs=1e-9)
