"""The arithmetic of bench/paper_scale.py (bench/paper_scale_model.py) on a fake dry run and a fake unit table: job
parsing, work items from the paper configs, job seconds, stage sums and DAG wall times. No timing, no torch work."""
import math
import sys
from pathlib import Path

import pytest

from advpipe import config as cfg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import paper_scale_model as psm  # noqa: E402

# The shape of `snakemake -n --cores 2` output (Snakemake 9): two trainings feeding an attack, and `all`.
DRY_RUN = """\
Building DAG of jobs...
Job stats:
job       count
------  -------
train         1
attack        1
all           1
total         3

[Thu Dec  3 17:24:24 2026]
rule train:
    output: results/models/m/model.pt, results/models/m/model.json, results/models/m/train_log.csv
    log: logs/train/m.log
    jobid: 2
    benchmark: benchmarks/train/m.tsv
    reason: Missing output files: results/models/m/model.pt
    wildcards: model=m
    threads: 2
    resources: tmpdir=/tmp, runtime=120, gpu=1, mem_mb=4000

[Thu Dec  3 17:24:24 2026]
rule attack:
    input: results/models/m/model.pt, results/models/m/model.json, results/representations/m/test.h5
    output: results/attacks/m/fgsm.h5, results/attacks/m/fgsm_images
    log: logs/attack/m/fgsm.log
    jobid: 4
    benchmark: benchmarks/attack/m/fgsm.tsv
    reason: Input files updated by another job: results/models/m/model.pt
    wildcards: model=m, attack=fgsm
    resources: tmpdir=/tmp

[Thu Dec  3 17:24:24 2026]
localrule all:
    input: results/attacks/m/fgsm.h5, results/attacks/m/fgsm_images/x.png
    jobid: 0
    reason: Input files updated by another job: results/attacks/m/fgsm.h5
    resources: tmpdir=/tmp
Job stats:
job       count
------  -------
train         1
attack        1
all           1
total         3
"""


def test_parse_dry_run_jobs_wildcards_threads_and_dependencies():
    jobs = psm.parse_dry_run(DRY_RUN)
    assert [(j.rule, j.jobid, j.threads) for j in jobs] == [("train", 2, 2), ("attack", 4, 1), ("all", 0, 1)]
    assert jobs[1].wildcards == {"model": "m", "attack": "fgsm"}
    assert jobs[0].benchmark == "benchmarks/train/m.tsv"
    assert psm.job_counts(jobs) == {"train": 1, "attack": 1, "all": 1, "total": 3}
    # the attack reads the model; `all` reads the attack's file and one inside its output folder
    assert psm.dependencies(jobs) == {2: set(), 4: {2}, 0: {4}}


def test_job_seconds_is_counts_times_units_and_names_what_is_missing():
    units = {"startup:train": 3.0, "train:x": 0.5}
    seconds, missing = psm.job_seconds([("startup:train", 1), ("train:x", 390), ("fwd:y", 10), ("fwd:z", 0)], units)
    assert seconds == 3.0 + 195.0
    assert missing == ["fwd:y"]


def test_schedule_chain_and_parallel_jobs():
    # a -> b, c independent; 2 cores: a (10 s) and c (4 s) together, then b (5 s): 15 s
    assert psm.schedule([(10.0, 1, set()), (5.0, 1, {0}), (4.0, 1, set())], 2) == 15.0
    # one core: everything in a row
    assert psm.schedule([(10.0, 1, set()), (5.0, 1, {0}), (4.0, 1, set())], 1) == 19.0
    # a 2-thread job holds both cores: nothing beside it
    assert psm.schedule([(10.0, 2, set()), (4.0, 1, set()), (4.0, 1, set())], 2) == 14.0
    # longest first: 3 x 6 s + 6 x 1 s on 3 cores fill 8 s (6 + two 1 s jobs per core)
    assert psm.lpt_wall([(6.0, 1)] * 3 + [(1.0, 1)] * 6, 3) == 8.0


def test_power_law_and_linear_fit_recover_their_parameters():
    c, p = psm.power_law([(n, 0.002 * n ** 1.5) for n in (250, 500, 1000)])
    assert c == pytest.approx(0.002) and p == pytest.approx(1.5)
    a, b = psm.linear_fit([(1, 3.0 + 2.0), (3, 3.0 + 6.0)])
    assert (a, b) == pytest.approx((3.0, 2.0))


def test_attack_iterations_of_the_paper_attacks():
    vrapi = cfg.load(ROOT / "config/paper/vrapi.yaml")["attacks"]
    assert psm.attack_iterations(vrapi["fgsm"]) == ("fgsm", 1, 0)
    assert psm.attack_iterations(vrapi["bim"]) == ("pgd", 10, 0)
    assert psm.attack_iterations(vrapi["cw"]) == ("cw", 5 * 1000, 0)  # 5 binary steps x 1000, no abort-early
    assert psm.attack_iterations({"method": "square", "n_queries": 5000}) == ("square", 5000, 0)
    # SPEC 3's grid: eps 0 is the clean input, not attacked
    assert psm.eps_count({"eps": [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]}) == 6 and psm.eps_count({"eps": 0.1}) == 1
    assert psm.attack_iterations({"method": "foolbox", "attack": "BoundaryAttack", "options": {"steps": 500}}) \
        == ("pgd", 0, 500)


@pytest.fixture(scope="module")
def vrapi_planner():
    paper = cfg.load(ROOT / "config/paper/vrapi.yaml")
    facts = {"cifar10": psm.DatasetFacts((3, 32, 32), 10, 50000, 10000)}
    return psm.Planner(paper, facts, default_accuracy=0.93)


def test_vrapi_jobs_priced_from_a_fake_unit_table(vrapi_planner):
    """The paper's train, C&W and t-SNE jobs: counts from config/paper/vrapi.yaml, times from made-up units."""
    jobs = [psm.Job(1, "train", {"model": "cifar10_resnet18"}, threads=1),
            psm.Job(2, "attack", {"model": "cifar10_resnet18", "attack": "cw"}, threads=1),
            psm.Job(3, "project", {"model": "cifar10_resnet18", "attack": "cw", "projection": "tsne", "trial": "0"}),
            psm.Job(4, "score", {}), psm.Job(5, "all", {})]
    specs = psm.plan_units(jobs, vrapi_planner)
    kinds = {s["kind"] for s in specs.values()}
    assert {"snakemake_job", "startup", "train", "fwd", "attack", "project", "score_file", "png"} <= kinds
    # a fake table: 1 s per training batch, 1 ms per forward sample, 10 ms per C&W iteration and sample, ...
    units = {}
    for key, spec in specs.items():
        units[key] = {"snakemake_job": 0.5, "startup": 2.0, "train": 1.0, "fwd": 0.001, "project": 600.0,
                      "score_file": 0.25, "png": 0.01, "attack": 0.01 if key.startswith("iter1") else 0.0}[spec["kind"]]
    pred = psm.predict(jobs, vrapi_planner, units)
    assert pred.unmodelled == {} and pred.missing == {}
    fixed = 0.5 + 2.0  # Snakemake's per-job share and the interpreter with the script's imports
    # train: 100 epochs x ceil(50000 / 128) = 39,100 batches; then test and train accuracy: 60,000 forwards
    assert pred.seconds[1] == pytest.approx(fixed + 100 * 391 * 1.0 + 60000 * 0.001)
    # C&W: 9,300 correctly classified images (0.93 x 10,000) x 5,000 iterations, their adversarial forward and
    # 100 PNGs per class
    assert pred.seconds[2] == pytest.approx(fixed + 9300 * 5000 * 0.01 + 9300 * 0.001 + 1000 * 0.01)
    assert pred.seconds[3] == pytest.approx(fixed + 600.0)
    # score: 3 attacks x 7 projections x 100 trials files
    assert pred.seconds[4] == pytest.approx(fixed + 2100 * 0.25)
    assert pred.seconds[5] == 0.0
    rows = psm.stage_table(jobs, pred.seconds, [2, 16])
    assert [r["stage"] for r in rows] == ["attack", "train", "project", "score"]
    assert rows[0]["job_s"] == pytest.approx(pred.seconds[2]) and rows[0]["wall_2"] == pytest.approx(pred.seconds[2])


def test_explanations_ara_and_label_training_work_items():
    paper = cfg.load(ROOT / "config/paper/explanations.yaml")
    facts = {"cifar10": psm.DatasetFacts((3, 32, 32), 10, 50000, 10000)}
    planner = psm.Planner(paper, facts)
    work = dict(planner.work(psm.Job(1, "ara", {"model": "resnet44_all"})))
    per_sample = [k for k in work if k.startswith("search0:")][0]
    per_step = [k for k in work if k.startswith("search1:")][0]
    # Attack and BTR ARA: 2 x 1000 images x (450 steps + the last evaluation)
    assert work[per_sample] == 2000 and work[per_step] == 2 * 1000 * 451
    labels = cfg.load(ROOT / "config/paper/labels.yaml")
    planner = psm.Planner(labels, facts)
    work = planner.work(psm.Job(2, "train", {"model": "labels_random_1"}))
    batches = [c for k, c in work if k.startswith("train:")][0]
    # 200 epochs of 1% of the 45,000 images left after the 5,000 validation images: 450 images, 4 batches of 128
    assert batches == 200 * math.ceil(450 / 128)
    fwd = sum(c for k, c in work if k.startswith("fwd:"))
    assert fwd == 200 * 5000 + 10000  # validation every epoch, then the test set
