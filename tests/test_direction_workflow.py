"""The gradient-direction study (SPEC 5) through real Snakemake on a tiny config: spheres with baseline, PGD
training and L_alpha, square32, two digit classes with the vrgan estimate, the 10-class digits CNN with the cgan
estimate. The tables are checked against independent computations written here: finite-difference gradients,
SPEC 5's eps50 loop, cosines of the dumps with numpy."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from advpipe.data import load_split
from advpipe.models import load_trained
from wf import snakemake

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).parent / "configs" / "direction_tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("direction_workflow")
    snakemake(workdir, "direction", configfile=CONFIG)
    return workdir, yaml.safe_load(CONFIG.read_text())


def table(workdir: Path, group: str) -> pd.DataFrame:
    return pd.read_csv(workdir / f"results/direction/{group}.csv").set_index("model")


def test_every_group_has_its_models_attacks_and_source_of_dx(run):
    workdir, config = run
    for group, spec in config["direction"]["groups"].items():
        t = table(workdir, group)
        assert list(t.index) == spec["models"]
        assert [c for c in t.columns if c.startswith("eps50_")] == [f"eps50_{a}" for a in spec["attacks"]]
        assert ((t["alpha_x"] >= 0) & (t["alpha_x"] <= 1)).all()
        assert ((t["alpha_dx"].abs() <= 1)).all()
        for ext in ("pdf", "png"):
            assert (workdir / f"results/figures/direction/{group}.{ext}").stat().st_size > 0
    assert set(table(workdir, "spheres")["dx_source"]) == {"ground truth"}
    assert table(workdir, "digits35").loc["digits35_lalpha", "dx_source"] == "estimator vrgan_digits35"
    assert table(workdir, "digits").loc["cnn", "dx_source"] == "estimator cgan_digits"
    # the cosine penalty's model trained on the estimator's training-split dump (an input of its job)
    log = pd.read_csv(workdir / "results/models/digits35_lalpha/train_log.csv")
    assert "cosine" in log.columns and log["cosine"].notna().all()


def _finite_difference_gradient(model, x: torch.Tensor, y: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    """d/dx of (1 - 2y) d by central differences in float64, one coordinate at a time (the reference)."""
    model = model.double()
    x = x.double()
    sign = (1 - 2 * y).double()

    def loss(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sign * model.forward_normalized(model.normalize(v))[:, 0]

    grad = torch.zeros_like(x)
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        grad[:, j] = (loss(x + e) - loss(x - e)) / (2 * h)
    return grad


def test_sphere_alignment_matches_finite_differences(run):
    """alpha_dx and alpha_x of the first test spheres, recomputed from a finite-difference gradient and the exact
    dx (+x outward for r = 1, -x for r = 1.3); for spheres they coincide up to sign."""
    workdir, config = run
    per_example = pd.read_csv(workdir / "results/alignment/sphere_lalpha.csv")
    test = load_split(config["datasets"]["spheres"], "test", workdir / "data", config["seed"])
    model = load_trained(workdir / "results/models/sphere_lalpha").eval()
    n = 8
    grad = _finite_difference_gradient(model, test.x[:n], test.y[:n]).numpy()
    x_nat = (2 * test.x[:n] - 1).double().numpy()
    dx = np.where(test.y[:n, None].numpy() == 0, 1.0, -1.0) * x_nat  # the exact direction, up to its norm

    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert per_example["index"].to_numpy()[:n].tolist() == test.index[:n].tolist()
    np.testing.assert_allclose(per_example["alpha_dx"].to_numpy()[:n], cos(grad, dx), atol=2e-4)
    np.testing.assert_allclose(per_example["alpha_x"].to_numpy()[:n], np.abs(cos(grad, x_nat)), atol=2e-4)


def test_eps50_follows_the_spec_loop(run):
    """eps50 of each sphere model under the L-inf PGD grid, recomputed from the attack dump with SPEC 5's loop."""
    workdir, config = run
    t = table(workdir, "spheres")
    for model in config["direction"]["groups"]["spheres"]["models"]:
        with h5py.File(workdir / f"results/attacks/{model}/sphere_linf.h5") as f:
            eps = np.concatenate([[0.0], f.attrs["eps"]])
            correct = f["clean_correct"][()]
            err = np.concatenate([[1 - correct.mean()], 1 - (correct[:, None] & ~f["success_eps"][()]).mean(0)])
        thr = min(0.5, err[-1] - 0.01)
        expected = 0.0
        for a in range(len(eps) - 1):
            if err[a] < thr <= err[a + 1]:
                expected = eps[a] + (thr - err[a]) * (eps[a + 1] - eps[a]) / (err[a + 1] - err[a])
                break
        assert t.loc[model, "eps50_sphere_linf"] == pytest.approx(expected, abs=1e-12)


def test_estimates_cover_their_splits_and_agree_with_the_ground_truth_table(run):
    workdir, config = run
    results = workdir / "results/estimators"
    digits = config["datasets"]["digits"]
    test = load_split(digits, "test", workdir / "data", config["seed"])
    with h5py.File(results / "cgan_digits/test.h5") as f:
        assert f["index"][()].tolist() == test.index.tolist()
        dx_all, x_hat = f["dx_all"][()], f["x_hat"][()]
    assert dx_all.shape == (len(test), 10, 64)
    assert x_hat.min() >= -1 and x_hat.max() <= 1  # G's images live in the declared range
    # dx(i, c) = G(z*, c) - x_i in natural units ([0, 1] for the digits: no range declared)
    np.testing.assert_allclose(dx_all, x_hat - test.x.flatten(1).numpy()[:, None], atol=1e-6)
    train35 = load_split(config["datasets"]["digits35"], "train", workdir / "data", config["seed"])
    with h5py.File(results / "vrgan_digits35/train.h5") as f:
        assert sorted(f["index"][()].tolist()) == sorted(train35.index.tolist())
    # sim(dx, dx_hat) of the sphere estimator, recomputed from the dump and the exact direction
    spheres = load_split(config["datasets"]["spheres"], "test", workdir / "data", config["seed"])
    with h5py.File(results / "vrgan_spheres/test.h5") as f:
        pos = pd.Index(f["index"][()]).get_indexer(spheres.index)
        dx_hat = f["dx"][()][pos].astype(np.float64)
    dx = spheres.extras["dx"].double().numpy()
    cos = (dx * dx_hat).sum(1) / np.linalg.norm(dx, axis=1) / np.linalg.norm(dx_hat, axis=1)
    sim = pd.read_csv(results / "vrgan_spheres/similarity.csv").iloc[0]
    assert sim["similarity"] == pytest.approx(cos.mean(), abs=1e-6)
    assert sim["norm_dx"] == pytest.approx(0.3, abs=1e-6)


def test_one_logit_models_and_the_training_attacks(run):
    workdir, _ = run
    spec = json.loads((workdir / "results/models/sphere_pgd/model.json").read_text())
    assert spec["one_logit"] is True and spec["input_shape"] == [50] and spec["range"] == [-1.0, 1.0]
    assert spec["mean"] == [0.5] and spec["std"] == [0.5]  # the network sees [-1, 1]
    assert spec["metrics"]["best_epoch"] in (1, 2) and "val_eps50" in spec["metrics"]
    params = (workdir / "logs/train/sphere_pgd.log").read_text()
    assert "fresh samples per epoch" in params
