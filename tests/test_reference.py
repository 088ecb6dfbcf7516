"""The reference numbers (config/reference/*.csv) hold SPEC.md's numbers; the loader refuses malformed rows naming
file and line; the join pairs hand-made reproduced tables with the references, with reasons for what is missing."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from advpipe import reference as ref
from advpipe.labels.study import label_model_name

ROOT = Path(__file__).resolve().parents[1]
REF_DIR = ROOT / "config" / "reference"


@pytest.fixture(scope="module")
def refs():
    return ref.load_references()


def value(refs, table, row, metric, eps=None, level=None):
    sel = refs[(refs["table"] == table) & (refs["row"] == row) & (refs["metric"] == metric)]
    if eps is not None:
        sel = sel[[math.isclose(e, eps) for e in sel["eps"]]]
    if level is not None:
        sel = sel[[math.isclose(lv, level) for lv in sel["level"]]]
    assert len(sel) == 1, (table, row, metric, eps, level, len(sel))
    return sel.iloc[0]


# ---- the CSVs hold SPEC.md's numbers (typed here from SPEC.md) ---------------------------------------------------------
@pytest.mark.parametrize("table,row,metric,eps,level,expected,stated", [
    # SPEC 2, README table
    ("explanations_readme", "resnet44-standard", "accuracy", None, None, 0.9384, "0.9384"),
    ("explanations_readme", "resnet44-adv-train", "btr_ara", None, None, 0.0157, "0.0157"),
    ("explanations_readme", "resnet44-all", "final_psi", None, None, 14240, "14240"),
    ("explanations_readme", "resnet44-robust", "attack_ara", None, None, 0.0142, "0.0142"),
    # SPEC 3, cdu890's headline table, PGD, entropy, overlap, validation, data efficiency, statistics
    ("labels_attacks", "category", "fgsm", 0.05, 100, 0.150, ".150"),
    ("labels_attacks", "random", "bim", 0.2, 100, 0.515, ".515"),
    ("labels_attacks", "composite", "bim_targeted", 0.3, 100, 0.114, ".114"),
    ("labels_attacks", "glove", "fgsm_targeted", 0.1, 100, 0.361, ".361"),
    ("labels_attacks", "category", "bim", 0.3, 100, 0.0, "0"),
    ("labels_attacks", "uniform", "pgd", 0.3, 100, 0.178, ".178"),
    ("labels_entropy", "normal_dim=1000", "fgsm", 0.05, 100, 0.344, ".344"),
    ("labels_overlap", "uniform_gap=0.1", "bim_targeted", 0.3, 100, 0.204, ".204"),
    ("labels_validation", "uniform", "val_accuracy", None, 100, 0.767, "0.767"),
    ("labels_data_efficiency", "shuffle", "val_accuracy", None, 10, 0.745, ".745"),
    ("labels_data_efficiency_vgg19", "speech", "val_accuracy", None, 2, 0.458, ".458"),
    ("labels_stats", "shuffle", "L1", None, None, 35.26, "35.26"),
    # SPEC 4, the ALP release
    ("lesci_alp", "ALP ResNet-v2-50", "accuracy_pgdll_16_1_20", None, None, 0.413, "41.3%"),
    ("lesci_alp", "baseline", "accuracy", None, None, 0.692, "69.2%"),
    # SPEC 5, README table and the estimators
    ("direction_sphere", "L_alpha", "eps50_pgd_linf", None, None, 0.0077, "0.0077"),
    ("direction_sphere", "PGD", "eps50_pgd_l2", None, None, 0.127, "0.127"),
    ("direction_square", "L_alpha", "alpha_dx", None, None, 0.927, "0.927"),
    ("direction_mnist35", "baseline", "accuracy", None, None, 0.997, "99.7%"),
    ("direction_cifar10", "PGD", "alpha_x", None, None, 0.0305, "0.0305"),
    ("direction_mnist", "PGD", "eps50_square", None, None, 0.49, "0.49"),
    ("direction_estimators", "Square32 (indirect, cgan)", "sim_dx", None, None, 0.608, "0.608"),
])
def test_csvs_hold_spec_numbers(refs, table, row, metric, eps, level, expected, stated):
    r = value(refs, table, row, metric, eps, level)
    assert math.isclose(r["value"], expected, rel_tol=1e-12, abs_tol=1e-15)
    assert r["stated"] == stated
    assert r["source"].startswith("SPEC.md")


def test_csvs_cover_spec_tables(refs):
    counts = refs.groupby("table").size().to_dict()
    assert counts["labels_attacks"] == 9 * 4 * 5 + 9 * 2   # 9 labels x 4 attacks x 5 eps, and PGD at 2 eps
    assert counts["explanations_readme"] == 4 * 5
    assert all(counts[f"direction_{d}"] == 3 * 6 for d in ("sphere", "square", "mnist35", "mnist", "cifar10"))
    assert counts["labels_data_efficiency"] == 4 * 6
    assert set(refs["study"]) == set(ref.STUDIES)
    # SPEC 1 states no POP numbers: the vrapi rows carry none, and say why
    vrapi = refs[refs["study"] == "vrapi"]
    assert len(vrapi) == 14 and vrapi["value"].isna().all() and (vrapi["note"].str.contains("not in the repository")).all()
    # the paper run's scale travels with the numbers
    sphere = value(refs, "direction_sphere", "baseline", "accuracy")
    assert (sphere["dataset"], sphere["epochs"], sphere["n"]) == ("Spheres (d=500)", 80, 1000)
    attack = value(refs, "labels_attacks", "speech", "fgsm", 0.3, 100)
    assert (attack["architecture"], attack["epochs"], attack["n"]) == ("ResNet-32", 200, 10000)
    # every table of the CSVs has a declared reproduced counterpart (or none, on purpose)
    assert set(refs["table"]) == set(ref.SOURCES)


# ---- the loader refuses malformed files, naming file and line ----------------------------------------------------------
def _copy_with(tmp_path, name, edit):
    path = tmp_path / name
    lines = (REF_DIR / name).read_text().splitlines()
    lines = edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda ls: ls[:3] + [ls[3].replace(",0.9384,", ",0.9385,")] + ls[4:], "line 4: value '0.9385' disagrees"),
    (lambda ls: ls[:3] + [ls[3].replace(",0.9384,0.9384,", ",abc,0.9384,")] + ls[4:], "line 4: value 'abc' is not"),
    (lambda ls: ls[:5] + [ls[5].replace("explanations,", "explanation,", 1)] + ls[6:], "line 6: unknown study"),
    (lambda ls: ls[:2] + [ls[2].replace("SPEC.md 2", "the paper")] + ls[3:], "line 3: source"),
    (lambda ls: ls[:2] + [ls[2][: ls[2].index(',"prebuilt')] + ',""'] + ls[3:], "line 3: empty value without a note"),
    (lambda ls: ls + [ls[4]], "line 22: the same (table, row, metric, eps, level) as"),
    (lambda ls: [ls[0].replace(",stated", ",said")] + ls[1:], "line 1: missing column(s) ['stated']"),
    (lambda ls: ls[:7] + [ls[7] + ",extra"] + ls[8:], "line 8: 14 columns expected"),
])
def test_loader_names_file_and_line(tmp_path, edit, message):
    path = _copy_with(tmp_path, "explanations.csv", edit)
    with pytest.raises(ref.ReferenceError) as err:
        ref.load_references([path])
    assert str(path) in str(err.value) and message in str(err.value)


def test_loader_refuses_duplicates_across_files(tmp_path):
    shutil.copy(REF_DIR / "lesci.csv", tmp_path / "a.csv")
    shutil.copy(REF_DIR / "lesci.csv", tmp_path / "b.csv")
    with pytest.raises(ref.ReferenceError, match=r"b\.csv: line 2: the same .* as .*a\.csv: line 2"):
        ref.load_references([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_parse_stated():
    assert ref.parse_stated("99.7%") == pytest.approx(0.997)
    assert ref.parse_stated(".880") == 0.88
    assert ref.parse_stated("N/A") is None and ref.parse_stated("") is None


# ---- the join on small hand-made reproduced tables --------------------------------------------------------------------
def _config():
    sphere = {"dataset": "spheres", "arch": "mlp", "train": {"epochs": 10}}
    labels = {f"labels_{k}_{lv}": {"dataset": "digits", "arch": "small_cnn", "train": {"epochs": 30}}
              for k in ("category", "random") for lv in (100, 20)}
    return {
        "datasets": {"spheres": {"source": "spheres"}, "digits": {"source": "digits"}},
        "models": {"sphere_baseline": sphere, "sphere_lalpha": sphere, "sphere_pgd": sphere,
                   "preact_standard": {"dataset": "digits", "arch": "preact_resnet", "train": {"epochs": 15}},
                   "digits_cnn": {"dataset": "digits", "arch": "small_cnn", "train": {"epochs": 30}}, **labels},
        "attacks": {"s_linf": {"method": "pgd", "eps": [0.01]}, "s_l2": {"method": "pgd", "norm": "l2"},
                    "s_sq": {"method": "square"}, "s_fgsm": {"method": "fgsm"}},
        "vrapi": {"enabled": True, "models": ["digits_cnn"]},
        "direction": {"enabled": True, "groups": {"spheres": {"models": ["sphere_baseline", "sphere_lalpha"],
                                                             "attacks": ["s_linf", "s_fgsm", "s_l2", "s_sq"]}}},
        "references": {
            "direction_sphere": {"baseline": "sphere_baseline", "L_alpha": "sphere_lalpha", "PGD": "sphere_pgd"},
            "explanations_readme": {"resnet44-standard": "preact_standard"},
            "labels_attacks": {"category": "labels_category_100", "random": "labels_random_100"},
            "labels_data_efficiency": {"category": "labels_category_100"},
            "labels_stats": {"random": "labels_random_100"},
            "vrapi_pop": {"pca": "pca", "tsne": "tsne"},
        },
    }


@pytest.fixture
def tables(tmp_path):
    d = tmp_path
    pd.DataFrame({"model": ["sphere_baseline", "sphere_lalpha"], "accuracy": [0.97, 0.99],
                  "alpha_dx": [0.5, 0.8], "alpha_x": [0.4, 0.7], "dx_source": ["exact", "exact"],
                  "eps50_s_linf": [0.004, 0.006], "eps50_s_fgsm": [9.0, 9.0], "eps50_s_l2": [0.08, 0.11],
                  "eps50_s_sq": [0.005, 0.007]}).to_csv(d / "spheres.csv", index=False)
    pd.DataFrame({"model": ["preact_standard"], "n_images": [200], "accuracy": [0.95], "attack_ara": [0.02],
                  "btr_ara": [0.03]}).to_csv(d / "ara.csv", index=False)
    rows = [{"label": lab, "level": 100.0, "attack": a, "eps": e, "accuracy": acc, "clean_accuracy": 0.9,
             "n_images": 270}
            for lab, acc in (("category", 0.2), ("random", 0.6)) for a in ("fgsm", "bim") for e in (0.0, 0.05, 0.1)]
    pd.DataFrame(rows).to_csv(d / "attacks.csv", index=False)
    pd.DataFrame({"label": ["category", "category", "random", "random"], "level": [20.0, 100.0, 20.0, 100.0],
                  "train_images": [1, 2, 3, 4], "best_epoch": [1, 1, 1, 1], "val_accuracy": [0.71, 0.9, 0.6, 0.85],
                  "val_loss": [1, 1, 1, 1], "test_accuracy": [0.7, 0.9, 0.6, 0.85]}).to_csv(d / "eff.csv", index=False)
    pd.DataFrame({"label": ["category", "random"], "shape": ["10", "10x64x64"], "min": [0, 0], "max": [1, 80],
                  "mean": [0.1, 40], "std": [0.3, 23], "entropy": [0.47, 12.0], "L1": [1.41, 25.0],
                  "L2": [2.0, 6.3]}).to_csv(d / "stats.csv", index=False)
    pd.DataFrame({"model": ["digits_cnn"] * 2, "projection": ["tsne", "pca"], "mean_fgsm": [0.9, 0.5],
                  "std_fgsm": [0.0, 0.0], "mean_mean": [0.9, 0.5]}).to_csv(d / "stats_vrapi.csv", index=False)
    return {"direction": {"spheres": str(d / "spheres.csv")}, "explanations": str(d / "ara.csv"),
            "labels_attacks": str(d / "attacks.csv"), "labels_efficiency": str(d / "eff.csv"),
            "labels_stats": str(d / "stats.csv"), "vrapi": str(d / "stats_vrapi.csv")}


def pick(joined, table, row, metric, eps=None, level=None):
    sel = joined[(joined["table"] == table) & (joined["row"] == row) & (joined["metric"] == metric)]
    if eps is not None:
        sel = sel[[math.isclose(e, eps) for e in sel["eps"]]]
    if level is not None:
        sel = sel[[math.isclose(lv, level) for lv in sel["level"]]]
    assert len(sel) == 1, (table, row, metric, len(sel))
    return sel.iloc[0]


def test_join_pairs_and_reasons(refs, tables):
    context = ref.run_context(_config())
    joined = ref.join(refs, tables, context)
    assert list(joined.columns) == list(ref.OUT_COLUMNS)
    # direction: the group's PGD L-inf / L2 / Square attacks give SPEC 5's eps50 columns; fgsm gives none
    r = pick(joined, "direction_sphere", "L_alpha", "eps50_pgd_linf")
    assert (r["reference"], r["reproduced"], r["reproduced_model"]) == (0.0077, 0.006, "sphere_lalpha")
    assert r["reproduced_file"].endswith("spheres.csv") and r["reason"] == ""
    assert (r["paper_dataset"], r["run_dataset"], r["run_dataset_source"], r["run_architecture"], r["run_epochs"]) == (
        "Spheres (d=500)", "spheres", "spheres", "mlp", 10)
    assert pick(joined, "direction_sphere", "baseline", "eps50_pgd_l2")["reproduced"] == 0.08
    assert pick(joined, "direction_sphere", "baseline", "eps50_square")["reproduced"] == 0.005
    assert pick(joined, "direction_sphere", "baseline", "accuracy")["reproduced"] == 0.97
    # mapped to a model that is in the config but not in the group's table
    r = pick(joined, "direction_sphere", "PGD", "alpha_dx")
    assert pd.isna(r["reproduced"]) and "'sphere_pgd' is not in the run's direction table" in r["reason"]
    # a table with no mapping
    r = pick(joined, "direction_square", "baseline", "accuracy")
    assert pd.isna(r["reproduced"]) and "references.direction_square" in r["reason"]
    # explanations: accuracy and ARAs with n; the README's train loss is not reproduced
    r = pick(joined, "explanations_readme", "resnet44-standard", "attack_ara")
    assert (r["reference"], r["reproduced"], r["run_n"], r["run_architecture"]) == (0.0013, 0.02, 200, "preact_resnet")
    r = pick(joined, "explanations_readme", "resnet44-standard", "final_train_loss")
    assert pd.isna(r["reproduced"]) and "metric 'final_train_loss'" in r["reason"]
    # labels: label model names, eps matched, eps not in the run's grid named
    r = pick(joined, "labels_attacks", "random", "bim", 0.05)
    assert (r["reference"], r["reproduced"], r["reproduced_model"]) == (0.615, 0.6, label_model_name("random", 100))
    r = pick(joined, "labels_attacks", "category", "fgsm", 0.3)
    assert pd.isna(r["reproduced"]) and "eps 0.3 is not in the run's grid (0, 0.05, 0.1)" in r["reason"]
    r = pick(joined, "labels_attacks", "category", "pgd", 0.05)
    assert "metric 'pgd'" in r["reason"]
    # data efficiency: the mapped model names the label; each paper level pairs with that label's model at it
    r = pick(joined, "labels_data_efficiency", "category", "val_accuracy", level=20)
    assert (r["reference"], r["reproduced"], r["reproduced_model"]) == (0.796, 0.71, "labels_category_20")
    r = pick(joined, "labels_data_efficiency", "category", "val_accuracy", level=4)
    assert "not reproduced at level 4 (levels: 20, 100)" in r["reason"]
    r = pick(joined, "labels_stats", "random", "entropy")
    assert (r["reference"], r["reproduced"]) == (12.0, 12.0)
    # vrapi: no reference number, the reproduced score and rank shown with the reason
    r = pick(joined, "vrapi_pop", "pca", "rank")
    assert pd.isna(r["reference"]) and r["reproduced"] == 2 and r["reproduced_model"] == "digits_cnn"
    assert "no reference number" in r["reason"]
    assert pick(joined, "vrapi_pop", "tsne", "mean_mean")["reproduced"] == 0.9
    # no table of the run for LESCI's ALP numbers
    assert "no table of the run" in pick(joined, "lesci_alp", "baseline", "accuracy")["reason"]


def test_join_disabled_study_and_bad_mapping(refs, tables):
    context = ref.run_context(_config())
    joined = ref.join(refs, {k: v for k, v in tables.items() if k != "direction"}, context)
    r = pick(joined, "direction_sphere", "baseline", "accuracy")
    assert pd.isna(r["reproduced"]) and "the run has no direction table" in r["reason"]
    bad = _config()
    bad["references"]["direction_sphere"]["baseline"] = "sphere_nope"
    with pytest.raises(ref.ReferenceError, match=r"'references\.direction_sphere\.baseline': 'sphere_nope' is not a model"):
        ref.run_context(bad)
    bad = _config()
    bad["references"]["direction_sphere"] = {"Baseline": "sphere_baseline"}
    with pytest.raises(ref.ReferenceError, match=r"'references\.direction_sphere\.Baseline': table .* has no row"):
        ref.join(refs, tables, ref.run_context(bad))


def test_run_writes_table_and_figure(tmp_path, tables):
    joined = ref.run(references=ref.reference_files(), tables=tables, context=ref.run_context(_config()),
                     out_csv=tmp_path / "references.csv", figure_stem=tmp_path / "references", log=lambda _: None)
    back = pd.read_csv(tmp_path / "references.csv")
    assert len(back) == len(joined) and (tmp_path / "references.pdf").stat().st_size > 0
    assert (tmp_path / "references.png").stat().st_size > 0


def _default_mapping():
    """config.yaml's `references` block (read from its commented form until the schema has the key)."""
    import yaml
    text = (ROOT / "config.yaml").read_text()
    parsed = yaml.safe_load(text) or {}
    if "references" in parsed:
        return parsed["references"]
    block = text[text.index("# references:"):]
    return yaml.safe_load("\n".join(line[2:] for line in block.splitlines() if line.startswith("# ")))["references"]


def test_default_mapping_names_real_rows_and_models(refs):
    import advpipe.config as C
    raw = C.compose([ROOT / "config.yaml"], {})
    raw.pop("references", None)
    config = C.validate(raw, C.load_schema(ROOT / "config/schema.yaml"))
    config["references"] = _default_mapping()
    context = ref.run_context(config)   # every mapped name is a model (or projection) of the default
    ref.check_mapping(refs, context["mapping"])   # every table and paper row exists
    assert context["mapping"]["labels_overlap"] == {"uniform_gap=1": label_model_name("uniform_gap=1", 100)}
    assert context["direction"]["spheres"]["attacks"] == {"sphere_linf": "eps50_pgd_linf", "sphere_l2": "eps50_pgd_l2",
                                                          "sphere_square": "eps50_square"}
