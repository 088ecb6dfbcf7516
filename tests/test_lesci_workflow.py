"""The LESCI study through real Snakemake, on a copy of the session's tiny run (its trained cnn is the base):
defended models built from the base's activations, the grid search, the test metrics, and a shared rule (attack,
robustness) run on a defended model through config alone. The tables are checked against scikit-learn."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.neighbors import NearestNeighbors

from advpipe.data import load_split
from advpipe.models import load_trained
from advpipe.models.layers import activations
from wf import TINY, snakemake

pytestmark = pytest.mark.slow
LESCI = {"cnn_lesci": {"defense": {"lesci": {"base": "cnn", "layer": "penultimate", "r": 8, "k": 5, "t": 0.6}}},
         "cnn_lesci_vq": {"defense": {"lesci": {"base": "cnn", "layer": "conv2", "r": 16, "k": 5, "t": 0.6,
                                                "center": False, "output": "vq"}}}}
GRID = {"models": ["cnn_lesci"], "layers": ["penultimate", "conv2"], "r": [4, 8], "k": [1, 5], "t": [0.0, 0.5, 1.0]}


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lesci_workflow") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load(TINY.read_text())
    config["models"].update(LESCI)
    config["lesci"] = {"batch_size": 256, "grid": GRID}
    config["robustness"] = {"models": ["cnn_lesci"], "attacks": ["fgsm"]}
    path = workdir / "lesci.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake(workdir, "lesci", "results/robustness/cnn_lesci/fgsm.csv", "results/representations/cnn_lesci_vq/test.h5",
              configfile=path)
    return workdir, config


def test_the_base_is_not_retrained(run):
    workdir, _ = run
    assert not (workdir / "logs/train/cnn_lesci.log").exists()
    spec = json.loads((workdir / "results/models/cnn_lesci/model.json").read_text())
    assert spec["arch"] == "small_cnn" and spec["defense"]["lesci"]["r"] == 8


def test_test_metrics_match_scikit_learn(run):
    """Recomputed from the embedding file and the base network: cosine kNN by scikit-learn, the vote here."""
    workdir, config = run
    results = workdir / "results"
    table = pd.read_csv(results / "lesci/cnn_lesci/test_metrics.csv").iloc[0]
    with h5py.File(results / "lesci/cnn_lesci/embedding.h5") as f:
        e, labels, w, mu = (f[k][()] for k in ("embedding", "label", "w", "mu"))
    test = load_split(config["datasets"]["digits"], "test", "data", config["seed"])
    base = load_trained(results / "models/cnn")
    with torch.no_grad():
        logits, a = activations(base, "penultimate", test.x)
    codes = (a.numpy() - mu) @ w
    _, idx = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(e).kneighbors(codes)
    counts = np.stack([np.bincount(row, minlength=10) for row in labels[idx]])
    knn, fraction = counts.argmax(1), counts.max(1) / 5
    projected = fraction >= 0.6
    pred = np.where(projected, knn, logits.argmax(1).numpy())
    y = test.y.numpy()
    assert table["accuracy"] == pytest.approx(np.mean(pred == y))
    assert table["percentage_identity_mapped"] == pytest.approx(np.mean(~projected))
    assert table["base_accuracy"] == pytest.approx(np.mean(logits.argmax(1).numpy() == y))
    assert table["accuracy_projection"] == pytest.approx(((knn == y) & projected).sum() / (projected.sum() + 0.001))


def test_grid_table_and_choice(run):
    workdir, _ = run
    grid = pd.read_csv(workdir / "results/lesci/cnn_lesci/grid.csv")
    assert len(grid) == 2 * 2 * 2 * 3 and set(grid["layer"]) == {"penultimate", "conv2"}
    for _, sub in grid.groupby(["layer", "r", "k"]):
        identity = sub.sort_values("t")["percentage_identity_mapped"].to_numpy()
        assert identity[0] == 0 and np.all(np.diff(identity) >= 0)
    chosen = json.loads((workdir / "results/lesci/cnn_lesci/chosen.json").read_text())["chosen"]
    feasible = grid[grid["accuracy"] > 0.7]
    assert chosen["fraction_projected"] == feasible["fraction_projected"].max()
    for ext in ("pdf", "png"):
        assert (workdir / f"results/figures/lesci/cnn_lesci/grid.{ext}").stat().st_size > 1000


def test_shared_rules_run_on_a_defended_model(run):
    workdir, _ = run
    results = workdir / "results"
    curve = pd.read_csv(results / "robustness/cnn_lesci/fgsm.csv")
    assert len(curve) == 1 and 0 <= curve["robust_accuracy"].iloc[0] <= 1
    with h5py.File(results / "representations/cnn_lesci_vq/test.h5") as f:
        assert f["features"].shape[1] == 32  # the base's representation
