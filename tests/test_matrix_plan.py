"""The matrix's plan (advpipe.pipeline.matrix_plan): which dump gives which metric of each model of the default
config, or why none does; seed copies; the config checks of the matrix and drift sections."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from advpipe.config import ConfigError, read, validate
from advpipe.pipeline.matrix_plan import METRICS, inputs, plan

ROOT = Path(__file__).resolve().parents[1]
# a source key of the plan for each metric (masking: the alignment summary at least)
SOURCE = {"accuracy": "accuracy", "robust_accuracy_linf": "linf", "eps50_linf": "linf", "robust_accuracy_l2": "l2",
          "eps50_l2": "l2", "ara_attack": "ara", "ara_btr": "ara", "alpha_x": "alignment", "alpha_dx": "alignment",
          "pop": "pop", "lesci_accuracy": "lesci", "masking": "alignment", "drift": "drift"}


@pytest.fixture(scope="module")
def default():
    config = validate(read(ROOT / "config.yaml"))
    copies = lambda m: [m] + [c for c, e in config["models"].items() if e.get("seed_of") == m]  # noqa: E731
    return config, plan(config, config["matrix"]["models"], "R", copies)


def test_every_metric_of_every_model_has_a_source_or_a_reason(default):
    config, the_plan = default
    assert list(the_plan) == config["matrix"]["models"]
    for model, copies in the_plan.items():
        for copy_name, spec in copies.items():
            for metric in METRICS:
                has_file, reason = SOURCE[metric] in spec["files"], spec["reasons"].get(metric)
                if metric == "alpha_dx" and reason:  # the alignment file is read for alpha_x anyway
                    continue
                assert has_file != bool(reason), (copy_name, metric, spec)


def test_reasons_follow_the_models(default):
    config, p = default
    assert list(p["square32_baseline"]) == ["square32_baseline", "square32_baseline_s1"]
    assert config["models"]["square32_baseline_s1"]["streams"]["train"] == "train/square32_baseline/seed1"
    lesci = p["digits_cnn_lesci"]["digits_cnn_lesci"]
    assert "ara" not in lesci["files"] and "LESCI" in lesci["reasons"]["ara_attack"]
    assert set(p["digits_cnn"]["digits_cnn"]["files"]["lesci"]) == {"digits_cnn_lesci", "digits_cnn_lesci_conv"}
    assert p["preact_adv"]["preact_adv"]["reasons"]["lesci_accuracy"].startswith("no LESCI defense of 'preact_adv'")
    # ground-truth dx on the synthetic data, an estimator's on digits, none on the label models' digits? (same dataset)
    assert "alpha_dx" not in p["sphere_baseline"]["sphere_baseline"]["reasons"]
    assert "alpha_dx" not in p["digits_cnn"]["digits_cnn"]["reasons"]  # direction.estimates.digits
    assert p["square32_baseline"]["square32_baseline"]["reasons"]["pop"] == "matrix.grids.square32 names no pop attack"
    assert p["square32_baseline"]["square32_baseline"]["reasons"]["eps50_l2"] == \
        "matrix.grids.square32 names no l2 attack"
    drifted = {c for copies in p.values() for c, spec in copies.items() if "drift" in spec["files"]}
    assert drifted == set(config["drift"]["models"])
    assert p["preact_adv"]["preact_adv"]["reasons"]["drift"] == "not in drift.models"
    label = p["labels_category_100"]["labels_category_100"]["files"]
    assert label["linf"] == "R/attacks/labels_category_100/pgd_grid.h5"
    assert label["pop"]["projection"] == "R/projections/labels_category_100/fgsm/pca/0.h5"


def test_inputs_cover_the_chosen_metrics_only(default):
    _, p = default
    only_accuracy = inputs(p, ["accuracy"])
    assert all(f.endswith("/test.h5") and f.startswith("R/representations/") for f in only_accuracy)
    assert len(only_accuracy) == sum(len(c) for c in p.values())
    every = inputs(p, list(METRICS))
    assert "R/drift/sphere_baseline.csv" in every and "R/ara/digits_cnn_lesci/ara.csv" not in every
    assert "R/lesci/digits_cnn_lesci_conv/test_metrics.csv" in every


def _bad(change) -> str:
    raw = copy.deepcopy(read(ROOT / "config.yaml"))
    change(raw)
    with pytest.raises(ConfigError) as err:
        validate(raw)
    return str(err.value)


def test_bad_matrix_and_drift_sections_fail_naming_the_key():
    assert "config key 'matrix.models.17': unknown model 'nope'" in _bad(lambda c: c["matrix"]["models"].append("nope"))
    assert "config key 'drift.models.0': unknown model 'x'" in _bad(lambda c: c["drift"].update(models=["x"]))
    assert "config key 'matrix.grids.mnist': unknown dataset 'mnist'" in _bad(
        lambda c: c["matrix"]["grids"].update(mnist={"linf": "pgd_grid"}))
    assert "config key 'matrix.grids.digits.l2': unknown attack 'zz'" in _bad(
        lambda c: c["matrix"]["grids"]["digits"].update(l2="zz"))
    assert "attack 'pgd_grid' has an eps grid" in _bad(lambda c: c["matrix"]["grids"]["digits"].update(pop="pgd_grid"))
    assert "config key 'matrix.pop_projection': unknown joint projection 'pca_oos'" in _bad(
        lambda c: c["matrix"].update(pop_projection="pca_oos"))
    assert "config key 'matrix.metrics.0'" in _bad(lambda c: c["matrix"].update(metrics=["accuracyy"]))


def test_seed_copies_of_a_defense_or_a_taken_name_are_refused():
    assert "only a trained model has seed copies" in _bad(
        lambda c: c["models"]["digits_cnn_lesci"].update(seeds=[0, 1]))
    assert "which is taken by another model" in _bad(
        lambda c: (c["models"]["digits_cnn"].update(seeds=[0, 3]),
                   c["models"].update(digits_cnn_s3=dict(c["models"]["digits_cnn_alp"]))))
