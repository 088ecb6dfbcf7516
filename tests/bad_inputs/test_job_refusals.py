"""The catalogue of bad files: each refused by the first workflow job that reads it, naming the file.

One row per bad input: (id, category, how the bad file is made, the rule that must refuse it, the words its
log must end with). Every row adds its own dataset or model (named after the row) to the good config
(tests/configs/tiny.yaml), so all rows run in ONE real `snakemake --keep-going` in a copy of a previous good
run (the session's tiny run), asking for each row's first consumer. Each row then asserts:
- the exit status: Snakemake's is 1 and it reports the row's job as failed, with exit status 1;
- the stage: that job is the row's rule (its log), and no output of the row was left behind;
- the words: the log ends with one `error: ...` line holding them, no traceback;
- that no file of the previous good run was touched or deleted.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch
import yaml

from wf import TINY, RunsCode, digests, snakemake

pytestmark = pytest.mark.slow
GOOD = yaml.safe_load(TINY.read_text())


@dataclass(frozen=True)
class BadJob:
    id: str
    category: str
    make: Callable[[Path, str], dict]  # (the run folder, the row's name) -> config entries to add; writes the file
    rule: str
    words: tuple[str, ...]
    attack: str = "fgsm"  # the attack of an attack row

    @property
    def name(self) -> str:
        return "x_" + self.id.replace("-", "_")

    @property
    def target(self) -> str:
        return {"train": f"results/models/{self.name}/model.pt",
                "represent": f"results/representations/{self.name}/test.h5",
                "attack": f"results/attacks/{self.name}/{self.attack}.h5"}[self.rule]

    @property
    def log(self) -> str:
        return {"train": f"logs/train/{self.name}.log", "represent": f"logs/represent/{self.name}/test.log",
                "attack": f"logs/attack/{self.name}/{self.attack}.log"}[self.rule]


# ---- bad datasets: refused by the train job, the first that reads them ------------------------------------

def npz_model(name: str, test_fraction: float = 0.25) -> dict:
    return {"datasets": {name: {"source": "npz", "path": f"{name}.npz", "test_fraction": test_fraction}},
            "models": {name: {**GOOD["models"]["cnn"], "dataset": name}}}


def digits_like(n: int = 40, classes: int = 4, side: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.random((n, 1, side, side), dtype=np.float32), "y": np.arange(n) % classes}


def npz(test_fraction: float = 0.25, **change) -> Callable[[Path, str], dict]:
    """A dataset file data/<name>.npz: digits-like arrays with `change` applied."""
    def make(run: Path, name: str) -> dict:
        (run / "data").mkdir(exist_ok=True)
        np.savez(run / "data" / f"{name}.npz", **{**digits_like(), **change})
        return npz_model(name, test_fraction)
    return make


def npz_bytes(data: Callable[[], bytes]) -> Callable[[Path, str], dict]:
    """A dataset file data/<name>.npz holding `data()`'s bytes (a file of another kind under the right name)."""
    def make(run: Path, name: str) -> dict:
        (run / "data").mkdir(exist_ok=True)
        (run / "data" / f"{name}.npz").write_bytes(data())
        return npz_model(name)
    return make


def npy_bytes() -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    np.save(buffer, digits_like()["x"])
    return buffer.getvalue()


def image_folder_with_text(run: Path, name: str) -> dict:
    from PIL import Image

    root = run / "data" / name
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    (root / "b" / "notes.png").write_text("not an image\n")
    return {"datasets": {name: {"source": "imagefolder", "path": name, "image_size": 8, "test_fraction": 0.25}},
            "models": {name: {**GOOD["models"]["cnn"], "dataset": name}}}


def l2_budget_beyond_the_data(run: Path, name: str) -> dict:
    """Good 6x6 npz data (shape unknown to check-config) and an L2 attack whose eps exceeds its diameter 6."""
    entries = npz(**digits_like(n=80, side=6))(run, name)
    entries["attacks"] = {"l2_huge": {"method": "fgsm", "norm": "l2", "eps": 7, "images": "all"}}
    return entries


# ---- bad checkpoints: refused by represent, the first job that loads a named checkpoint ------------------

def checkpoint(damage: Callable[[Path], None]) -> Callable[[Path, str], dict]:
    """A model naming `checkpoint: ckpt/<name>`, a copy of the good run's trained cnn, damaged by `damage`."""
    def make(run: Path, name: str) -> dict:
        folder = run / "ckpt" / name
        shutil.copytree(run / "results/models/cnn", folder)
        damage(folder)
        return {"models": {name: {"dataset": "digits", "checkpoint": f"ckpt/{name}"}}}
    return make


def truncate_weights(folder: Path) -> None:
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])


def other_weights(folder: Path) -> None:
    """model.pt of a 3-class small_cnn under model.json of the 10-class one."""
    from advpipe.models import build_model

    spec = json.loads((folder / "model.json").read_text())
    net = build_model("small_cnn", in_channels=1, num_classes=3, image_size=8, **spec["arch_args"])
    torch.save(net.state_dict(), folder / "model.pt")


def empty_weights(folder: Path) -> None:
    (folder / "model.pt").write_bytes(b"")


def garbage_weights(folder: Path) -> None:
    (folder / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096))


def pickled_code(folder: Path) -> None:
    torch.save({"body.0.weight": RunsCode(str(folder / "pickled_code_ran"))}, folder / "model.pt")


def edit_spec(**change) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        spec = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**spec, **change}))
    return damage


def spec_not_json(folder: Path) -> None:
    (folder / "model.json").write_text("{arch: small_cnn,")


# ---- bad dumps: a model's representation dump, refused by its attack job -----------------------------------

def dump(damage: Callable[[h5py.File], None]) -> Callable[[Path, str], dict]:
    """A checkpoint model (the good cnn) whose results/representations/<name>/test.h5 is the good run's cnn dump
    damaged by `damage`: Snakemake sees a complete output, the attack job reads it first."""
    def make(run: Path, name: str) -> dict:
        entries = checkpoint(lambda folder: None)(run, name)
        path = run / "results/representations" / name / "test.h5"
        path.parent.mkdir(parents=True)
        shutil.copy(run / "results/representations/cnn/test.h5", path)
        with h5py.File(path, "a") as f:
            damage(f)
        return entries
    return make


def replace(key: str, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def damage(f: h5py.File) -> None:
        old = f[key][()]
        del f[key]
        f[key] = value(old)
    return damage


def drop(key: str) -> Callable[[h5py.File], None]:
    def damage(f: h5py.File) -> None:
        del f[key]
    return damage


def truncated_dump(run: Path, name: str) -> dict:
    entries = dump(lambda f: None)(run, name)
    path = run / "results/representations" / name / "test.h5"
    path.write_bytes(path.read_bytes()[:3000])
    return entries


CASES = [
    # data that contradicts itself (train: the first job that reads a dataset)
    BadJob("labels-beyond-the-classes", "data", npz(y=np.arange(40) % 4, classes=np.array(["a", "b", "c"])), "train",
           ("data/x_labels_beyond_the_classes.npz", "names 3 classes but y holds labels 0..3 (4 classes)",
            "expected one name per class")),
    BadJob("labels-with-gaps", "data", npz(y=np.arange(40) % 3 * 2), "train",
           ("x_labels_with_gaps.npz", "class(es) 1, 3 of 0..4 have no image in y")),
    BadJob("negative-labels", "data", npz(y=np.arange(40) % 4 - 1), "train",
           ("x_negative_labels.npz", "negative labels", "expected class indices 0..K-1")),
    BadJob("class-names-more-than-labels", "data", npz(classes=np.array(list("abcdefg"))), "train",
           ("x_class_names_more_than_labels.npz", "names 7 classes but y holds labels 0..3 only", "have no image")),
    BadJob("one-class", "data", npz(y=np.zeros(40, np.int64)), "train",
           ("x_one_class.npz", "1 class(es) ['0']", "expected at least 2 classes")),
    BadJob("empty-arrays", "data", npz(x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64)), "train",
           ("x_empty_arrays.npz", "holds no images")),
    BadJob("split-left-empty", "data", npz(test_fraction=0.97, x=digits_like(n=20, classes=2)["x"],
                                           y=np.arange(20) % 2), "train",
           ("x_split_left_empty.npz", "test_fraction 0.97 of 20 images", "expected at least one image of each")),
    BadJob("nan-pixels", "data", npz(x=np.where(np.eye(8, dtype=bool), np.nan, 0.5).astype(np.float32)[None, None]
                                     .repeat(40, 0)), "train",
           ("x_nan_pixels.npz", "NaN or Inf", "expected finite pixel values")),
    BadJob("inf-pixels", "data", npz(x=np.full((40, 1, 8, 8), np.inf, np.float32)), "train",
           ("x_inf_pixels.npz", "NaN or Inf")),
    BadJob("npy-renamed-npz", "data", npz_bytes(npy_bytes), "train",
           ("x_npy_renamed_npz.npz", "a single .npy array (numpy.save), not an .npz archive",
            "expected an .npz file")),
    BadJob("text-as-npz", "data", npz_bytes(lambda: b"x,y\n0.1,3\n"), "train",
           ("x_text_as_npz.npz", "not an .npz file (it starts with")),
    BadJob("text-file-as-image", "data", image_folder_with_text, "train",
           ("notes.png: not a readable image", "expected an image file")),
    BadJob("images-too-small-for-the-model", "data", npz(x=digits_like(side=1)["x"]), "train",
           ("x_images_too_small_for_the_model.npz", "images are 1x1 but architecture 'small_cnn'",
            "needs images of at least 2x2")),
    BadJob("l2-budget-beyond-the-data", "budget", l2_budget_beyond_the_data, "attack",
           ("config key 'attacks.l2_huge.eps': got 7 (L2)", "at most 6, the L2 diameter", "images 1x6x6"),
           attack="l2_huge"),
    # checkpoints (represent: the first job that loads a checkpoint a config names)
    BadJob("truncated-checkpoint", "checkpoint", checkpoint(truncate_weights), "represent",
           ("ckpt/x_truncated_checkpoint/model.pt", "truncated or corrupt")),
    BadJob("garbage-checkpoint", "checkpoint", checkpoint(garbage_weights), "represent",
           ("ckpt/x_garbage_checkpoint/model.pt", "truncated or corrupt checkpoint, not a file torch.save writes")),
    BadJob("empty-checkpoint", "checkpoint", checkpoint(empty_weights), "represent",
           ("ckpt/x_empty_checkpoint/model.pt: empty file (0 bytes)",)),
    BadJob("checkpoint-that-runs-code", "checkpoint", checkpoint(pickled_code), "represent",
           ("ckpt/x_checkpoint_that_runs_code/model.pt", "refused to load", "would run pickled code")),
    BadJob("spec-and-weights-disagree-on-classes", "checkpoint", checkpoint(other_weights), "represent",
           ("x_spec_and_weights_disagree_on_classes/model.json and", "model.pt disagree",
            "num_classes 10 in model.json vs 3 outputs")),
    BadJob("spec-and-weights-disagree-on-architecture", "checkpoint",
           checkpoint(edit_spec(arch="preact_resnet", arch_args={"depth": 8, "width": 16})), "represent",
           ("x_spec_and_weights_disagree_on_architecture/model.json and", "model.pt disagree",
            "arch 'preact_resnet'")),
    BadJob("spec-not-json", "checkpoint", checkpoint(spec_not_json), "represent",
           ("ckpt/x_spec_not_json/model.json: not valid JSON",)),
    # dumps (attack: the first job that reads a representation dump)
    BadJob("dump-truncated", "dump", truncated_dump, "attack",
           ("results/representations/x_dump_truncated/test.h5", "not a readable HDF5 file")),
    BadJob("dump-without-labels", "dump", dump(drop("label")), "attack",
           ("results/representations/x_dump_without_labels/test.h5", "missing dataset", "label")),
    BadJob("dump-labels-out-of-range", "dump", dump(replace("label", lambda y: y + 10)), "attack",
           ("results/representations/x_dump_labels_out_of_range/test.h5", "dataset 'label' holds values in [10, 19]", "expected class indices 0..9")),
    BadJob("dump-index-of-wrong-shape", "dump", dump(replace("index", lambda i: i[:, None])), "attack",
           ("results/representations/x_dump_index_of_wrong_shape/test.h5", "dataset 'index' has shape", "expected shape (N,)")),
]


@pytest.fixture(scope="module")
def refused(tiny_run, tmp_path_factory):
    """Every row's bad file in one copy of the good run, and one snakemake --keep-going over their consumers."""
    run = tmp_path_factory.mktemp("job_refusals") / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    before = digests(run, skip=(".snakemake",))
    config = json.loads(json.dumps(GOOD))
    for case in CASES:
        for section, entries in case.make(run, case.name).items():
            config.setdefault(section, {}).update(entries)
    configfile = run / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    out = snakemake(run, "--keep-going", *[c.target for c in CASES], configfile=configfile, check=False)
    return run, before, out


def test_the_catalogue_is_a_catalogue():
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.category for c in CASES} == {"data", "budget", "checkpoint", "dump"}


def test_nothing_of_the_good_run_was_touched(refused):
    run, before, out = refused
    after = digests(run, skip=(".snakemake",))
    assert {k: after.get(k) for k in before} == before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_first_reader_refuses(case, refused):
    run, before, out = refused
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    # Snakemake's report of the failed jobs: "Error in rule <rule>: ... log: <log>", and for each a script that
    # "returned non-zero exit status 1" (the one-line error; 2 or more would be a crash of the interpreter).
    failed = re.findall(r"Error in rule (\w+):\n(?:    .*\n)*?    log: (\S+)", text)
    assert (case.rule, case.log) in failed, text
    statuses = re.findall(rf"\.{case.rule}\.py' returned non-zero exit status (\d+)", text)
    assert statuses == ["1"] * sum(rule == case.rule for rule, _ in failed), text
    log = (run / case.log).read_text()
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: ") and "internal error" not in last, log
    for words in case.words:
        assert words in last, f"{words!r} not in {last!r}"
    assert not (run / case.target).exists()
    assert not list((run / "ckpt").rglob("pickled_code_ran"))
