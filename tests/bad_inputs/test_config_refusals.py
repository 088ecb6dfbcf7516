"""The catalogue of bad configs: each refused by `advpipe check-config`, and by Snakemake before any job runs.

One row per bad input: (id, category, the input, the words the message must contain). The input is either a
change to the good config (tests/configs/tiny.yaml, the config of the session's tiny run) or raw YAML text.
Every row asserts the exit status (2 from check-config: the input is wrong), the stage (check-config refuses
it with one line and no traceback), the words, and that the outputs of the previous good run, in whose folder
it runs, are untouched. The rows marked `workflow` (a budget, a duplicate key, a name: one for each of the
cross-checks, the YAML loader and the schema) also run `snakemake --dry-run` there: exit status 1, the same
words, no job started (no log written), nothing touched.
"""
from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from advpipe import cli
from wf import TINY, digests, snakemake

GOOD = yaml.safe_load(TINY.read_text())


@dataclass(frozen=True)
class Bad:
    id: str
    category: str
    input: Callable[[dict], None] | str  # a change to the good config, or YAML text for the whole file
    words: tuple[str, ...]
    workflow: bool = False  # also through snakemake --dry-run

    def write(self, folder: Path) -> Path:
        if isinstance(self.input, str):
            text = self.input
        else:
            config = copy.deepcopy(GOOD)
            self.input(config)
            text = yaml.safe_dump(config, sort_keys=False)
        path = folder / f"{self.id}.yaml"
        path.write_text(text)
        return path


def put(path: str, value) -> Callable[[dict], None]:
    """A change that sets the dotted key `path` (creating mappings on the way) to `value`."""
    def change(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(value)
    return change


def rename(section: str, old: str, new: str) -> Callable[[dict], None]:
    """A change that renames entry `old` of `section` (and every reference to it in vrapi's lists)."""
    def change(config: dict) -> None:
        config[section][new] = config[section].pop(old)
        study = config["vrapi"].get(section, [])
        config["vrapi"][section] = [new if n == old else n for n in study]
        for model in config["models"].values():
            if section == "datasets" and model["dataset"] == old:
                model["dataset"] = new
    return change


def both(*changes: Callable[[dict], None]) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        for c in changes:
            c(config)
    return change


TEXT = TINY.read_text()
FGSM = "attacks.fgsm"
TRAIN = "models.cnn.train"

CASES = [
    # -- budgets the input box cannot hold (advpipe.attacks.budget) --------------------------------------------
    Bad("linf-eps-the-whole-box", "budget", put(f"{FGSM}.eps", 1),
        ("config key 'attacks.fgsm.eps'", "got 1 (Linf)", "expected less than 1, the width of the input box"),
        workflow=True),
    Bad("linf-eps-beyond-declared-bounds", "budget", both(put(f"{FGSM}.space", [-1, 1]), put(f"{FGSM}.eps", 2.5)),
        ("'attacks.fgsm.eps'", "got 2.5 (Linf)", "less than 2, the width of the input box in [-1, 1] space")),
    Bad("linf-eps-grid-with-one-too-large", "budget", put(f"{FGSM}.eps", ["1/255", "300/255"]),
        ("'attacks.fgsm.eps'", "got 1.17647 (Linf)", "expected less than 1")),
    Bad("l2-eps-beyond-the-diameter", "budget", both(put(f"{FGSM}.norm", "l2"), put(f"{FGSM}.eps", 9)),
        ("'attacks.fgsm.eps'", "got 9 (L2)", "at most 8, the L2 diameter", "dataset 'digits'")),
    Bad("rms-eps-beyond-the-diameter", "budget", put("attacks.search", {"method": "search", "eps": 1.5}),
        ("'attacks.search.eps'", "got 1.5 (RMS)", "at most 1, the RMS diameter")),
    Bad("linf-eps-beyond-normalized-width", "budget",
        both(put("models.cnn.normalize", {"mean": [0.5], "std": [0.25]}), put(f"{FGSM}.space", "normalized"),
             put(f"{FGSM}.eps", 4)),
        ("'attacks.fgsm.eps'", "got 4 (Linf)", "less than 4, the width of the input box in normalized space")),
    Bad("step-larger-than-every-budget", "budget",
        put("attacks.bim", {"method": "bim", "eps": "2/255", "step_size": "8/255", "steps": 5}),
        ("'attacks.bim.step_size'", "got 8/255", "larger than every budget", "expected a step <= eps")),
    # -- numbers that are not finite ----------------------------------------------------------------------------
    Bad("eps-inf", "non-finite", put(f"{FGSM}.eps", float("inf")),
        ("config key 'attacks.fgsm.eps': got inf; expected a finite number",)),
    Bad("lr-nan", "non-finite", put(f"{TRAIN}.lr", float("nan")),
        ("config key 'models.cnn.train.lr': got nan; expected a finite number",)),
    Bad("eps-grid-with-inf", "non-finite", put("labels.attack.eps", [0, 0.1, float("-inf")]),
        ("config key 'labels.attack.eps.2': got -inf; expected a finite number",)),
    # -- ambiguous or unreadable YAML ----------------------------------------------------------------------------
    Bad("duplicate-top-level-key", "yaml", TEXT + "seed: 4\n",
        ("found the key 'seed' twice (first on line 2)", "expected each key once per mapping"), workflow=True),
    Bad("duplicate-nested-key", "yaml",
        TEXT.replace("    train: {epochs: 10,", "    train: {epochs: 10, epochs: 20,"),
        ("line 12", "found the key 'epochs' twice", "expected each key once per mapping")),
    Bad("not-yaml", "yaml", "datasets:\n  digits: {source: digits\nmodels: [\n",
        ("not valid YAML", "expected a YAML mapping of config keys")),
    Bad("top-level-list", "yaml", "- datasets\n- models\n",
        ("the top level is a list", "expected a mapping of config keys")),
    # -- paths --------------------------------------------------------------------------------------------------
    Bad("empty-results-folder", "path", put("results", ""),
        ("config key 'results': got '' (text); expected non-empty text",)),
    Bad("empty-data-folder", "path", put("data_root", ""),
        ("config key 'data_root': got '' (text); expected non-empty text",)),
    Bad("results-climbing-out-of-the-project", "path", put("results", "../elsewhere/results"),
        ("config key 'results'", "'../elsewhere/results', which climbs out of the project folder",
         "or an absolute path")),
    Bad("results-is-the-project-folder", "path", put("results", "./"),
        ("config key 'results'", "the project folder itself", "expected a sub-folder")),
    Bad("results-is-a-file", "path", put("results", "results/models/cnn/model.pt"),
        ("config key 'results'", "is not a folder", "expected a folder for the outputs")),
    Bad("results-below-a-file", "path", put("results", "results/models/cnn/model.pt/more"),
        ("config key 'results'", "cannot be created", "results/models/cnn/model.pt is not a folder")),
    # -- names that cannot be paths or wildcards ----------------------------------------------------------------
    Bad("model-name-with-space", "name", rename("models", "cnn", "my cnn"),
        ("config key 'models.my cnn'", "the name 'my cnn' is not allowed", "no spaces"), workflow=True),
    Bad("model-name-with-newline", "name", rename("models", "cnn", "cnn\nv2"),
        ("the name 'cnn\\nv2' is not allowed", "letters, digits, _ and -")),
    Bad("attack-name-with-slash", "name", rename("attacks", "fgsm", "fgsm/8"),
        ("config key 'attacks.fgsm/8'", "the name 'fgsm/8' is not allowed", "path separators")),
    Bad("dataset-name-with-backslash", "name", rename("datasets", "digits", "dig\\its"),
        ("the name 'dig\\\\its' is not allowed",)),
    # -- integers that cannot be used as what they are for --------------------------------------------------------
    Bad("seed-beyond-numpy", "integer", put("seed", 2**32),
        ("config key 'seed': got 4294967296", "expected a whole number in 0..4294967295")),
    Bad("negative-seed", "integer", put("seed", -1), ("config key 'seed': got -1", "0..4294967295")),
    Bad("criterion-seed-beyond-numpy", "integer",
        put(f"{FGSM}.criterion", {"kind": "targeted", "targets": "random", "seed": 2**40}),
        ("config key 'attacks.fgsm.criterion.seed': got 1099511627776", "0..4294967295")),
    Bad("epochs-with-a-decimal-point", "integer", put(f"{TRAIN}.epochs", 10.0),
        ("config key 'models.cnn.train.epochs': got 10.0 (a number with a decimal point)",
         "expected a whole number >= 1")),
    Bad("batch-size-zero", "integer", put(f"{TRAIN}.batch_size", 0),
        ("config key 'models.cnn.train.batch_size': got 0; expected a whole number >= 1",)),
    # -- schema errors in words ------------------------------------------------------------------------------------
    Bad("eps-malformed-fraction", "schema", put(f"{FGSM}.eps", "3//255"),
        ("config key 'attacks.fgsm.eps': got '3//255' (text)", "a fraction such as 3/255")),
    Bad("lr-as-text", "schema", put(f"{TRAIN}.lr", "fast"),
        ("config key 'models.cnn.train.lr': got 'fast' (text); expected a number > 0",)),
    Bad("normalize-unknown", "schema", put("models.cnn.normalize", "imagenet"),
        ("'models.cnn.normalize': got 'imagenet' (text)", "none, dataset, or {mean: [...], std: [...]}")),
    Bad("criterion-unknown", "schema", put(f"{FGSM}.criterion", "untargeted"),
        ("'attacks.fgsm.criterion': got 'untargeted'", "misclassification, targeted or btr")),
    Bad("clamp-one-number", "schema", put(f"{FGSM}.clamp", [1]),
        ("'attacks.fgsm.clamp': got [1]", "box, per_image, none, or a range [lo, hi]")),
    Bad("space-inverted-range", "schema", put(f"{FGSM}.space", [1, -1]),
        ("'attacks.fgsm.space': got [1, -1]; expected a range [lo, hi] with lo < hi",)),
    Bad("clamp-inverted-range", "schema", put(f"{FGSM}.clamp", [0.9, 0.1]),
        ("'attacks.fgsm.clamp': got [0.9, 0.1]; expected a range [lo, hi] with lo < hi",)),
    Bad("negative-eps", "schema", put(f"{FGSM}.eps", -0.1),
        ("config key 'attacks.fgsm.eps': got -0.1", "a number >= 0 or a fraction such as 3/255")),
    Bad("unknown-key", "schema", put(f"{TRAIN}.epoch", 3),
        ("config key 'models.cnn.train.epoch': unknown key; expected one of", "'epochs'")),
    Bad("projection-unknown", "schema", put("vrapi.projections", ["pca", "isomap"]),
        ("config key 'vrapi.projections.1': got 'isomap' (text); expected one of 'pca'",)),
    # -- references to entries that do not exist ---------------------------------------------------------------
    Bad("model-on-an-unknown-dataset", "reference", put("models.cnn.dataset", "cifar"),
        ("config key 'models.cnn.dataset': unknown dataset 'cifar'", "known: ['digits']")),
    Bad("study-names-an-unknown-attack", "reference", put("vrapi.attacks", ["fgsm", "pgd"]),
        ("config key 'vrapi.attacks.1': unknown attack 'pgd'",)),
]


@pytest.fixture(scope="module")
def good_run(tiny_run, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of a previous good run (the session's tiny run) and the digests of everything in it."""
    workdir = tmp_path_factory.mktemp("config_refusals") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir, digests(workdir)


def test_the_catalogue_is_a_catalogue():
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.category for c in CASES} >= {"budget", "non-finite", "yaml", "path", "name", "integer", "schema"}


def test_the_good_config_passes(good_run, monkeypatch, capsys):
    workdir, _ = good_run
    monkeypatch.chdir(workdir)
    assert cli.main(["check-config", str(TINY)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_config_refuses(case, good_run, tmp_path, monkeypatch, capsys):
    workdir, before = good_run
    path = case.write(tmp_path)
    monkeypatch.chdir(workdir)  # relative paths (results) are the good run's
    status = cli.main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and "internal error" not in err, err
    for words in case.words:
        assert words in err, f"{words!r} not in {err!r}"
    assert digests(workdir) == before


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.workflow], ids=[c.id for c in CASES if c.workflow])
def test_snakemake_refuses_before_any_job(case, good_run, tmp_path):
    workdir, before = good_run
    logs = sorted(p for p in (workdir / "logs").rglob("*"))
    out = snakemake(workdir, "--dry-run", "--forceall", configfile=case.write(tmp_path), check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "error: " in text and "Traceback" not in text, text
    for words in case.words:
        assert words in text, f"{words!r} not in {text!r}"
    assert "Building DAG" not in text and "Job stats" not in text, text  # refused before the DAG: no job
    assert sorted(p for p in (workdir / "logs").rglob("*")) == logs
    assert digests(workdir) == before


def test_debug_shows_the_traceback(good_run, tmp_path, monkeypatch, capsys):
    """One line by default; --debug or ADVPIPE_DEBUG=1 add the traceback (same status)."""
    workdir, _ = good_run
    path = CASES[0].write(tmp_path)
    monkeypatch.chdir(workdir)
    for argv, env in ((["--debug", "check-config", str(path)], None), (["check-config", str(path)], "1")):
        if env:
            monkeypatch.setenv("ADVPIPE_DEBUG", env)
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and "ConfigError" in err and CASES[0].words[0] in err, err


def test_an_internal_error_is_not_blamed_on_the_input(monkeypatch, capsys):
    def broken(_path):
        raise KeyError("no such thing")

    monkeypatch.setattr("advpipe.config.load", broken)
    assert cli.main(["check-config", str(TINY)]) == 1
    err = capsys.readouterr().err
    assert err == ("error: internal error in advpipe, not in your input: KeyError: 'no such thing' "
                   "(set ADVPIPE_DEBUG=1 for the traceback)\n")
