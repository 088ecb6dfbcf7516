"""SPEC 5 training (gradient-direction study): the symmetric BCE task loss, the cosine alignment penalty L_alpha
(double backprop checked against finite differences), PGD training through the engine, fresh data per epoch and
per-sample extras in the loop, the best epoch by validation eps50, and bit-identical resuming of it all."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advpipe.train import train_classifier
from advpipe.train.alignment import CosineAlignment
from advpipe.train.attack_training import AttackTraining
from advpipe.train.loop import cross_entropy, task_loss
from advpipe.train.objectives import (ALL_OBJECTIVE_DEFAULTS, ALP_DEFAULTS, DIRECTION_DEFAULTS, OBJECTIVE_DEFAULTS,
                                      build_objective)
from advpipe.train.validation import BestByEps50

pytestmark = pytest.mark.usefixtures("one_thread")

PGD = {"method": "pgd", "eps": 0.05, "steps": 3, "step_size": 0.02, "loss": "logit"}
PLAIN = {"optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0, "augment": {"crop_padding": 0, "hflip": False}}


class Net(nn.Module):
    """A Classifier-shaped MLP on vectors: identity normalisation, tanh (smooth second derivatives); one logit d
    with scores (-d, d), or `classes` logits."""

    def __init__(self, dim: int = 4, hidden: int = 6, classes: int = 1, bn: bool = False):
        super().__init__()
        self.one_logit = classes == 1
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), *([nn.BatchNorm1d(hidden)] if bn else []),
                                 nn.Linear(hidden, classes))

    def normalize(self, x):
        return x

    def forward_normalized(self, z):
        return self.net(z)

    def decode(self, out):
        return torch.cat([-out, out], 1) if self.one_logit else out

    def forward(self, x):
        return self.decode(self.forward_normalized(x))


def _net(seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return Net(**kw).to(dtype)


def _batch(n=8, dim=4, seed=1, classes=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, dim, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


# ---- task loss ------------------------------------------------------------------------------------------------

def test_task_loss_symmetric_bce_and_unchanged_cross_entropy():
    model, (x, y) = _net(), _batch()
    d = model.forward_normalized(x)[:, 0]
    assert torch.allclose(task_loss(model, x, y), F.binary_cross_entropy_with_logits(d, y.double()),
                          rtol=1e-12, atol=0)
    multi, (x3, y3) = _net(classes=3), _batch(classes=3)
    assert torch.equal(task_loss(multi, x3, y3), F.cross_entropy(multi(x3), y3))  # bit for bit
    assert cross_entropy is task_loss


# ---- the alignment penalty ------------------------------------------------------------------------------------

def test_penalty_is_minus_lambda_for_parallel_dx():
    """dx parallel to grad_x L_task (any positive scale: natural units) gives cos 1, so L = L_task - lambda."""
    model, (x, y) = _net(), _batch()
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(task_loss(model, xg, y), xg)
    objective = CosineAlignment(lambda_penalty=0.3)
    task = task_loss(model, x, y)
    assert (objective(model, x, y, {"dx": 2.5 * grad}) - task).item() == pytest.approx(-0.3, abs=1e-12)
    assert (objective(model, x, y, {"dx": -grad}) - task).item() == pytest.approx(0.3, abs=1e-12)
    assert objective.epoch_log()["cosine"] == pytest.approx(0.0, abs=1e-12)  # mean of the two calls: +1, -1


def _finite_difference_check(model, loss_fn, h=1e-6):
    """Gradient of loss_fn() w.r.t. every parameter by autograd vs central differences."""
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(), params)
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        numeric = torch.empty_like(flat)
        for i in range(flat.numel()):  # a few dozen scalars: a loop over parameters, not samples
            keep = flat[i].item()
            flat[i] = keep + h
            up = loss_fn().item()
            flat[i] = keep - h
            down = loss_fn().item()
            flat[i] = keep
            numeric[i] = (up - down) / (2 * h)
        assert torch.allclose(g.view(-1), numeric, rtol=1e-5, atol=1e-8)
    return grads


def test_double_backprop_matches_finite_differences_binary():
    model, (x, y) = _net(), _batch()
    dx = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    objective = CosineAlignment(lambda_penalty=1.0)
    grads = _finite_difference_check(model, lambda: objective(model, x, y, {"dx": dx}))
    task_grads = torch.autograd.grad(task_loss(model, x, y), list(model.parameters()))
    # the penalty really contributes (create_graph): its gradient is not negligible
    assert sum((g - t).norm() for g, t in zip(grads, task_grads)) > 1e-3


def test_double_backprop_matches_finite_differences_multiclass():
    pytest.importorskip("advpipe.metrics.alignment")
    from advpipe.metrics.alignment import direction_gradient

    model, (x, y) = _net(classes=3), _batch(classes=3)
    dx_all = torch.randn(len(x), 3, x.shape[1], generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    objective = CosineAlignment(lambda_penalty=1.0)
    # c~ is piecewise constant in the parameters: the differences must not cross a switch
    _, closest = direction_gradient(model, x, y)
    grads = _finite_difference_check(model, lambda: objective(model, x, y, {"dx_all": dx_all}))
    assert torch.equal(direction_gradient(model, x, y)[1], closest)
    task_grads = torch.autograd.grad(task_loss(model, x, y), list(model.parameters()))
    assert sum((g - t).norm() for g, t in zip(grads, task_grads)) > 1e-3
    # the target direction is dx_all[i, c~]: parallel to grad(f_c~ - f_y) there gives -lambda exactly
    grad, closest = direction_gradient(model, x, y)
    dx_all[torch.arange(len(x)), closest] = 3 * grad.detach()
    assert (objective(model, x, y, {"dx_all": dx_all}) - task_loss(model, x, y)).item() == pytest.approx(
        -1.0, abs=1e-10)


def test_batchnorm_statistics_updated_once_per_batch():
    """The multi-class path runs a second forward pass (the direction gradient); the running statistics must
    move as after one training forward pass."""
    pytest.importorskip("advpipe.metrics.alignment")
    model, (x, y) = _net(classes=3, bn=True), _batch(classes=3)
    model.train()
    reference = _net(classes=3, bn=True).train()
    reference(x)
    CosineAlignment()(model, x, y, {"dx_all": torch.ones(len(x), 3, x.shape[1], dtype=x.dtype)})
    bn, ref = model.net[2], reference.net[2]
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)
    assert bn.num_batches_tracked.item() == 1


# ---- attack training ------------------------------------------------------------------------------------------

class Spy(Net):
    """Records the inputs of every training-mode forward pass (the attack runs in eval mode)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def forward_normalized(self, z):
        if self.training:
            self.seen.append(z.detach().clone())
        return super().forward_normalized(z)


def test_attack_training_trains_on_adversarials_within_eps():
    torch.manual_seed(0)
    model = Spy().double().train()
    x, y = _batch(n=16)
    objective = build_objective({"attack_training": PGD}, num_classes=2, seed=3)
    assert isinstance(objective, AttackTraining) and objective.loss is task_loss
    loss = objective(model, x, y)
    assert len(model.seen) == 1 and model.training  # one training forward, on the adversarial batch only
    x_adv = model.seen[0]
    assert (x_adv - x).abs().max() <= 0.05 + 1e-12 and (x_adv - x).abs().max() > 0.04
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert loss.item() == pytest.approx(task_loss(model, x_adv, y).item(), rel=1e-12)
    # per-batch seeds from the objective's own generator: reproducible, different from batch to batch
    again = build_objective({"attack_training": PGD}, num_classes=2, seed=3)
    assert torch.equal(again.perturb(model, x, y), x_adv)
    assert not torch.equal(again.perturb(model, x, y), x_adv)


def test_build_objective_direction_keys_defaults_and_refusals():
    assert DIRECTION_DEFAULTS == {"cosine_penalty": False, "lambda_penalty": 0.1, "attack_training": None}
    assert ALL_OBJECTIVE_DEFAULTS == {**OBJECTIVE_DEFAULTS, **ALP_DEFAULTS, **DIRECTION_DEFAULTS}
    assert build_objective({}, num_classes=2, seed=0) is task_loss
    assert build_objective({"cosine_penalty": False, "attack_training": None}, num_classes=2, seed=0) is task_loss
    penalty = build_objective({"cosine_penalty": True}, num_classes=2, seed=0)
    assert isinstance(penalty, CosineAlignment) and penalty.lambda_penalty == 0.1 and penalty.uses_extras
    both = build_objective({"cosine_penalty": True, "lambda_penalty": 0.3, "attack_training": PGD}, num_classes=2,
                           seed=0)
    assert isinstance(both, AttackTraining) and both.uses_extras and both.loss.lambda_penalty == 0.3
    for cfg, match in [({"attack_training": PGD, "adversarial_training": True}, "attack_training"),
                       ({"attack_training": PGD, "alp": True}, "attack_training"),
                       ({"cosine_penalty": True, "robust_additions": True}, "cosine_penalty"),
                       ({"cosine_penalty": "yes"}, "cosine_penalty"),
                       ({"attack_training": "pgd"}, "attack_training"),
                       ({"attack_training": {**PGD, "eps": [0.01, 0.02]}}, "attack_training"),
                       ({"attack_training": {**PGD, "epz": 0.1}}, "attack_training.*epz"),
                       ({"cosine_penalty": True, "lambda_penalty": -1}, "lambda_penalty")]:
        with pytest.raises(ValueError, match=match):
            build_objective(cfg, num_classes=2, seed=0)


# ---- the loop: fresh data per epoch, per-sample extras --------------------------------------------------------

class ExtrasSpy:
    """An objective with extras that records what each call received."""

    uses_extras = True

    def __init__(self):
        self.calls = []

    def __call__(self, model, x, y, extras):
        self.calls.append((x.detach().clone(), y.clone(), {k: v.clone() for k, v in extras.items()}))
        return task_loss(model, x, y)


def test_epoch_data_feeds_each_epoch_its_own_sample_with_its_extras():
    asked = []

    def epoch_data(e):
        asked.append(e)
        n = 10 + e  # the size may change from epoch to epoch
        x = torch.full((n, 4), e / 10, dtype=torch.float64)
        x[:, 1] = torch.arange(n) / 100  # which row
        return x, torch.arange(n) % 2, {"tag": torch.full((n,), float(e)), "row": torch.arange(n)}

    spy, model = ExtrasSpy(), _net()
    x1, y1, _ = epoch_data(1)
    asked.clear()
    rows = train_classifier(model, x1, y1, {**PLAIN, "epochs": 3, "batch_size": 4}, seed=0, objective=spy,
                            log=lambda _: None, progress=False, epoch_data=epoch_data)
    assert asked == [1, 2, 3] and len(rows) == 3
    per_epoch = {1: [], 2: [], 3: []}
    for x, y, extras in spy.calls:
        e = int(extras["tag"][0].item())
        assert torch.all(extras["tag"] == e) and torch.allclose(x[:, 0], torch.full((len(x),), e / 10,
                                                                                   dtype=x.dtype))
        assert torch.equal(extras["row"], torch.round(x[:, 1] * 100).long()) and torch.equal(y, extras["row"] % 2)
        per_epoch[e].append(extras["row"])
    for e, batches in per_epoch.items():  # every sample of the epoch once, shuffled
        assert sorted(torch.cat(batches).tolist()) == list(range(10 + e))


def test_fixed_extras_follow_the_shuffle_and_refusals():
    x = torch.rand(12, 4, dtype=torch.float64)
    y = torch.arange(12) % 2
    spy = ExtrasSpy()
    train_classifier(_net(), x, y, {**PLAIN, "epochs": 1, "batch_size": 5}, seed=0, objective=spy,
                     log=lambda _: None, progress=False, extras={"copy": x * 2})
    assert all(torch.equal(extras["copy"], xb * 2) for xb, _, extras in spy.calls)
    recipe = {**PLAIN, "epochs": 1, "batch_size": 5}
    with pytest.raises(ValueError, match="pass extras"):
        train_classifier(_net(), x, y, recipe, 0, objective=spy, progress=False)
    with pytest.raises(ValueError, match="not augmented"):
        train_classifier(_net(), x, y, {**recipe, "augment": {"crop_padding": 0, "hflip": True}}, 0,
                         objective=spy, progress=False, extras={"copy": x})
    with pytest.raises(ValueError, match="one row per sample"):
        train_classifier(_net(), x, y, recipe, 0, objective=spy, progress=False, extras={"copy": x[:3]})
    with pytest.raises(ValueError, match="extras=None"):
        train_classifier(_net(), x, y, recipe, 0, objective=spy, progress=False, extras={"copy": x},
                         epoch_data=lambda e: (x, y, {"copy": x}))


# ---- best epoch by validation eps50 ---------------------------------------------------------------------------

class Scripted(BestByEps50):
    """Error curves from a script instead of attacks."""

    def __init__(self, curves, *args, **kw):
        super().__init__(*args, **kw)
        self.curves = iter(curves)

    def errors(self, model):
        return next(self.curves)


def test_best_by_eps50_keeps_the_best_epoch_ties_earlier():
    from advpipe.attacks import build_attack

    attack = build_attack({**PGD, "eps": [0.1, 0.2]})
    x, y = _batch()
    curves = [[0.0, 0.2, 0.8],   # eps50 0.15 (SPEC 5's worked example)
              [0.0, 0.1, 0.7],   # thr 0.5: 0.1 + 0.4/0.6 * 0.1 = 0.1667, best
              [0.0, 0.1, 0.4],   # thr 0.39: 0.1 + 0.29/0.3 * 0.1 = 0.1967, best
              [0.0, 0.1, 0.4],   # a tie: the earlier epoch stays
              [0.1, 0.6, 0.9]]   # worse: 0.4 / 0.5 * 0.1 = 0.08
    best = Scripted(curves, x, y, attack)
    assert best.grid == [0.0, 0.1, 0.2]
    model = _net()
    rows = []
    for epoch in range(1, 6):
        with torch.no_grad():
            model.net[0].bias.fill_(epoch)
        rows.append(best(epoch, model))
    assert [r["val_eps50"] for r in rows] == pytest.approx([0.15, 0.1 + 0.4 / 6, 0.1 + 0.29 / 3, 0.1 + 0.29 / 3,
                                                            0.4 / 0.5 * 0.1])
    assert [r["best"] for r in rows] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert rows[-1]["val_accuracy"] == pytest.approx(0.9)
    assert best.epoch == 3 and torch.all(best.state["net.0.bias"] == 3)
    fresh = Scripted([], x, y, attack)
    fresh.load_state_dict(best.state_dict())
    assert (fresh.epoch, fresh.eps50) == (3, best.eps50) and torch.equal(fresh.state["net.0.bias"],
                                                                         best.state["net.0.bias"])


def test_best_by_eps50_attacks_the_grid_with_its_own_stream():
    """A real run: clean error first, then the attack's errors growing with eps; no global stream touched."""
    from advpipe.attacks import build_attack

    model = _net()
    x, y = _batch(n=64)
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct at eps 0
    best = BestByEps50(x, y, build_attack({**PGD, "eps": [0.02, 0.2, 1.0], "steps": 10, "step_size": None}),
                       batch_size=20, seed=1)
    before = torch.get_rng_state()
    err = best.errors(model)
    assert torch.equal(torch.get_rng_state(), before)
    assert err[0] == 0.0 and err == sorted(err) and err[-1] > 0.5
    row = best(1, model)
    assert row["val_accuracy"] == 1.0 and 0 < row["val_eps50"] < 1.0 and best.epoch == 1
    with pytest.raises(ValueError, match="increase"):
        BestByEps50(x, y, build_attack({**PGD, "eps": [0.2, 0.1]}))


# ---- resuming ---------------------------------------------------------------------------------------------

DIM, N = 8, 64


def spheres(e: int):
    """A small Spheres-like sample for epoch e (radius 1 -> y 0, 1.3 -> y 1), in pixels of the natural range
    [-1.5, 1.5], with dx = (1 - 2y) x in natural units."""
    g = torch.Generator().manual_seed(100 + e)
    y = torch.randint(0, 2, (N,), generator=g)
    v = torch.randn(N, DIM, generator=g)
    natural = v / v.norm(dim=1, keepdim=True) * (1 + 0.3 * y[:, None])
    return (natural + 1.5) / 3, y, {"dx": (1 - 2 * y[:, None]) * natural}


def test_cosine_alignment_with_epoch_data_resumes_bit_identical(tmp_path):
    from advpipe.attacks import build_attack

    recipe = {**PLAIN, "epochs": 3, "batch_size": 16}
    x_val, y_val, _ = spheres(0)

    def run(state_path=None, log=lambda _: None):
        torch.manual_seed(0)
        model = Net(dim=DIM, hidden=16, bn=True)
        objective = build_objective({"cosine_penalty": True, "attack_training": {**PGD, "eps": 0.01}},
                                    num_classes=2, seed=1)
        best = BestByEps50(x_val, y_val, build_attack({**PGD, "eps": [0.02, 0.05, 0.1], "steps": 2}), seed=2)
        x1, y1, _ = spheres(1)
        rows = train_classifier(model, x1, y1, recipe, seed=0, objective=objective, log=log, progress=False,
                                on_epoch_end=best, epoch_data=spheres, state_path=state_path,
                                fingerprint=None if state_path is None else "direction-resume")
        return model.state_dict(), rows, objective.generator.get_state(), best.state_dict()

    reference = run()
    assert all(math.isfinite(r["cosine"]) and "val_eps50" in r for r in reference[1])

    def crash(line):
        if line.startswith("epoch 3"):
            raise KeyboardInterrupt  # after epoch 3's row, before its state is saved: epoch 2's state remains
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(state, crash)
    lines = []
    resumed = run(state, lines.append)
    assert lines[0].startswith("resuming from") and [line.split(":")[0] for line in lines[1:]] == ["epoch 3"]
    assert resumed[1] == reference[1]
    assert all(torch.equal(resumed[0][k], reference[0][k]) for k in reference[0])
    assert torch.equal(resumed[2], reference[2])
    assert resumed[3]["epoch"] == reference[3]["epoch"] and torch.equal(resumed[3]["generator"],
                                                                        reference[3]["generator"])


def test_best_by_eps50_skips_epochs_below_the_accuracy_floor():
    """An epoch at chance (error 0.49 everywhere, then 0.51) shows a spurious eps50; with min_accuracy it is not
    eligible, and the first epoch above the floor is kept even with a smaller eps50."""
    from advpipe.attacks import build_attack

    x, y = _batch()
    curves = [[0.49, 0.49, 0.51],  # chance: thr 0.5, crossing between 0.1 and 0.2 -> 0.15
              [0.0, 0.4, 0.9]]     # a real network: thr 0.5, 0.1 + 0.1 / 0.5 * 0.1 = 0.12
    best = Scripted(curves, x, y, build_attack({**PGD, "eps": [0.1, 0.2]}), min_accuracy=0.9)
    model = _net()
    rows = [best(epoch, model) for epoch in (1, 2)]
    assert [r["val_eps50"] for r in rows] == pytest.approx([0.15, 0.12])
    assert [r["best"] for r in rows] == [0.0, 1.0] and best.epoch == 2
