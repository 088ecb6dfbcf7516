"""Bad input: each case fails with one clear error, and nothing else is lost.

Every test asserts the error type, that the message names the file or config key path, and that it says what
was expected; stage tests also check that the failing stage wrote nothing. Cases run through the stage
functions (`advpipe.pipeline.*.run`, what the workflow's scripts call) on files made by those stages and then
corrupted; a few run real snakemake (marked slow) on a copy of the session's tiny run (conftest's `tiny_run`) to
show the error reaches the failing job's log, that the other jobs' outputs stay byte-identical, and that a
read-only results folder fails before any job.

Bad config values caught by the schema (23 cases: negative eps, a plot trial beyond `trials`, unknown keys,
names, architectures...) are in tests/test_config.py, and eps < 0 failing the workflow before any job is in
tests/test_workflow.py; the cases here are the ones the schema cannot see.
"""
from __future__ import annotations

import copy
import io
import json
import os
import pickle
import pwd
import shutil
import subprocess
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from advpipe.config import ConfigError, check_results_folder, load, validate
from advpipe.data import DataError, load_split
from advpipe.io.h5 import DumpError
from advpipe.models import build_model
from advpipe.models.checkpoint import CheckpointError
from advpipe.models.input_size import input_size_problem, min_input_size
from advpipe.pipeline import attack, plot, project, represent, score, train
from advpipe.pipeline.specs import attack_job, model_job
from advpipe.projections import estimator_options
from wf import TINY, RunsCode, digests, h5_contents, snakemake, snakemake_cmd

pytestmark = pytest.mark.usefixtures("one_thread")



def run_train(config, model, out_dir):
    """The train stage on the entries the rule would pass (advpipe.pipeline.specs)."""
    return train.run(**model_job(config, model), out_dir=out_dir, data_root=config["data_root"],
                     device=config["device"], log=quiet)


def run_represent(config, model, split, model_dir, out_h5, evaluation, confusion, images):
    return represent.run(**model_job(config, model), represent=config["represent"], split_name=split,
                         model_dir=model_dir, out_h5=out_h5, out_eval=evaluation, out_confusion=confusion,
                         images_dir=images, data_root=config["data_root"], device=config["device"], log=quiet)


def run_project(config, trial, clean, adv, out):
    """The pca projection of the fgsm attack on the cnn, on the entries the rule would pass."""
    return project.run(model_name="cnn", model=config["models"]["cnn"], attacks={"fgsm": config["attacks"]["fgsm"]},
                       projection="pca", trial=trial, trials=config["vrapi"]["trials"],
                       options=estimator_options("pca", config["vrapi"]["projection_options"]), seed=config["seed"],
                       clean_h5=clean, attack_h5s=[adv], out_h5s=[out], log=quiet)


def run_attack(config, model, attack_name, model_dir, clean, out_h5, norms, evaluation, confusion, images):
    return attack.run(**attack_job(config, model, attack_name), model_dir=model_dir, clean_h5=clean, out_h5=out_h5,
                      out_norms_stats=norms, out_eval=evaluation, out_confusion=confusion, images_dir=images,
                      data_root=config["data_root"], device=config["device"], log=quiet)


def quiet(*_):
    pass


def expect(error: type[Exception], call, *named: object) -> str:
    """Run `call`, which must raise `error` whose message contains every one of `named` (str() of each)."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for part in named:
        assert str(part) in message, f"{part!r} not in {message!r}"
    return message


# ---- files made by the real stages, copied per test before they are damaged ------------------------------

def make_config(data_root: Path, **datasets) -> dict:
    return validate({
        "seed": 0, "device": "cpu", "data_root": str(data_root),
        "datasets": {"digits": {"source": "digits", "test_fraction": 0.1}, **datasets},
        "models": {"cnn": {"dataset": "digits", "arch": "small_cnn", "arch_args": {"channels": [4, 8], "hidden": 16},
                           "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3,
                                     "augment": {"crop_padding": 0, "hflip": False}}}},
        "attacks": {"fgsm": {"method": "fgsm", "eps": "8/255"}},
        "represent": {"num_saved_images": 1},
        "vrapi": {"models": ["cnn"], "attacks": ["fgsm"], "projections": ["pca"], "trials": 2},
    })


@dataclass
class Files:
    """A trained model, its representation dump, an attack dump and a projection under `root`, and the stages
    that read them, writing into root/out (which must stay empty when a stage fails)."""

    root: Path
    config: dict

    model_dir = property(lambda self: self.root / "models/cnn")
    model_pt = property(lambda self: self.root / "models/cnn/model.pt")
    model_json = property(lambda self: self.root / "models/cnn/model.json")
    clean = property(lambda self: self.root / "representations/cnn/test.h5")
    adv = property(lambda self: self.root / "attacks/cnn/fgsm.h5")
    projection = property(lambda self: self.root / "projections/cnn/fgsm/pca/0.h5")
    out = property(lambda self: self.root / "out")

    def copy(self, dest: Path) -> Files:
        shutil.copytree(self.root, dest / "files")
        return Files(dest / "files", {**copy.deepcopy(self.config), "data_root": str(dest / "files" / "data")})

    def represent(self, split="test", config=None):
        o = self.out / "represent"
        run_represent(config or self.config, "cnn", split, self.model_dir, o / f"{split}.h5", o / "eval.csv",
                      o / "confusion.csv", o / "images")
        return o / f"{split}.h5"

    def attack(self, config=None, clean=None):
        o = self.out / "attack"
        run_attack(config or self.config, "cnn", "fgsm", self.model_dir, clean or self.clean, o / "fgsm.h5",
                   o / "norms.csv", o / "eval.csv", o / "confusion.csv", o / "images")

    def project(self, trial=0, config=None):
        run_project(config or self.config, trial, self.clean, self.adv, self.out / f"projection/{trial}.h5")

    def score(self):
        entry = {"model": "cnn", "attack": "fgsm", "projection": "pca", "trial": 0, "path": self.projection,
                 "clean": self.clean, "attack_path": self.adv}
        score.run([entry], self.out / "scores.csv", self.out / "stats.csv", log=quiet)

    def plot(self):
        plot.run(self.config["vrapi"]["plot"], self.model_dir, self.clean, self.adv, self.projection, self.out / "figures", log=quiet)

    def wrote_nothing(self) -> bool:
        return not self.out.exists() or not any(p.is_file() for p in self.out.rglob("*"))


@pytest.fixture(scope="module")
def made(tmp_path_factory, one_thread) -> Files:
    root = tmp_path_factory.mktemp("made")
    files = Files(root, make_config(root / "data"))
    run_train(files.config, "cnn", files.model_dir)
    o = root / "representations/cnn"
    run_represent(files.config, "cnn", "test", files.model_dir, files.clean, o / "test_eval.csv",
                  o / "test_confusion.csv", o / "images_test")
    o = root / "attacks/cnn"
    run_attack(files.config, "cnn", "fgsm", files.model_dir, files.clean, files.adv, o / "fgsm_norms_stats.csv",
               o / "fgsm_eval.csv", o / "fgsm_confusion.csv", o / "fgsm_images")
    run_project(files.config, 0, files.clean, files.adv, files.projection)
    return files


@pytest.fixture
def files(made, tmp_path) -> Files:
    return made.copy(tmp_path)


def test_the_undamaged_files_pass_every_stage(files):
    """The control: what the cases below damage is accepted as made."""
    files.represent()
    files.attack()
    files.project()
    files.score()
    files.plot()
    assert (files.out / "attack/fgsm.h5").exists() and (files.out / "scores.csv").exists()
    assert (files.out / "figures/non_adversarial.pdf").exists()


# ---- damage ----------------------------------------------------------------------------------------------

def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def rewrite_dump(path: Path, drop=(), **replace) -> None:
    """Rewrite an HDF5 dump without the datasets in `drop` and with `replace`d ones (no alignment check)."""
    with h5py.File(path) as f:
        arrays = {k: f[k][()] for k in f if k not in drop}
        attrs = dict(f.attrs)
    arrays.update(replace)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        f.attrs.update(attrs)


# ---- HDF5 dumps: each consuming stage names the damaged file ------------------------------------------------

HDF5_EXPECTED = "expected a complete HDF5 dump"


def test_truncated_representation_dump_read_by_attack(files):
    truncate(files.clean)
    expect(DumpError, files.attack, files.clean, "not a readable HDF5 file", HDF5_EXPECTED)
    assert files.wrote_nothing()


def test_corrupt_attack_dump_read_by_project(files):
    size = files.adv.stat().st_size
    files.adv.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    expect(DumpError, files.project, files.adv, "not a readable HDF5 file", HDF5_EXPECTED)
    assert files.wrote_nothing()


def test_truncated_projection_read_by_score(files):
    truncate(files.projection, 0.8)
    expect(DumpError, files.score, files.projection, HDF5_EXPECTED)
    assert files.wrote_nothing()


def test_projection_with_overwritten_header_read_by_plot(files):
    data = bytearray(files.projection.read_bytes())
    data[:512] = bytes(512)
    files.projection.write_bytes(bytes(data))
    expect(DumpError, files.plot, files.projection, HDF5_EXPECTED)
    assert files.wrote_nothing()


def test_empty_attack_dump_read_by_score(files):
    files.adv.write_bytes(b"")
    expect(DumpError, files.score, files.adv, HDF5_EXPECTED)
    assert files.wrote_nothing()


def test_text_file_as_representation_dump_read_by_project(files):
    files.clean.write_text("index,label\n0,1\n")
    expect(DumpError, files.project, files.clean, HDF5_EXPECTED)
    assert files.wrote_nothing()


def test_missing_projection_read_by_score(files):
    files.projection.unlink()
    expect(DumpError, files.score, files.projection, "file does not exist", "expected an HDF5 dump")


def test_representation_dump_without_features_read_by_project(files):
    rewrite_dump(files.clean, drop=["features"])
    expect(DumpError, files.project, files.clean, "missing dataset(s) ['features']", "expected ['index', 'correct'")
    assert files.wrote_nothing()


def test_representation_dump_with_misaligned_datasets_read_by_attack(files):
    with h5py.File(files.clean) as f:
        label = f["label"][()]
    rewrite_dump(files.clean, label=label[:-3])
    n = len(label)
    expect(DumpError, files.attack, files.clean, f"'label': {n - 3}", "expected one row per sample")
    assert files.wrote_nothing()


def test_attack_dump_indexing_samples_not_in_the_representation_dump(files):
    with h5py.File(files.adv) as f:
        index = f["index"][()]
    rewrite_dump(files.adv, index=index + 100_000)  # ids that the representation dump does not have
    message = expect(DumpError, files.project, files.adv, files.clean, "dataset 'index'", "expected the")
    assert f"{len(index)} of them not among" in message
    assert files.wrote_nothing()


def test_representation_dump_of_another_split_read_by_attack(files):
    other = files.represent("train")  # a valid dump, but of the training split
    expect(DumpError, lambda: files.attack(clean=other), other, "does not match the test split of 'digits'",
           "expected the representation dump of that split")
    assert not (files.out / "attack").exists()


def test_nan_features_in_representation_dump_read_by_project(files):
    with h5py.File(files.clean) as f:
        features, correct = f["features"][()], f["correct"][()]
    features[np.flatnonzero(correct)[[0, 5]], 1] = [np.nan, np.inf]  # in rows the projection reads
    rewrite_dump(files.clean, features=features)
    expect(DumpError, files.project, files.clean, "'features' holds 2 NaN or Inf", "expected finite numbers")
    assert files.wrote_nothing()


def _damaged(values, how):
    """`values` of a dump dataset damaged as `how` says (the cases below)."""
    if how == "1-D":
        return values[:, 0]
    if how == "2-D":
        return np.stack([values, values], 1)
    if how == "3 columns":
        return np.concatenate([values, values[:, :1]], 1)
    if how == "+10":
        return values + 10
    if how == "-1 in one row":
        values = values.copy()
        values[0] = -1
        return values
    if how == "float":
        return values + 0.5
    raise ValueError(how)


# (dump, dataset, damage, stage reading it first, phrases of the message); {n}: the dump's rows
DUMP_LAYOUT_CASES = [
    ("clean", "features", "1-D", "project", ["dataset 'features' has shape ({n},)",
                                             "expected shape (N, D) (N samples, D features)"]),
    ("clean", "label", "2-D", "attack", ["dataset 'label' has shape ({n}, 2)", "expected shape (N,) (N samples)"]),
    ("clean", "label", "+10", "attack", ["dataset 'label' holds values in [10, 19]",
                                         "expected class indices 0..9 (10 classes: dataset 'digits')"]),
    ("clean", "label", "float", "attack", ["dataset 'label' holds float64 values", "expected integers"]),
    ("clean", "label", "-1 in one row", "score", ["dataset 'label' holds values in [-1, 9]",
                                                  "expected class indices 0..9 (10 classes: the width of dataset "
                                                  "'logits')"]),
    ("adv", "pred", "+10", "project", ["dataset 'pred' holds values in [10, 19]", "expected class indices 0..9 "
                                       "(10 classes: the width of dataset 'logits')"]),
    ("adv", "label", "+10", "plot", ["dataset 'label' holds values in [10, 19]",
                                     "expected class indices 0..9 (10 classes: {model_json})"]),
    ("adv", "pred", "2-D", "score", ["dataset 'pred' has shape ({n}, 2)", "expected shape (N,) (N samples)"]),
    ("projection", "clean", "1-D", "score", ["dataset 'clean' has shape ({n},)",
                                             "expected shape (N, P) (N samples, P projection axes)"]),
    ("projection", "adv", "3 columns", "plot",
     ["dataset 'adv' has shape ({n}, 3)", "expected shape ({n}, 2) (projection axes: 2, from the 2-D scatter figures)"]),
    ("projection", "adv", "3 columns", "score", ["dataset 'adv' has shape ({n}, 3)",
                                                 "expected shape ({n}, 2) (projection axes: 2, from dataset 'clean')"]),
]


@pytest.mark.parametrize("dump, key, how, stage, phrases", DUMP_LAYOUT_CASES,
                         ids=[f"{c[0]} {c[1]} {c[2]} read by {c[3]}" for c in DUMP_LAYOUT_CASES])
def test_dump_dataset_of_the_wrong_shape_or_range(files, dump, key, how, stage, phrases):
    """Refused where it is read, naming the file, the dataset and the expected shape or range: never an IndexError
    or ValueError inside the projection, the score or the figures (nor, for the attack, silently used)."""
    path = getattr(files, dump)
    with h5py.File(path) as f:
        values = f[key][()]
    rewrite_dump(path, **{key: _damaged(values, how)})
    fill = {"n": len(values), "model_json": files.model_json}
    expect(DumpError, getattr(files, stage), path, *[p.format(**fill) for p in phrases])
    assert files.wrote_nothing()


def test_attack_dump_without_predictions_read_by_score(files):
    rewrite_dump(files.adv, drop=["pred"])
    expect(DumpError, files.score, files.adv, "missing dataset(s) ['pred']", "expected ['index', 'pred', 'label']")
    assert files.wrote_nothing()


# ---- checkpoints ---------------------------------------------------------------------------------------------

CHECKPOINT_EXPECTED = "expected a state_dict of plain tensors"


def test_truncated_checkpoint_read_by_represent(files):
    truncate(files.model_pt)
    expect(CheckpointError, files.represent, files.model_pt, "truncated or corrupt", CHECKPOINT_EXPECTED)
    assert files.wrote_nothing()


@pytest.mark.parametrize("fmt", ["torch zip", "plain pickle"])
def test_checkpoint_whose_pickle_would_run_code_never_runs_it(files, tmp_path, fmt):
    marker = tmp_path / "pickled_code_ran"
    if fmt == "torch zip":
        torch.save({"body.0.weight": RunsCode(marker)}, files.model_pt)
    else:
        files.model_pt.write_bytes(pickle.dumps({"body.0.weight": RunsCode(marker)}, protocol=2))
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "control")))  # the payload does run when unpickled plainly
    assert (tmp_path / "control").exists()
    expect(CheckpointError, files.attack, files.model_pt, "refused to load", CHECKPOINT_EXPECTED)
    assert not marker.exists()
    assert files.wrote_nothing()


def test_checkpoint_without_its_spec(files):
    files.model_json.unlink()
    expect(CheckpointError, files.attack, files.model_json, "file does not exist",
           "expected a trained-model folder with model.json and model.pt")
    assert files.wrote_nothing()


@pytest.mark.parametrize("text, problem", [
    ('{"arch": "small_cnn", "in_channels": 1,', "not valid JSON"),
    ('["small_cnn", 1, 10]', "holds a JSON list"),
    ('{"arch": "small_cnn", "in_channels": 1, "image_size": 8}', "missing key(s) ['num_classes', 'classes']"),
], ids=["invalid JSON", "not an object", "missing keys"])
def test_checkpoint_spec_unusable(files, text, problem):
    files.model_json.write_text(text)
    expect(CheckpointError, files.represent, files.model_json, problem,
           "expected the JSON object save_trained writes, with keys ['arch', 'in_channels'")
    assert files.wrote_nothing()


def test_checkpoint_spec_naming_an_unknown_architecture(files):
    spec = json.loads(files.model_json.read_text())
    files.model_json.write_text(json.dumps({**spec, "arch": "vgg99"}))
    expect(CheckpointError, files.represent, files.model_json, "unknown architecture 'vgg99'",
           "expected an architecture of the registry")
    assert files.wrote_nothing()


def test_checkpoint_with_nan_weights(files):
    state = torch.load(files.model_pt, weights_only=True)
    state["head.weight"][0, 0] = float("nan")
    torch.save(state, files.model_pt)
    expect(CheckpointError, files.represent, files.model_pt, "'head.weight' holds NaN or Inf",
           "expected finite weights")
    assert files.wrote_nothing()


def _some_bytes(kind: str) -> bytes:
    if kind == "random bytes":
        return np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    if kind == "a text file":
        return b"epoch,loss\n1,0.5\n"
    if kind == "an empty file":
        return b""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 4), np.float32))  # "a .npy array"
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["random bytes", "a text file", "an empty file", "a .npy array"])
def test_checkpoint_that_is_no_checkpoint_is_reported_corrupt(files, kind):
    """Bytes torch cannot read are a corrupt file, not a refusal to run code (nor torch's KeyError)."""
    files.model_pt.write_bytes(_some_bytes(kind))
    message = expect(CheckpointError, files.represent, files.model_pt, "truncated or corrupt", CHECKPOINT_EXPECTED)
    assert "refused" not in message and "pickled code" not in message
    assert files.wrote_nothing()


def test_refusal_of_a_pickle_referencing_code_never_passes_on_torch_advice(files, tmp_path):
    """torch's own message for a pickle it refuses advises weights_only=False (running the code) and allowlisting
    the global; ours names the file and what was refused, and neither the message nor the traceback a debugging
    user sees (ADVPIPE_DEBUG=1) carries that advice."""
    torch.save({"body.0.weight": RunsCode(tmp_path / "pickled_code_ran")}, files.model_pt)
    with pytest.raises(pickle.UnpicklingError) as raw:  # the pinned torch's text: the test fails if it changes
        torch.load(files.model_pt, weights_only=True)
    assert "`weights_only` set to `False`" in str(raw.value) and "add_safe_globals" in str(raw.value)
    with pytest.raises(CheckpointError) as info:
        files.represent()
    message = str(info.value)
    assert f"{files.model_pt}: refused to load (Unsupported global: GLOBAL exec)" in message
    shown = "".join(traceback.format_exception(info.value))
    for advice in ("weights_only", "add_safe_globals", "safe_globals", "arbitrary code execution"):
        assert advice not in shown, advice
    assert not (tmp_path / "pickled_code_ran").exists()
    assert files.wrote_nothing()


def _foreign_state(arch: str = "small_cnn", **changed) -> dict:
    """The state_dict of another network than the tests' cnn (small_cnn for 1x8x8 digits, 10 classes, channels
    [4, 8], hidden 16): `arch` with those arguments `changed`."""
    args = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    args.update({"channels": [4, 8], "hidden": 16} if arch == "small_cnn" else {})
    return build_model(arch, **{**args, **changed}).state_dict()


MISMATCH_CASES = [
    ("3 classes", {"num_classes": 3},
     ["num_classes 10 in model.json vs 3 outputs in model.pt's final layer (head.weight of shape (3, 16))"]),
    ("3 channels", {"in_channels": 3},
     ["in_channels 1 in model.json vs 3 channel(s) in model.pt", "'mean' has shape (1, 3, 1, 1)"]),
    ("hidden 32", {"hidden": 32},
     ["arch 'small_cnn' with arch_args {'channels': [4, 8], 'hidden': 16}, image_size 8 in model.json give other "
      "layer shapes than model.pt's: body.6.weight (32, 128) in model.pt vs (16, 128) from model.json"]),
    ("another architecture", {"arch": "preact_resnet", "depth": 8, "width": 4},
     ["arch 'small_cnn' with arch_args {'channels': [4, 8], 'hidden': 16} in model.json:",
      "tensor(s) it needs are not in model.pt (e.g. ['body.0.bias'", "model.pt holds"]),
]


@pytest.mark.parametrize("what, changed, phrases", MISMATCH_CASES, ids=[c[0] for c in MISMATCH_CASES])
def test_model_json_and_model_pt_that_disagree(files, what, changed, phrases):
    """A model.pt of another network beside this model.json: both files and the field that disagrees are named."""
    torch.save(_foreign_state(**changed), files.model_pt)
    expect(CheckpointError, files.attack, f"{files.model_json} and {files.model_pt} disagree (model.pt does not match",
           *phrases, "expected the model.json written with that model.pt")
    assert files.wrote_nothing()


# ---- user data (npz), data_root, image folders -------------------------------------------------------------

def write_npz(path: Path, n_per_class=6, n_classes=10, shape=(1, 8, 8), **arrays) -> Path:
    """A small valid npz dataset (uint8 images, balanced labels) with `arrays` replacing or added (None: left out)."""
    rng = np.random.default_rng(0)
    n = n_per_class * n_classes
    data = {"x": rng.integers(0, 256, (n, *shape), dtype=np.uint8), "y": np.arange(n) % n_classes, **arrays}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def npz_config(files: Files, **entry) -> dict:
    """files.config with the model trained on dataset `own`, an npz file `own.npz` inside data_root."""
    cfg = copy.deepcopy(files.config)
    cfg["datasets"]["own"] = make_config(Path("unused"), own={"source": "npz", "path": "own.npz", **entry})[
        "datasets"]["own"]  # with the schema's defaults
    cfg["models"]["cnn"]["dataset"] = "own"
    return cfg


def own_npz(files: Files) -> Path:
    return Path(files.config["data_root"]) / "own.npz"


def test_a_valid_npz_dataset_is_read(files):
    """The control for the npz cases: float images in [0, 1], classes named by the file."""
    x = np.random.default_rng(1).random((20, 8, 8)).astype(np.float32)
    write_npz(own_npz(files), x=x, y=np.arange(20) % 2, classes=np.array(["cat", "dog"]))
    cfg = npz_config(files, test_fraction=0.5)
    spec = train.model_spec(cfg["models"]["cnn"], cfg["datasets"]["own"], cfg["data_root"], 0)
    assert (spec["in_channels"], spec["image_size"], spec["classes"]) == (1, 8, ["cat", "dog"])
    test = load_split(cfg["datasets"]["own"], "test", cfg["data_root"], 0)
    assert torch.equal(test.x[:, 0], torch.from_numpy(x[test.index]))


def nan_images(shape=(60, 1, 8, 8)):
    x = np.full(shape, 0.5, dtype=np.float32)
    x[3, 0, 2, 2] = np.nan
    return x


def inf_images(shape=(60, 1, 8, 8)):
    x = np.full(shape, 0.5, dtype=np.float64)
    x[7, 0, 0, 1] = -np.inf
    return x


NPZ_CASES = [
    # (what, arrays replaced in the file, phrases in the message)
    ("NaN in x", {"x": nan_images()}, ["array x holds 1 NaN or Inf", "expected finite pixel values in [0, 1]"]),
    ("Inf in x", {"x": inf_images()}, ["array x holds 1 NaN or Inf", "expected finite pixel values in [0, 1]"]),
    ("x outside [0, 1]", {"x": np.full((60, 1, 8, 8), 1.5, np.float32)},
     ["values in [1.5, 1.5]", "expected pixel values in [0, 1]"]),
    ("y of shape (N, 2)", {"y": np.zeros((60, 2), np.int64)}, ["array y has shape (60, 2)", "expected (60,)"]),
    ("y one label short", {"y": np.arange(59) % 10}, ["array y has shape (59,)", "expected (60,)"]),
    ("y not integers", {"y": np.arange(60) % 10 + 0.5}, ["array y has dtype float64", "expected integer class labels"]),
    ("no y", {"y": None}, ["holds arrays ['x']", "expected an .npz file (numpy.savez) with arrays x"]),
    ("flattened x", {"x": np.zeros((60, 64), np.uint8)}, ["array x has shape (60, 64)", "expected (N, C, H, W)"]),
    ("int32 x", {"x": np.zeros((60, 1, 8, 8), np.int32)}, ["dtype int32", "expected uint8 (0..255) or float"]),
    ("a class of one image", {"y": np.r_[np.arange(59) % 9, 9]}, ["no stratified train/test split",
                                                                   "expected at least 2 images per class"]),
    ("a negative label", {"y": np.r_[-1, np.arange(1, 60) % 10]}, ["array y holds negative labels ([-1, 9])",
                                                                   "expected class indices 0..K-1"]),
    ("fewer class names than classes", {"classes": np.array(["a", "b", "c"])},
     ["array classes names 3 classes but y holds labels 0..9 (10 classes)", "expected one name per class, 10 names"]),
    ("more class names than classes", {"classes": np.array(list("abcdefghijkl"))},
     ["array classes names 12 classes but y holds labels 0..9 only: class(es) 10 ('k'), 11 ('l') have no image",
      "expected one name per class of y (10 names), and images of every named class"]),
    ("classes without images", {"y": np.arange(60) % 5 * 2},
     ["class(es) 1, 3, 5, 7 of 0..8 have no image in y", "expected every class 0..8 to have images"]),
    ("one class", {"y": np.zeros(60, np.int64)}, ["1 class(es) ['0']", "expected at least 2 classes"]),
    ("no images", {"x": np.zeros((0, 1, 8, 8), np.uint8), "y": np.zeros(0, np.int64)},
     ["holds no images (array x has shape (0, 1, 8, 8))", "expected images of at least 2 classes"]),
    ("images of 1x1 pixel, too small for small_cnn", {"x": np.zeros((60, 1, 1, 1), np.uint8)},
     ["dataset 'own' (", "images are 1x1 but architecture 'small_cnn' (arch_args {'channels': [4, 8], 'hidden': 16}) "
      "needs images of at least 2x2", "expected images of side >= 2"]),
]


@pytest.mark.parametrize("what, arrays, phrases", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_bad_npz_dataset_refused_by_train(files, what, arrays, phrases):
    path = write_npz(own_npz(files), **arrays)
    out = files.out / "model"
    expect(DataError, lambda: run_train(npz_config(files), "cnn", out), path, *phrases)
    assert files.wrote_nothing()


def test_nan_in_npz_refused_by_represent_and_attack_too(files):
    """A file that went bad after training: the later stages refuse it alike (every split is checked)."""
    path = write_npz(own_npz(files), x=nan_images())
    cfg = npz_config(files)
    for stage in (files.represent, files.attack):
        expect(DataError, lambda: stage(config=cfg), path, "expected finite pixel values in [0, 1]")
    assert files.wrote_nothing()


def test_truncated_npz(files):
    path = write_npz(own_npz(files))
    truncate(path)
    expect(DataError, lambda: run_train(npz_config(files), "cnn", files.out / "m"), path,
           "not a readable .npz file", "expected an .npz file (numpy.savez) with arrays x")
    assert files.wrote_nothing()


def _not_an_npz(kind: str, path: Path) -> None:
    if kind == "a .npy array renamed .npz":
        np.save(path.with_suffix(".npy"), np.zeros((60, 1, 8, 8), np.uint8))
        path.with_suffix(".npy").rename(path)
    elif kind == "a text file":
        path.write_text("x,y\n0,1\n")
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize("kind, phrase", [
    ("a .npy array renamed .npz", "a single .npy array (numpy.save), not an .npz archive"),
    ("a text file", "not an .npz file (it starts with b'x,y\\n0,1\\n', not the zip archive numpy.savez writes)"),
    ("an empty file", "empty file (0 bytes)"),
], ids=["npy renamed npz", "text file", "empty file"])
def test_file_of_another_kind_named_npz(files, kind, phrase):
    path = own_npz(files)
    path.parent.mkdir(parents=True)
    _not_an_npz(kind, path)
    message = expect(DataError, lambda: run_train(npz_config(files), "cnn", files.out / "m"), path, phrase,
                     "expected an .npz file (numpy.savez) with arrays x (N, C, H, W) and y (N,)")
    assert "allow_pickle" not in message  # numpy's advice for what it takes for a pickle: not passed on
    assert files.wrote_nothing()


@pytest.mark.parametrize("fraction, phrase", [
    (0.97, "test_fraction 0.97 of 20 images leaves an empty split: 0 for training and 20 for test"),
    (0.01, "test_fraction 0.01 of 20 images leaves 19 for training and 1 for test"),
], ids=["empty training split", "one test image for two classes"])
def test_test_fraction_leaving_a_split_without_a_class(files, fraction, phrase):
    path = write_npz(own_npz(files), n_per_class=10, n_classes=2)
    expect(DataError, lambda: run_train(npz_config(files, test_fraction=fraction), "cnn", files.out / "m"), path,
           phrase, "expected at least one image of each of the 2 classes in each split (a test_fraction in [0.1, 0.9]")
    assert files.wrote_nothing()


def test_smallest_input_of_an_architecture():
    """Found by running the registry's networks: small_cnn's max-pool needs 2x2, the ResNets run on 1x1."""
    assert min_input_size("small_cnn", {"channels": [4, 8], "hidden": 16}, 1) == 2
    assert min_input_size("preact_resnet", {"depth": 8, "width": 4}, 3) == 1
    assert input_size_problem("small_cnn", {"channels": [4, 8], "hidden": 16}, 1, 1) == 2
    assert input_size_problem("small_cnn", {"channels": [4, 8], "hidden": 16}, 1, 2) is None


def test_npz_whose_pickle_would_run_code_never_runs_it(files, tmp_path):
    marker = tmp_path / "pickled_code_ran"
    path = own_npz(files)
    path.parent.mkdir(parents=True)
    np.savez(path, x=np.array([RunsCode(marker)], dtype=object), y=np.zeros(1, np.int64))
    expect(DataError, lambda: run_train(npz_config(files), "cnn", files.out / "m"), path,
           "allow_pickle=False", "expected an .npz file")
    assert not marker.exists()


def test_missing_npz_names_the_path_under_data_root(files):
    path = own_npz(files)
    expect(FileNotFoundError, lambda: run_train(npz_config(files), "cnn", files.out / "m"), path,
           f"under data_root {files.config['data_root']}", "expected the .npz file with arrays x and y")


def test_missing_data_root(files, tmp_path):
    cfg = copy.deepcopy(files.config)
    cfg["data_root"] = str(tmp_path / "no_such_data_root")
    cfg["datasets"]["digits"] = {"source": "mnist", "download": False}
    expect(FileNotFoundError, lambda: run_train(cfg, "cnn", files.out / "m"),
           f"data_root {cfg['data_root']} (config key 'data_root') does not exist", "expected MNIST's files there",
           "download: true")
    assert files.wrote_nothing()


def test_model_trained_on_another_input_shape(files):
    """The model was trained on 1x8x8 digits; its config now points it at a 3x8x8 dataset."""
    write_npz(own_npz(files), shape=(3, 8, 8))
    cfg = npz_config(files)
    for stage in (files.represent, files.attack):
        expect(CheckpointError, lambda: stage(config=cfg), files.model_pt, "trained on inputs of shape (1, 8, 8)",
               "dataset 'own' has inputs of shape (3, 8, 8)", "expected a model trained on that dataset")
    assert files.wrote_nothing()


def test_attack_on_a_model_with_other_classes_than_its_dataset(files):
    write_npz(own_npz(files), n_classes=2, n_per_class=10)  # 1x8x8 like digits, but 2 classes, not 10
    expect(CheckpointError, lambda: files.attack(config=npz_config(files)), files.model_pt,
           "trained on 10 classes", "dataset 'own' has 2 classes", "expected a model trained on that dataset's classes")
    assert files.wrote_nothing()


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_with_an_unreadable_image(files, tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    bad = folder / "dog" / "2.png"
    truncate(bad, 0.3)
    cfg = {"source": "imagefolder", "path": str(folder), "image_size": 8, "test_fraction": 0.5}
    expect(DataError, lambda: load_split(cfg, "train", tmp_path, 0), bad, "not a readable image",
           "expected an image file PIL can decode")


def test_image_folder_with_a_text_file_as_image(files, tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    bad = folder / "cat" / "1.png"
    bad.write_text("not an image\n")
    cfg = {"source": "imagefolder", "path": str(folder), "image_size": 8, "test_fraction": 0.5}
    expect(DataError, lambda: load_split(cfg, "test", tmp_path, 0), bad, "not a readable image",
           "expected an image file PIL can decode")


def test_image_folder_of_one_class(tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    shutil.rmtree(folder / "dog")
    cfg = {"source": "imagefolder", "path": str(folder), "image_size": 8, "test_fraction": 0.5}
    expect(DataError, lambda: load_split(cfg, "train", tmp_path, 0), f"image folder {folder}: 1 class(es) ['cat']",
           "expected at least 2 classes")


def test_image_folder_without_class_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    expect(DataError, lambda: load_split({"source": "imagefolder", "path": "empty"}, "train", tmp_path, 0),
           tmp_path / "empty", "expected one sub-folder per class holding image files")


# ---- config the schema cannot check, and config files ----------------------------------------------------------

def test_config_file_that_is_not_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("datasets:\n  digits: {source: digits\nmodels: [\n")
    expect(ConfigError, lambda: load(path), path, "not valid YAML", "expected a YAML mapping of config keys")


def test_config_file_that_is_a_list(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- datasets\n- models\n")
    expect(ConfigError, lambda: load(path), path, "the top level is a list", "expected a mapping of config keys")


def test_config_file_that_does_not_exist(tmp_path):
    path = tmp_path / "nope.yaml"
    expect(ConfigError, lambda: load(path), path, "cannot read the config file", "expected a YAML file")


def test_attack_stage_given_a_negative_eps(files):
    """The Snakefile's schema check refuses eps < 0 (tests/test_config.py); a config built in Python and handed
    to the stage directly is refused there too, naming the key, before any work."""
    cfg = copy.deepcopy(files.config)
    cfg["attacks"]["fgsm"]["eps"] = "-3/255"
    expect(ConfigError, lambda: files.attack(config=cfg), "config key 'attacks.fgsm.eps'",
           "must be a finite number >= 0")
    assert files.wrote_nothing()


def test_projection_of_a_trial_that_does_not_exist(files):
    trials = files.config["vrapi"]["trials"]
    expect(ConfigError, lambda: files.project(trial=trials), files.out / f"projection/{trials}.h5",
           f"trial {trials} does not exist", "config key 'vrapi.trials'", f"expected a trial in 0..{trials - 1}")
    assert files.wrote_nothing()


def test_stage_asked_for_a_model_the_config_does_not_define(files):
    expect(ConfigError, lambda: run_train(files.config, "resnet", files.out / "m"),
           "config key 'models.resnet'", "expected one of ['cnn']")
    assert files.wrote_nothing()


def test_results_path_that_is_a_file(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    expect(ConfigError, lambda: check_results_folder(tmp_path / "results" / "sub"),
           f"config key 'results': {tmp_path}/results/sub cannot be created: {tmp_path}/results is not a folder",
           "expected a folder for the outputs")


# ---- the workflow: real snakemake on a copy of the session's tiny run ---------------------------------------

@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    """A copy of the session's tiny run (times and snakemake's metadata kept), free to be damaged."""
    workdir = tmp_path_factory.mktemp("bad_input_workflow") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


class replaced:
    """Context manager: give `path` new bytes with its old mtime (damage Snakemake cannot see), restore after."""

    def __init__(self, path: Path, data: bytes):
        self.path, self.data = path, data

    def __enter__(self):
        self.before, self.stat = self.path.read_bytes(), self.path.stat()
        self.path.write_bytes(self.data)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))

    def __exit__(self, *exc):
        self.path.write_bytes(self.before)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))


@pytest.mark.slow
def test_workflow_corrupt_attack_dump_fails_only_its_consumer(run_dir):
    results = run_dir / "results"
    victim = "attacks/cnn/fgsm.h5"
    consumer, bystander = "projections/cnn/fgsm/pca/0.h5", "projections/cnn/cw/pca/0.h5"
    before = digests(results)
    saved = (results / consumer).read_bytes()
    bystander_before = h5_contents(results / bystander)
    with replaced(results / victim, (results / victim).read_bytes()[:2000]):
        out = snakemake(run_dir, "--keep-going", "--force", f"results/{consumer}", f"results/{bystander}",
                        check=False)
        after = digests(results)
    try:
        assert out.returncode != 0
        assert "Error in rule project" in out.stdout + out.stderr
        log = (run_dir / "logs/project/cnn/fgsm/pca/0.log").read_text()
        assert f"results/{victim}: not a readable HDF5 file" in log and HDF5_EXPECTED in log
        # The failed job leaves no output; the other job ran and rebuilt the same file (its provenance's
        # git commit aside: a commit may land while the tests run); nothing else changed, byte for byte.
        assert consumer not in after
        rebuilt = h5_contents(results / bystander)
        assert rebuilt.keys() == bystander_before.keys()
        assert all(np.array_equal(rebuilt[k], bystander_before[k]) for k in rebuilt if k != "@git_commit")
        for name in (consumer, victim, bystander):
            before.pop(name, None), after.pop(name, None)
        assert after == before
    finally:
        (results / consumer).write_bytes(saved)


@pytest.mark.slow
def test_workflow_projection_of_a_trial_that_does_not_exist(run_dir):
    before = digests(run_dir / "results")
    trials = yaml.safe_load(TINY.read_text())["vrapi"]["trials"]
    target = f"results/projections/cnn/fgsm/pca/{trials}.h5"
    out = snakemake(run_dir, target, check=False)
    assert out.returncode != 0
    log = (run_dir / f"logs/project/cnn/fgsm/pca/{trials}.log").read_text()
    assert f"{target}: trial {trials} does not exist (config key 'vrapi.trials' is {trials})" in log
    assert f"expected a trial in 0..{trials - 1}" in log
    assert digests(run_dir / "results") == before


# A checkpoint whose pickle would run code, through real Snakemake: tests/bad_inputs/test_job_refusals.py
# (row checkpoint-that-runs-code).


@pytest.mark.slow
def test_workflow_read_only_results_folder_fails_before_any_job():
    """root ignores permission bits, so as root the workflow runs as user nobody (setpriv); the results folder
    is read-only for that user while the working directory (.snakemake metadata, logs) stays writable."""
    workdir = Path(tempfile.mkdtemp(prefix="advpipe-readonly-"))  # under /tmp: pytest's own tmp is root-only
    try:
        results = workdir / "results"
        results.mkdir()
        prefix, env = [], None
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot make a folder read-only")
            nobody = pwd.getpwnam("nobody")
            for p in (workdir, results):
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
            prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--"]
            env = {**os.environ, "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / ".cache")}
        workdir.chmod(0o755)
        results.chmod(0o555)

        def run(*args):
            return subprocess.run(prefix + snakemake_cmd(workdir, *args), capture_output=True, text=True,
                                  cwd=workdir, env=env)

        out = run()
        text = out.stdout + out.stderr
        assert out.returncode != 0
        assert "config key 'results': folder results is not writable" in text, text
        assert "expected a folder this user can write the outputs into" in text
        assert not (workdir / "logs").exists() and list(results.iterdir()) == []  # no job started
        # The same user with a writable folder passes the check: it is the permission, not the set-up.
        results.chmod(0o755)
        out = run("--dry-run")
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
