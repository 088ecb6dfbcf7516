"""The adversarial-explanations study through the real workflow: two trained variants and a published net.

The published net is a file in the authors' format (test_preact builds it), imported with the console
command and named by a config model as `checkpoint`, so every rule scores it like a trained one.
"""
from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from advpipe.cli import main as cli
from advpipe.data import load_split
from advpipe.models import load_trained
from advpipe.models.wwoods import CIFAR10_CLASSES
from test_preact import OFFSET, _fake_main_function, _reference, _save
from wf import job_counts, snakemake

pytestmark = pytest.mark.slow

EXPLAIN_N = 2


def authors_file(path):
    """A depth-8 robust net saved as main.py saves it (arch holds a function of the authors' __main__)."""
    with pytest.MonkeyPatch.context() as mp:
        def cifar10_preprocess(ft_out):
            return torch.nn.Conv2d(3, ft_out, kernel_size=3, padding=1, bias=False)

        fn = _fake_main_function(mp, "cifar10_preprocess", fn=cifar10_preprocess)
        ref = _reference(1, 4, robust=True, delta=0.5)
        options = {"adversarial_training": True, "l2_min": True, "robust_additions": True,
                   "arch": [32, fn, [1] * 3, [4, 8, 16], 10],
                   "input_offset": OFFSET,
                   "robust_integration": 208.5}
        _save(path, ref, options, mp)
    return ref


def config(tmp_path, published_dir, cifar_npz):
    return {
        "seed": 5,
        "datasets": {"digits": {"source": "digits", "test_fraction": 0.3},
                     "fake_cifar": {"source": "npz", "path": str(cifar_npz), "test_fraction": 0.5}},
        "models": {
            "std": {"dataset": "digits", "arch": "preact_resnet", "arch_args": {"depth": 8, "width": 4},
                    "normalize": "dataset",
                    "train": {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "lr_milestones": [2],
                              "augment": {"crop_padding": 1, "pad_mode": "replicate", "hflip": False}}},
            "all": {"dataset": "digits", "arch": "preact_resnet",
                    "arch_args": {"depth": 8, "width": 4, "activation": "hhrelu"}, "normalize": "dataset",
                    "train": {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "augment": {"crop_padding": 0},
                              "objective": {"adversarial_training": True, "l2_min": True,
                                            "robust_additions": True, "adv_steps": 3}}},
            "published": {"dataset": "fake_cifar", "checkpoint": str(published_dir)},
        },
        "represent": {"num_saved_images": 1},
        "vrapi": {"enabled": False},
        "ara": {"n_images": 20, "steps": 10, "ensure_proper_minimization": False},
        "explanations": {"models": ["std", "all", "published"], "explain": {"n_images": EXPLAIN_N}},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explanations")
    rng = np.random.default_rng(0)
    cifar_npz = tmp / "fake_cifar.npz"
    np.savez(cifar_npz, x=rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8), y=np.arange(60) % 10,
             classes=np.array(CIFAR10_CLASSES))
    authors_file(tmp / "resnet8-all.pt")
    assert cli(["import-checkpoint", "wwoods", str(tmp / "resnet8-all.pt"), str(tmp / "published")]) == 0
    cfg = config(tmp, tmp / "published", cifar_npz)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    workdir = tmp / "run"
    workdir.mkdir()
    out = snakemake(workdir, "explanations", "results/representations/published/test.h5",
                    configfile=tmp / "config.yaml")
    return workdir, cfg, out


def spec2_ara(d, num_classes, bins=1000):
    """SPEC 2 item 5, written out: a `bins`-bin histogram on [0, max d], A_b = 1 - cumsum(hist)_b / n,
    ARA = (max d / bins) * sum_b max(0, A_b - 1/C); 0 when every d is 0 (the original divides by zero there)."""
    d = np.asarray(d, dtype=np.float64)
    if d.max() == 0:
        return 0.0
    hist, _ = np.histogram(d, bins=bins, range=(0.0, d.max()))
    a = 1 - np.cumsum(hist) / len(d)
    return d.max() / bins * np.maximum(0.0, a - 1 / num_classes).sum()


def test_ara_table_equals_an_independent_recomputation(run, one_thread):
    """Each model's row recomputed without the ara stage: its checkpoint loaded, calculate_ara's subset (the first
    n of randperm under seed 1776), an independent forward pass for the accuracy, the minimal distances from the
    step-by-step `_adv_images` loop of test_search_ara, and ARA from SPEC 2's histogram formula."""
    from advpipe.config import validate
    from test_search_ara import reference_iterates, smallest_met

    workdir, cfg, _ = run
    table = pd.read_csv(workdir / "results/scores/explanations/ara.csv")
    assert table.model.tolist() == ["std", "all", "published"]
    ara_cfg = validate(cfg)["ara"]
    n = cfg["ara"]["n_images"]
    for row in table.itertuples():
        model_cfg = cfg["models"][row.model]
        model = load_trained(model_cfg.get("checkpoint", workdir / f"results/models/{row.model}"))
        test = load_split(cfg["datasets"][model_cfg["dataset"]], "test", "data", cfg["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1776)
            pick = torch.randperm(len(test.y))[:n]
        x, y = test.x[pick], test.y[pick]
        with torch.no_grad():
            correct = (model(x).argmax(1) == y).numpy()
        distances = {}
        for kind, mode in (("attack", "l2min"), ("btr", "btr")):
            iterates, met = reference_iterates(model, x, y, eps=ara_cfg["eps"], steps=cfg["ara"]["steps"],
                                               mode=mode, momentum=ara_cfg["momentum"])
            distances[kind] = smallest_met(iterates, met)[0].pow(2).flatten(1).mean(1).sqrt().double().numpy()
        with h5py.File(workdir / f"results/ara/{row.model}/distances.h5") as f:
            assert np.array_equal(f["index"][()], test.index[pick.numpy()])
            assert np.array_equal(f["correct"][()], correct)
            np.testing.assert_allclose(f["d_attack"][()], distances["attack"], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(f["d_btr"][()], distances["btr"], rtol=1e-5, atol=1e-7)
        assert row.n_images == n == len(y)
        assert row.accuracy == pytest.approx(correct.mean())
        assert (distances["attack"][~correct] == 0).all()  # already misclassified: no perturbation needed
        assert (distances["attack"][correct] > 0).all()
        assert row.attack_ara == pytest.approx(spec2_ara(distances["attack"], 10), rel=1e-4, abs=1e-9)
        assert row.btr_ara == pytest.approx(spec2_ara(distances["btr"], 10), rel=1e-4, abs=1e-9)
        for kind in ("ara", "explain"):
            assert (workdir / f"results/figures/{kind}/{row.model}.pdf").stat().st_size > 0
            assert (workdir / f"results/figures/{kind}/{row.model}.png").stat().st_size > 0
    assert (table.attack_ara > 0).any()


def test_explanation_files_name_the_clean_probabilities(run):
    workdir, cfg, _ = run
    model = load_trained(workdir / "results/models/std")
    test = load_split(cfg["datasets"]["digits"], "test", "data", cfg["seed"])
    with torch.no_grad():
        proba = torch.softmax(model(test.x[:EXPLAIN_N]), 1).numpy()
    folders = sorted(p for p in (workdir / "results/explain/std").iterdir() if p.is_dir())
    assert [f.name for f in folders] == [f"{i}-{test.classes[int(test.y[i])]}" for i in range(EXPLAIN_N)]
    for i, folder in enumerate(folders):
        names = {p.name for p in folder.iterdir()}
        y = int(test.y[i])
        assert "_input.png" in names and f"_real_was_{proba[i, y]:.3f}.png" in names
        second = int(np.argsort(proba[i])[-2] if proba[i].argmax() == y else proba[i].argmax())
        assert f"_second_{test.classes[second]}_was_{proba[i, second]:.3f}.png" in names
        assert {n for n in names if re.match(r"\d+_", n)} == {
            f"{j}_{c}_was_{proba[i, j]:.3f}.png" for j, c in enumerate(test.classes)}


def test_robust_training_logs_and_stores_its_integrator(run):
    workdir, _, _ = run
    log = pd.read_csv(workdir / "results/models/all/train_log.csv")
    assert {"psi", "robust_integration", "ce"} <= set(log.columns)
    spec = json.loads((workdir / "results/models/all/model.json").read_text())
    integration = spec["objective_state"]["robust_integration"]
    assert integration == pytest.approx(log.robust_integration.iloc[-1])
    assert log.psi.iloc[-1] == pytest.approx(220 * np.exp(0.02 * integration))


def test_published_net_is_scored_from_its_folder(run):
    workdir, _, out = run
    assert not (workdir / "results/models/published").exists()  # never trained
    assert job_counts(out.stdout + out.stderr)["train"] == 2  # std and all only
    with h5py.File(workdir / "results/representations/published/test.h5") as f:
        assert f["features"].shape[1] == 16  # 4 x width of the imported depth-8, width-4 net


def test_paper_config_dry_run_job_counts(tmp_path):
    from wf import ROOT

    out = snakemake(tmp_path, "--dry-run", configfile=ROOT / "config/paper/explanations.yaml")
    # 4 variants: each trained, represented (test split), ARA'd and explained; one ARA table. The matrix (every
    # model under every metric that applies: here their alignment besides the ARA), the references and the run cost.
    assert job_counts(out.stdout) == {"all": 1, "train": 4, "represent": 4, "ara": 4, "explain": 4,
                                      "ara_table": 1, "alignment": 4, "matrix_table": 1, "references": 1,
                                      "run_cost": 1, "total": 25}
