"""Resumable training (advpipe.train.resume): a training killed with SIGKILL and rerun ends bit-identical to an
uninterrupted one (weights, log rows, objective and callback state), for plain CE, SPEC 2's adversarial training
+ robust additions (psi integrator, shared generator) and a stateful on_epoch_end callback; a state saved for
another run, an unreadable one or one that does not fit starts over; a failed save leaves the previous state."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advpipe.train import resume, train_classifier

# The training jobs, importable in-process and runnable as a script: one thread (same kernels, same bits in
# every process), tiny models on a few hundred scikit-learn digits.
SCRIPT = r'''
import json
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

from advpipe.models import build_model
from advpipe.train import build_objective, evaluate_accuracy, resume, train_classifier

EPOCHS = 6
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


def digits(n, offset=0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[offset:offset + n], dtype=torch.float32)[:, None] / 16
    return x, torch.tensor(d.target[offset:offset + n])


class NoisyCE:
    """CE with dropout on the logits (torch's global RNG) and a loss scale from numpy's and python's global
    RNGs: the run depends on all three global streams, which a resume must restore."""

    def __call__(self, model, x, y):
        scale = 1 + 0.05 * float(np.random.rand()) + 0.05 * random.random()
        return scale * F.cross_entropy(F.dropout(model(x), 0.2, training=True), y)


class Best:
    """A BestCheckpoint-like callback: validation accuracy per epoch, the best epoch's weights, a history."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.accuracy, self.epoch, self.state, self.history = -1.0, 0, None, []

    def __call__(self, epoch, model):
        acc = evaluate_accuracy(model, self.x, self.y)
        self.history.append(acc)
        if acc > self.accuracy:
            self.accuracy, self.epoch = acc, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"val_accuracy": acc, "best": float(self.epoch == epoch)}

    def state_dict(self):
        return {"accuracy": self.accuracy, "epoch": self.epoch, "state": self.state, "history": list(self.history)}

    def load_state_dict(self, state):
        self.accuracy, self.epoch = float(state["accuracy"]), int(state["epoch"])
        self.state = None if state["state"] is None else {k: v.clone() for k, v in state["state"].items()}
        self.history = list(state["history"])


def setup(scenario, seed=0, channels=(8, 16)):
    """(model, x, y, recipe, objective, callback) of one scenario, every global stream seeded."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    aug = {"crop_padding": 1, "hflip": True}
    if scenario == "ce":
        x, y = digits(384)
        model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, channels=channels, hidden=32)
        recipe = {**SGD, "epochs": EPOCHS, "batch_size": 64, "lr_milestones": [3, 5], "augment": aug}
        return model, x, y, recipe, None, None
    if scenario == "all":  # config.yaml preact_all: adversarial training (l2min) + robust additions
        x, y = digits(128)
        model = build_model("preact_resnet", in_channels=1, num_classes=10, image_size=8, depth=8, width=4,
                            activation="hhrelu")
        recipe = {**SGD, "lr": 0.1, "epochs": EPOCHS, "batch_size": 64, "lr_milestones": [4],
                  "augment": {"crop_padding": 1, "pad_mode": "replicate", "hflip": False}}
        objective = build_objective({"adversarial_training": True, "l2_min": True, "robust_additions": True,
                                     "adapt_psi_0": 5, "adv_steps": 3, "adapt_l_target": 3.0},  # I grows
                                    num_classes=10, seed=seed + 1)
        return model, x, y, recipe, objective, None
    if scenario == "callback":
        x, y = digits(384)
        model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, channels=channels, hidden=32)
        recipe = {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "epochs": EPOCHS, "batch_size": 64,
                  "augment": aug}
        return model, x, y, recipe, NoisyCE(), Best(*digits(200, offset=1000))
    raise KeyError(scenario)


def train(scenario, state_path=None, fingerprint=None, log=lambda _: None, seed=0, channels=(8, 16)):
    """Train one scenario; return what a run must reproduce: weights, rows, objective and callback state."""
    model, x, y, recipe, objective, callback = setup(scenario, seed, channels)
    kwargs = {} if objective is None else {"objective": objective}
    rows = train_classifier(model, x, y, recipe, seed, log=log, progress=False, on_epoch_end=callback,
                            state_path=state_path, fingerprint=fingerprint, **kwargs)
    return {"model": model.state_dict(), "rows": rows, "objective": resume.objective_state(objective),
            "callback": resume.callback_state(callback)}


if __name__ == "__main__":
    # argv[1]: JSON list of jobs {scenario, state, out, slow}; slow sleeps in every log line so a kill lands
    # mid-run; the log goes to stdout.
    for job in json.loads(sys.argv[1]):
        def log(line, slow=job.get("slow", False)):
            print(line, flush=True)
            if slow:
                time.sleep(0.3)
        result = train(job["scenario"], job.get("state"), job.get("fingerprint"), log=log)
        torch.save(result, job["out"])
'''

SCENARIOS = ("ce", "all", "callback")


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume_script") / "train_job.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def jobs(script, one_thread):
    """The script imported in-process (one torch thread, as in its subprocesses); global RNGs put back after."""
    spec = importlib.util.spec_from_file_location("train_job", script)
    module = importlib.util.module_from_spec(spec)
    rng = resume.global_rng_state(torch.device("cpu"))
    spec.loader.exec_module(module)
    yield module
    resume.set_global_rng_state(rng, torch.device("cpu"))


def assert_same(a, b, path="result"):
    """Nested equality, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def run_script(script, jobs_, timeout=120):
    return subprocess.run([sys.executable, str(script), json.dumps(jobs_)], capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


def state_epoch(path: Path) -> int:
    try:
        return int(resume.read_state(path)["epoch"])
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError):
        return 0  # not there yet


def test_sigkill_mid_run_resumes_bit_identical(script, jobs, tmp_path):
    """For each scenario: a real training process is SIGKILLed once its state reports epoch >= 2, rerun, and
    ends equal to an uninterrupted run (no state_path, in this process) in weights, rows, objective state
    (integrator, generators) and callback state. The three killed jobs run side by side."""
    states = {s: tmp_path / "state" / f"{s}.pt" for s in SCENARIOS}
    procs = {s: subprocess.Popen(
        [sys.executable, str(script), json.dumps([{"scenario": s, "state": str(states[s]), "fingerprint": f"fp-{s}",
                                                   "out": str(tmp_path / f"{s}.pt"), "slow": True}])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in SCENARIOS}
    killed_at = {}
    try:
        reference = {s: jobs.train(s) for s in SCENARIOS}  # meanwhile
        deadline = time.monotonic() + 90
        while len(killed_at) < len(SCENARIOS):
            for s, proc in procs.items():
                if s not in killed_at and state_epoch(states[s]) >= 2:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    killed_at[s] = state_epoch(states[s])
                assert s in killed_at or proc.poll() is None, f"{s}: ended before the kill: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"no state of epoch 2 after 90 s: {sorted(killed_at)} killed"
            time.sleep(0.02)
    finally:
        for proc in procs.values():  # a failed assertion leaves no process behind
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    for s, proc in procs.items():
        assert proc.returncode == -signal.SIGKILL and 2 <= killed_at[s] < 6, (s, proc.returncode, killed_at[s])
        assert not (tmp_path / f"{s}.pt").exists()
    log = run_script(script, [{"scenario": s, "state": str(states[s]), "fingerprint": f"fp-{s}",
                               "out": str(tmp_path / f"{s}.pt")} for s in SCENARIOS])
    for s in SCENARIOS:
        assert f"resuming from {states[s]}: epochs 1..{killed_at[s]} done" in log
        got = torch.load(tmp_path / f"{s}.pt", weights_only=True)
        assert_same(reference[s], got, s)
        assert len(got["rows"]) == 6
    # the objective's and the callback's state moved during training (so restoring them mattered)
    robust = reference["all"]["objective"]
    assert robust["loss"]["robust_integration"] > 0 and robust["generator"].dtype == torch.uint8
    assert len(reference["callback"]["callback"]["history"]) == 6
    for s in SCENARIOS:  # the state is the caller's to delete; clear_state does it
        resume.clear_state(states[s])
    assert list((tmp_path / "state").iterdir()) == []


def test_state_path_changes_nothing_and_final_state_skips_training(jobs, tmp_path):
    """Saving draws nothing; a rerun on a finished state trains no epoch and returns the same result."""
    ref = jobs.train("ce")
    state = tmp_path / "ce.pt"
    assert_same(ref, jobs.train("ce", state, "fp"))
    lines = []
    assert_same(ref, jobs.train("ce", state, "fp", log=lines.append))
    assert lines == [f"resuming from {state}: epochs 1..6 done"]


def test_resume_within_one_process(jobs, tmp_path, monkeypatch):
    """Resume from every epoch's state (saved copies) of the robust objective and the callback scenario."""
    for s in ("all", "callback"):
        ref = jobs.train(s)
        state = tmp_path / f"{s}.pt"
        copies = []
        real_save = resume.save_state

        def save(path, st, verify=False):
            real_save(path, st, verify)
            copies.append(Path(path).read_bytes())

        with monkeypatch.context() as m:
            m.setattr(resume, "save_state", save)
            jobs.train(s, state, "fp")
        for epoch in (1, 4):
            state.write_bytes(copies[epoch - 1])
            lines = []
            assert_same(ref, jobs.train(s, state, "fp", log=lines.append), f"{s} from epoch {epoch}")
            assert f"epochs 1..{epoch} done" in lines[0]


def test_fingerprint_mismatch_starts_over(jobs, tmp_path):
    state = tmp_path / "ce.pt"
    jobs.train("ce", state, "other run", seed=5)  # another run's finished state at the same path
    lines = []
    assert_same(jobs.train("ce"), jobs.train("ce", state, "this run", log=lines.append))
    assert "saved for another run" in lines[0] and "starting over" in lines[0]
    # the caller's fingerprint equal, the loop's part (seed, recipe, data, device) not: starts over too
    jobs.train("ce", state, "same", seed=5)
    lines = []
    assert_same(jobs.train("ce"), jobs.train("ce", state, "same", log=lines.append))
    assert "saved for another run" in lines[0]


def test_state_that_does_not_fit_is_rolled_back(jobs, tmp_path):
    """A caller fingerprint that misses the architecture: the state fails to load into the model; everything
    is put back and training starts over, equal to an uninterrupted run."""
    state = tmp_path / "ce.pt"
    jobs.train("ce", state, "fp", channels=(8, 16))
    lines = []
    got = jobs.train("ce", state, "fp", channels=(4, 8), log=lines.append)
    assert "does not fit this run" in lines[0] and "starting over" in lines[0]
    assert_same(jobs.train("ce", channels=(4, 8)), got)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickled code"])
def test_unreadable_state_is_logged_and_training_starts_over(jobs, tmp_path, damage):
    state = tmp_path / "ce.pt"
    marker = tmp_path / "code ran"
    if damage == "pickled code":  # loading must not execute it (weights_only)
        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))
        torch.save({"format": resume.FORMAT, "evil": Evil()}, state)
    else:
        jobs.train("ce", state, "fp")
        data = state.read_bytes()
        state.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"not a torch file")
    lines = []
    assert_same(jobs.train("ce"), jobs.train("ce", state, "fp", log=lines.append))
    assert lines[0].startswith(f"resume state {state} is unreadable") and "starting over" in lines[0]
    assert not marker.exists()


def test_failed_save_leaves_previous_state(jobs, tmp_path, monkeypatch):
    """A save that dies half-way through writing (disk full) leaves the previous epoch's state byte for byte
    and no temporary file; resuming from it ends as the uninterrupted run."""
    state = tmp_path / "ce.pt"
    written = []
    real_write = resume._write_all

    def write(f, data):
        written.append(bytes(data))
        if len(written) == 3:
            f.write(bytes(data)[:len(data) // 2])
            raise OSError(28, "No space left on device")
        real_write(f, data)

    monkeypatch.setattr(resume, "_write_all", write)
    with pytest.raises(OSError, match="No space left"):
        jobs.train("ce", state, "fp")
    assert state.read_bytes() == written[1] and resume.read_state(state)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ce.pt"]
    monkeypatch.setattr(resume, "_write_all", real_write)
    lines = []
    assert_same(jobs.train("ce"), jobs.train("ce", state, "fp", log=lines.append))
    assert "epochs 1..2 done" in lines[0]


def test_state_path_needs_fingerprint_and_loadable_states(jobs, tmp_path):
    model, x, y, recipe, _, _ = jobs.setup("ce")
    with pytest.raises(ValueError, match="fingerprint"):
        train_classifier(model, x, y, recipe, 0, state_path=tmp_path / "s.pt", progress=False)

    class Opaque:  # a callback whose state torch will not load safely: fails at the first save, loudly
        def __call__(self, epoch, model):
            return {}

        def state_dict(self):
            return {"obj": object()}

        def load_state_dict(self, state):
            pass

    with pytest.raises(TypeError, match="weights_only"):
        train_classifier(model, x, y, recipe, 0, state_path=tmp_path / "s.pt", fingerprint="fp", progress=False,
                         log=lambda _: None, on_epoch_end=Opaque())
    assert not (tmp_path / "s.pt").exists()


def test_fingerprint_and_clear_state(tmp_path):
    assert resume.fingerprint({"b": 1, "a": [1, 2]}, 3) == resume.fingerprint({"a": [1, 2], "b": 1}, 3)
    assert resume.fingerprint({"a": 1}) != resume.fingerprint({"a": 2})
    state = tmp_path / "s.pt"
    state.write_bytes(b"x")
    (tmp_path / ".s.pt.abc123.tmp").write_bytes(b"partial")  # what a kill during a save leaves
    (tmp_path / "other.pt").write_bytes(b"y")
    resume.clear_state(state)
    resume.clear_state(state)  # nothing there: no error
    assert [p.name for p in tmp_path.iterdir()] == ["other.pt"]
