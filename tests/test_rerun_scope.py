"""Stages take the resolved config entries they depend on as params (DESIGN "Rules and scripts"): a config
change reschedules exactly the jobs whose entries changed, and what depends on them. Real Snakemake dry-runs over
a completed run of the tiny config."""
from __future__ import annotations

import re

import pytest
import yaml

from wf import TINY, snakemake

pytestmark = pytest.mark.slow


def scheduled(workdir, tmp_path, change) -> dict[str, set[str]]:
    """rule -> the wildcards of the jobs a dry-run would run with the tiny config changed by `change(config)`."""
    config = yaml.safe_load(open(TINY))
    change(config)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    out = snakemake(workdir, "--dry-run", configfile=path)
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(head.group(1), set()).add(wildcards.group(1) if wildcards else "")
    return jobs


def test_nothing_changed_nothing_scheduled(tiny_run, tmp_path):
    assert "Nothing to be done" in snakemake(tiny_run, "--dry-run").stdout
    # the same config with its keys reordered (a YAML dump sorts them): the params are canonical
    assert scheduled(tiny_run, tmp_path, lambda c: None) == {}


def test_one_attack_changed_reruns_that_attack_and_its_downstream_only(tiny_run, tmp_path):
    jobs = scheduled(tiny_run, tmp_path, lambda c: c["attacks"]["fgsm"].update(eps=0.05))
    assert jobs["attack"] == {"model=cnn, attack=fgsm"}
    assert "train" not in jobs and "represent" not in jobs  # upstream of the attack: untouched
    # downstream: fgsm's joint projections (never cw's), the out-of-sample fits that serve every attack, the
    # scores and the figures
    assert jobs["project"] and all("attack=fgsm" in w for w in jobs["project"])
    assert "project_oos" in jobs and "score" in jobs and "plot" in jobs


def test_unrelated_model_added_reruns_nothing_of_this_one(tiny_run, tmp_path):
    other = {"dataset": "digits", "arch": "small_cnn", "train": {"epochs": 1}}
    jobs = scheduled(tiny_run, tmp_path, lambda c: c["models"].update(other=other))
    # the new model's own jobs only, and the run cost per rule, whose input is every target
    assert set(jobs) <= {"train", "represent", "all", "run_cost"}, jobs
    assert jobs["train"] == {"model=other"} and jobs["represent"] == {"model=other, split=test"}
