"""The label-representations study through real Snakemake: a small study end to end, a user's label file,
and the job counts of the paper config."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import spec3_reference as ref
from advpipe.config import validate
from advpipe.data import load_split
from advpipe.io.h5 import read_attrs, read_dump
from advpipe.labels.study import label_attack_name, label_model_name
from advpipe.models import load_trained
from advpipe.runtime import derive_seed
from wf import ROOT, job_counts, snakemake

KINDS = ["category", "composite", "lowdim"]
ATTACKS = ["fgsm", "bim_targeted", "pgd"]
EPS = [0, 0.1, 0.3]
LABEL_MODEL = label_model_name("category", 100)
EXTRA = [f"results/ara/{LABEL_MODEL}/ara.csv", "results/robustness/cnn/labels_bim_targeted.csv",
         f"results/robustness/{LABEL_MODEL}/labels_bim_targeted.csv"]


def study_config(tmp_path, label_file) -> str:
    config = {
        "datasets": {"digits": {"source": "digits"}},
        # One footing: a vrapi-style model gets the study's eps-grid attack, a label model gets an ARA and a
        # robustness curve, through config alone.
        "models": {"cnn": {"dataset": "digits", "arch": "small_cnn", "arch_args": {"channels": [8, 16], "hidden": 32},
                           "train": {"epochs": 3, "augment": {"crop_padding": 1, "hflip": False}}}},
        "robustness": {"models": ["cnn", LABEL_MODEL], "attacks": ["labels_bim_targeted"]},
        "ara": {"n_images": 30, "steps": 20, "ensure_proper_minimization": False},
        "vrapi": {"enabled": False},
        "explanations": {"enabled": False},
        "device": "cpu",
        "labels": {
            "backbone": {"dataset": "digits", "arch": "small_cnn", "arch_args": {"channels": [8, 16], "hidden": 32},
                         "normalize": "dataset",
                         "train": {"epochs": 3, "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0001,
                                   "augment": {"crop_padding": 1, "hflip": False}}},
            "kinds": KINDS,
            "label_files": {"mine": str(label_file)},
            "levels": [100, 50],
            "attack": {"n_images": 60, "eps": EPS, "attacks": ATTACKS},
        },
    }
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("label_study")
    label_file = tmp_path / "mine.npy"
    np.save(label_file, np.random.default_rng(0).uniform(0, 80, (10, 5)).astype(np.float32))
    config = study_config(tmp_path, label_file)
    out = snakemake(tmp_path, "labels", *EXTRA, configfile=config)
    return tmp_path, config, out


@pytest.mark.slow
def test_study_jobs_and_outputs(study):
    workdir, _, out = study
    labels = KINDS + ["mine"]
    # The (label, level) models and the attacks are the shared train and attack rules' jobs; the cnn is trained
    # and attacked once more (the study's targeted BIM), the label model's ARA and both curves come on top.
    assert job_counts(out.stdout + out.stderr) == {
        "label_set": 4, "train": 8 + 1, "attack": 4 * len(ATTACKS) + 1, "label_stats": 1, "label_attack_table": 1,
        "label_efficiency": 1, "labels": 1, "ara": 1, "robustness": 2, "total": 16 + 4 * len(ATTACKS) + 5}
    r = workdir / "results"
    for path in [*(f"figures/labels/accuracy_vs_eps_{a}" for a in ATTACKS), "figures/labels/label_images",
                 "figures/labels/data_efficiency"]:
        for ext in ("pdf", "png"):
            assert (r / f"{path}.{ext}").stat().st_size > 1000
    # Every job has its log and benchmark.
    for label in labels:
        assert (workdir / f"logs/labels/set/{label}.log").is_file()
        for a in ATTACKS:
            assert (workdir / f"logs/attack/{label_model_name(label, 100)}/{label_attack_name(a)}.log").is_file()
        for level in (100, 50):
            assert (workdir / f"benchmarks/train/{label_model_name(label, level)}.tsv").is_file()


@pytest.mark.slow
def test_study_tables(study, one_thread):
    workdir, config, _ = study
    r = workdir / "results/labels"
    attacks = pd.read_csv(r / "attacks.csv")
    assert len(attacks) == 4 * len(ATTACKS) * len(EPS)
    assert set(attacks.label) == {*KINDS, "mine"} and (attacks.level == 100).all() and (attacks.n_images == 60).all()
    assert (attacks.accuracy <= attacks.clean_accuracy).all()
    no_attack = attacks[attacks.eps == 0]  # not attacked, as the original
    assert (no_attack.accuracy == no_attack.clean_accuracy).all()
    # Independent of the stage: each table row recomputed from the trained checkpoint with the originals'
    # batch-size-1 attacks, decoding and counting (tests/spec3_reference.py), and the dump's per-image flags too.
    cfg = validate(yaml.safe_load(open(config)))
    seed = cfg["seed"]
    test = load_split(cfg["datasets"]["digits"], "test", cfg["data_root"], seed)
    results = workdir / "results"
    for (label, attack), rows in attacks.groupby(["label", "attack"]):
        path = results / "attacks" / label_model_name(label, 100) / f"{label_attack_name(attack)}.h5"
        dump = read_dump(path)
        assert list(read_attrs(path)["eps"]) == EPS
        assert len(dump["index"]) == 60 == len(set(dump["index"]))
        pos = np.array([np.flatnonzero(test.index == i)[0] for i in dump["index"]])
        x, y = test.x[pos], test.y[pos]
        assert np.array_equal(dump["label"], y.numpy())
        model = load_trained(results / "models" / label_model_name(label, 100))
        labels = getattr(model, "labels", None)  # None: the category model
        z = ref.normalize(model, x)
        targets = ref.original_targets(y, 10)
        if attack.endswith("_targeted"):
            assert np.array_equal(dump["target"], targets.numpy()) and (dump["target"] != dump["label"]).all()
        clean = ref.is_correct(model, z, y, labels)
        assert np.array_equal(dump["clean_correct"], clean.numpy())
        for row in rows.itertuples():
            assert row.clean_accuracy == pytest.approx(clean.sum().item() / 60, abs=1e-9)  # the CSV keeps 10 digits
            noise = None
            if row.attack == "pgd":  # the stage's start offsets: its seeded generator, one draw over the 60 images
                gen = torch.Generator().manual_seed(derive_seed(seed, "labels", "pgd", label, float(row.eps)))
                noise = ref.pgd_start_noise(z, row.eps, gen)
            still = ref.still_correct(model, z, y, row.eps, row.attack, labels, targets, noise)
            correct = dump["pred_eps"][:, EPS.index(row.eps)] == dump["label"]
            assert np.array_equal(correct, still.numpy()), row
            assert row.accuracy == pytest.approx((clean & still).sum().item() / 60, abs=1e-9), row
    assert (attacks.accuracy < attacks.clean_accuracy).any()  # the attacks flip some images

    eff = pd.read_csv(r / "data_efficiency.csv")
    assert len(eff) == 8 and set(eff.level) == {100, 50}
    # 1257 training images: 126 held out, then int(1257 * level / 100) taken.
    assert set(eff.train_images) == {1131, 628}
    assert eff.val_accuracy.between(0, 1).all() and eff.best_epoch.between(1, 3).all()

    stats = pd.read_csv(r / "label_stats.csv").set_index("label")
    assert stats.loc["category", "entropy"] == pytest.approx(0.469, abs=1e-3)  # SPEC 3 table: 0.47
    assert stats.loc["composite", "shape"] == "10x64x64" and stats.loc["mine", "shape"] == "10x5"
    assert stats.loc["mine", "entropy"] == pytest.approx(np.log2(5))  # 5 distinct values per class


@pytest.mark.slow
def test_shared_rules_apply_across_studies(study):
    """The label model's ARA and the study's grid attack on a plain CNN, from the shared rules: the ARA table
    has its two rows, the CNN's curve is the grid of the attack with the clean accuracy at eps 0."""
    workdir, _, _ = study
    r = workdir / "results"
    ara = pd.read_csv(r / "ara" / LABEL_MODEL / "ara.csv")
    assert len(ara) == 1 and ara.n_images.iloc[0] == 30
    assert 0 <= ara.attack_ara.iloc[0] <= 1 and 0 <= ara.btr_ara.iloc[0] <= 1
    assert ara.accuracy.iloc[0] > 0.5  # the label model is a classifier ARA can search on
    for model in ("cnn", LABEL_MODEL):
        curve = pd.read_csv(r / "robustness" / model / "labels_bim_targeted.csv")
        dump = read_dump(r / "attacks" / model / "labels_bim_targeted.h5")
        assert list(curve.eps) == EPS and (curve.n == 60).all()
        assert curve.robust_accuracy.iloc[0] == pytest.approx(dump["clean_correct"].mean())
        assert (r / "figures" / "robustness" / model / "labels_bim_targeted.png").stat().st_size > 1000


@pytest.mark.slow
def test_user_label_file_is_used_as_given(study):
    workdir, _, _ = study
    model = load_trained(workdir / "results/models" / label_model_name("mine", 100))
    assert np.array_equal(model.labels.numpy(), np.load(workdir / "mine.npy"))
    assert np.array_equal(np.load(workdir / "results/labels/sets/mine.npy"), np.load(workdir / "mine.npy"))


@pytest.mark.slow
def test_study_rerun_has_nothing_to_do(study):
    workdir, config, _ = study
    out = snakemake(workdir, "labels", "--dry-run", configfile=config)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_missing_label_file_fails_before_any_job(tmp_path):
    config = study_config(tmp_path, tmp_path / "absent.npy")
    out = snakemake(tmp_path, "labels", "--dry-run", configfile=config, check=False)
    assert out.returncode != 0
    assert "absent.npy" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_paper_config_dry_run_job_counts(tmp_path):
    out = snakemake(tmp_path, "--dry-run", configfile=ROOT / "config/paper/labels.yaml")
    # 22 label kinds (7 of the paper, 11 normal_dim, 4 uniform_gap) x 7 levels trained; the full-data models
    # attacked by the 5 SPEC 3 attacks (shared train and attack rules); one table of each kind.
    # The matrix: the 22 attacked models represented, ARA'd and aligned; the references and the run cost.
    assert job_counts(out.stdout) == {"all": 1, "label_set": 22, "train": 154, "attack": 110,
                                      "label_stats": 1, "label_attack_table": 1, "label_efficiency": 1,
                                      "represent": 22, "ara": 22, "alignment": 22, "matrix_table": 1,
                                      "references": 1, "run_cost": 1, "total": 359}
