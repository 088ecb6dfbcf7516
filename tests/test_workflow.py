"""The real workflow: snakemake runs a tiny config end to end in a temporary directory."""
import shutil
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from wf import ROOT, TINY, job_counts, snakemake

PROJECTIONS = ["pca", "umap", "tsne", "parametric_umap", "pca_oos", "umap_oos", "parametric_umap_oos"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory):
    """A copy of the session's tiny run (times and snakemake's metadata kept), free to be changed."""
    workdir = tmp_path_factory.mktemp("workflow") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


def test_every_target_with_expected_contents(run_dir):
    r = run_dir / "results"
    assert (r / "models/cnn/model.pt").exists() and (r / "models/cnn/train_log.csv").exists()
    epochs = yaml.safe_load(TINY.read_text())["models"]["cnn"]["train"]["epochs"]
    assert pd.read_csv(r / "models/cnn/train_log.csv").epoch.tolist() == list(range(1, epochs + 1))
    with h5py.File(r / "representations/cnn/test.h5") as f:
        n = f["index"].shape[0]
        assert n == 180  # 10% of 1797 digits, stratified
        assert f["features"].shape == (n, 32) and f["logits"].shape == (n, 10) and f["proba"].shape == (n, 10)
        assert set(f) >= {"label", "pred", "correct"} and "config" in f.attrs and f.attrs["seed"] == 3
        n_correct = int(f["correct"][()].sum())
    assert pd.read_csv(r / "representations/cnn/test_eval.csv").correct[0] == n_correct
    for attack in ("fgsm", "cw"):
        with h5py.File(r / f"attacks/cnn/{attack}.h5") as f:
            assert f["x_adv"].shape == (n_correct, 1, 8, 8)
            assert f["features"].shape == (n_correct, 32)
            for key in ("pred", "success", "norm_L0", "norm_L1", "norm_L2", "norm_Linf", "norm_RMS", "index"):
                assert f[key].shape == (n_correct,), key
        assert (r / f"attacks/cnn/{attack}_norms_stats.csv").exists()
        assert len(list((r / f"attacks/cnn/{attack}_images").glob("*/*.png"))) > 0
        for projection in PROJECTIONS:
            for trial in (0, 1):
                with h5py.File(r / f"projections/cnn/{attack}/{projection}/{trial}.h5") as f:
                    assert f["clean"].shape == (n_correct, 2) and f["adv"].shape == (n_correct, 2)
    scores = pd.read_csv(r / "scores/vrapi/scores.csv")
    assert len(scores) == 2 * 7 * 2 and scores.value.between(0, 1).all()
    stats = pd.read_csv(r / "scores/vrapi/score_stats.csv")
    assert len(stats) == 7 and stats.mean_mean.is_monotonic_decreasing
    figures = r / "figures/vrapi/cnn/fgsm/pca_oos"
    assert (figures / "non_adversarial.pdf").exists() and (figures / "non_adversarial_with_legend.png").exists()
    assert Path(run_dir / "logs/train/cnn.log").exists() and Path(run_dir / "benchmarks/train/cnn.tsv").exists()


def test_second_run_has_nothing_to_do(run_dir):
    out = snakemake(run_dir, "--dry-run")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_deleting_one_projection_reruns_only_it_and_the_scores(run_dir):
    """Asking for the study's results (`snakemake vrapi`, or plain `snakemake`) after deleting one file."""
    victim = run_dir / "results/projections/cnn/cw/umap/1.h5"
    before = victim.read_bytes()
    other = run_dir / "results/projections/cnn/cw/umap/0.h5"
    other_mtime = other.stat().st_mtime_ns
    victim.unlink()
    dry = snakemake(run_dir, "--dry-run", "vrapi")
    assert job_counts(dry.stdout) == {"project": 1, "score": 1, "vrapi": 1, "total": 3}
    # everything: the reference table reads the scores, the run cost every target
    assert job_counts(snakemake(run_dir, "--dry-run").stdout) == {"all": 1, "project": 1, "score": 1, "references": 1,
                                                                  "run_cost": 1, "total": 5}
    scores = run_dir / "results/scores/vrapi/scores.csv"
    scores_before = scores.read_bytes()
    snakemake(run_dir, "vrapi")
    assert victim.read_bytes() == before  # rebuilt alone, bit-identical
    assert other.stat().st_mtime_ns == other_mtime
    assert scores.read_bytes() == scores_before


def test_deleting_an_out_of_sample_projection_reruns_its_trial(run_dir):
    victim = run_dir / "results/projections/cnn/fgsm/pca_oos/0.h5"
    sibling = run_dir / "results/projections/cnn/cw/pca_oos/0.h5"  # made by the same job
    before, sibling_before = victim.read_bytes(), sibling.read_bytes()
    victim.unlink()
    dry = snakemake(run_dir, "--dry-run", "vrapi")
    # The job rewrites both attacks' files of trial 0, so both figure sets of pca_oos (trial 0) follow.
    assert job_counts(dry.stdout) == {"project_oos": 1, "score": 1, "plot": 2, "vrapi": 1, "total": 5}
    snakemake(run_dir, "vrapi")
    assert victim.read_bytes() == before and sibling.read_bytes() == sibling_before


def test_bad_config_fails_before_any_job(tmp_path):
    bad = yaml.safe_load(TINY.read_text())
    bad["attacks"]["fgsm"]["eps"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = snakemake(tmp_path, configfile=path, check=False)
    assert out.returncode != 0
    assert "attacks.fgsm.eps" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_lint_has_nothing_to_say(tmp_path):
    out = snakemake(tmp_path, "--lint", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations" in out.stdout + out.stderr


def test_paper_config_dry_run_job_counts(tmp_path):
    out = snakemake(tmp_path, "--dry-run", configfile=ROOT / "config/paper/vrapi.yaml")
    counts = job_counts(out.stdout)
    # 1 model; 3 attacks; 100 trials x (4 joint projections x 3 attacks + 3 out-of-sample projections fit
    # once per trial for all attacks) = 2,100 projection files; one figure set per attack x projection.
    # The matrix adds the model's ARA and alignment; the references and the run cost one job each.
    assert counts == {"all": 1, "train": 1, "represent": 1, "attack": 3, "project": 1200, "project_oos": 300,
                      "score": 1, "plot": 21, "ara": 1, "alignment": 1, "matrix_table": 1, "references": 1,
                      "run_cost": 1, "total": 1533}


def test_default_config_without_configfile(tmp_path):
    out = snakemake(tmp_path, "--dry-run", configfile=None)
    counts = job_counts(out.stdout)
    # vrapi's 4 joint projections of 3 attacks; the matrix's POP (pca of fgsm) of its 9 other digits models
    assert counts["project"] == 3 * 4 * 3 + 9 and counts["project_oos"] == 3 * 3
    # vrapi's CNN, the explanations study's four pre-activation ResNets, the LESCI study's 2 defended models and ALP,
    # the direction study's 3 sphere, 2 square32 and 2 digits-3/5 models; the matrix's 2 label models and the square32
    # models' seed copies
    assert counts["represent"] == 5 + 3 + 7 + 2 + 2 and counts["explain"] == 4
    # the matrix: ARA and alignment of its 17 models and 2 seed copies (ARA: not of the 2 LESCI models)
    assert counts["ara"] == 19 - 2 and counts["alignment"] == 19
    assert counts["matrix_table"] == counts["references"] == 1 and counts["drift"] == 2
    # the label study: 7 kinds x 2 levels trained by the shared train rule, the full-data models attacked by its
    # 5 attacks through the shared attack rule (vrapi: 3 attacks); the ALP CNN trained by it too, and the LESCI
    # study's PGD grid on 3 models and its battery of 3 foolbox attacks on 3 models through the shared attack rule
    assert counts["label_set"] == 7 and counts["train"] == 5 + 14 + 1 + 7 + 2
    # the direction study: spheres x (L-inf, L2, Square), square32 and digits 3/5 x one L-inf grid each; the digits
    # CNN and ALP reuse the LESCI study's PGD grid dumps and curves
    direction = 3 * 3 + 2 + 2
    # the matrix on its 10 digits models: the PGD grid where no study ran it (7), the L2 grid and the black-box grid
    # (10 each), FGSM for POP (9: vrapi has the CNN's); the square32 grid of the 2 seed copies
    matrix = 7 + 10 + 10 + 9 + 2
    assert counts["attack"] == 3 + 7 * 5 + 3 + 3 * 3 + direction + matrix and counts["robustness"] == 3 + direction
    assert counts["battery_model"] == 3
    assert counts["lesci_model"] == counts["lesci_eval"] == counts["lesci_activations"] == 2
    assert counts["lesci_grid"] == 1
    # three estimators of dx; vrgan_digits35 on both splits (the cosine penalty trains on its training split)
    assert counts["estimator_train"] == 3 and counts["estimate"] == 4 and counts["estimator_similarity"] == 1
    assert counts["direction_table"] == 4
