"""Shared fixtures: one-thread sections, and a small CNN trained in seconds on scikit-learn's digits."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from advpipe.data import load_split
from advpipe.models import build_model
from advpipe.train import train_classifier

DIGITS = {"source": "digits", "test_fraction": 0.3}
# No augmentation: the attack tests want a sharp model in few epochs.
QUICK_RECIPE = {"epochs": 8, "batch_size": 64, "optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0,
                "augment": {"crop_padding": 0, "hflip": False}}


def trained_digits_cnn(seed: int = 0):
    """(model in eval mode, x_test, y_test): small_cnn trained with advpipe's own loop on the digits split."""
    train, test = (load_split(DIGITS, s, "unused", seed) for s in ("train", "test"))
    torch.manual_seed(seed)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8)
    train_classifier(model, train.x, train.y, QUICK_RECIPE, seed, log=lambda _: None, progress=False)
    return model.eval(), test.x, test.y


@pytest.fixture(scope="module")
def one_thread():
    """torch, BLAS and OpenMP on one thread for a module: small kernels run fastest so, a busy 2-core machine
    does not stall spinning pools (10-40x slower), and determinism tests pin the thread count they hold for."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_model(one_thread):
    """(model, x_test, y_test, pred_test) for the attack tests; >90% test accuracy."""
    model, x, y = trained_digits_cnn()
    with torch.no_grad():
        pred = model(x).argmax(1)
    return model, x, y, pred


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted local run of tests/configs/tiny.yaml, the reference for the workflow tests.
    Read it, never change it: copy it first (shutil.copytree keeps times and snakemake's metadata)."""
    from wf import snakemake

    reuse = os.environ.get("ADVPIPE_TEST_TINY_RUN")  # a finished tiny run, to iterate on one workflow test
    if reuse:
        return Path(reuse)
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir)
    return workdir


FIVE_STUDIES = Path(__file__).parent / "configs" / "report_tiny.yaml"
# Asked for by name as well as through `all`, so the tests do not depend on which of them rule all lists.
FIVE_STUDIES_TARGETS = ("all", "results/report/run_cost.csv", "results/matrix/matrix.csv")


@pytest.fixture(scope="session")
def five_studies_run(tmp_path_factory):
    """One local run of tests/configs/report_tiny.yaml (all five studies and the matrix) and its report.html:
    (workdir, job counts). Shared by the report and the matrix tests; read it, never change it."""
    import time

    from wf import job_counts, snakemake

    workdir = tmp_path_factory.mktemp("five_studies")
    start = time.monotonic()
    out = snakemake(workdir, *FIVE_STUDIES_TARGETS, configfile=FIVE_STUDIES)
    print(f"report_tiny run: {time.monotonic() - start:.0f} s on 2 cores")
    snakemake(workdir, *FIVE_STUDIES_TARGETS, "--report", str(workdir / "report.html"), configfile=FIVE_STUDIES)
    return workdir, job_counts(out.stdout + out.stderr)
