"""Adversarial logit pairing (SPEC 4, advpipe.train.alp): the loss against hand-written formulas, the pgdll adversary
of the shared attack engine (least-likely targets, budget, random start, frozen BatchNorm), its config keys and a
short real training run."""
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from advpipe.attacks import PGD
from advpipe.config import ConfigError, validate
from advpipe.data import load_split
from advpipe.models import build_model
from advpipe.models.base import Classifier
from advpipe.runtime import derive_seed
from advpipe.train import train_classifier
from advpipe.train.alp import ALP_DEFAULTS, AdversarialLogitPairing, alp_loss
from advpipe.train.loop import cross_entropy
from advpipe.train.objectives import ALL_OBJECTIVE_DEFAULTS, DIRECTION_DEFAULTS, OBJECTIVE_DEFAULTS, build_objective

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
EPS, STEP = 16 / 255, 2 / 255


class BNNet(Classifier):
    """Flatten -> BatchNorm1d -> Linear(16) -> ReLU -> Linear(C): tiny, with BatchNorm running statistics."""

    def __init__(self, in_features: int = 16, classes: int = 5, bn: bool = True):
        super().__init__(1)
        self.body = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(in_features) if bn else nn.Identity(),
                                  nn.Linear(in_features, 16), nn.ReLU())
        self.head = nn.Linear(16, classes)


def _batch(n=12, side=4, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels on the box edges: the clamp to [0, 1] matters
    return x, torch.randint(0, classes, (n,), generator=g)


def _net(seed=0, bn=True):
    torch.manual_seed(seed)
    net = BNNet(bn=bn)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        if bn:
            bnl = net.body[1]
            bnl.running_mean.uniform_(0.3, 0.7)
            bnl.running_var.uniform_(0.05, 0.2)
            bnl.weight.uniform_(0.5, 1.5)
            bnl.bias.uniform_(-0.2, 0.2)
    return net


# ---- the loss -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("train_mode", [False, True])
def test_no_adversarial_half_and_no_pairing_is_label_smoothed_ce(train_mode):
    net, (x, y) = _net(), _batch()
    net.train(train_mode)
    obj = AdversarialLogitPairing(weight=0.0, steps=1)
    loss = obj.loss(net, x, x, y)  # x_adv = x: the mixed batch is the clean batch twice
    with torch.no_grad():
        logits = net(x)  # in train mode BN normalises [x; x] with the same batch mean and (biased) variance as x
    expected = F.cross_entropy(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    # and the independent formula of label smoothing: (1 - s) * CE + s * mean_c(-log p_c)
    logp = logits.log_softmax(1)
    by_hand = (0.9 * -logp.gather(1, y[:, None])[:, 0] + 0.1 * -logp.mean(1)).mean()
    torch.testing.assert_close(loss.detach(), by_hand, rtol=1e-6, atol=1e-6)


def test_alp_loss_equals_reference_formula():
    net, (x, y) = _net(), _batch()
    x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    obj = AdversarialLogitPairing(weight=0.5)
    net.train()
    before = copy.deepcopy(net)
    loss = obj.loss(net, x, x_adv, y)
    with torch.no_grad():
        logits = before(torch.cat([x, x_adv]))  # one train-mode pass over the mixed batch, as the original
    clean, adv = logits[:len(x)], logits[len(x):]
    expected = (F.cross_entropy(logits, torch.cat([y, y]), label_smoothing=0.1)
                + 0.5 * ((clean - adv) ** 2).mean())
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    assert (clean - adv).abs().max() > 0.01  # the pairing term is not trivially zero here
    # the helper too, with other weight and smoothing; the terms are logged per epoch
    total, ce, pairing = alp_loss(clean, adv, y, weight=2.0, label_smoothing=0.0)
    torch.testing.assert_close(total, F.cross_entropy(logits, torch.cat([y, y])) + 2 * ((clean - adv) ** 2).mean())
    log = obj.epoch_log()
    assert set(log) == {"ce", "logit_pairing"} and log["logit_pairing"] == pytest.approx(
        ((clean - adv) ** 2).mean().item(), rel=1e-5)
    assert math.isnan(obj.epoch_log()["ce"])  # reset after each epoch


def test_objective_call_is_loss_on_its_own_adversarial_batch():
    net, (x, y) = _net(), _batch()
    net.train()
    obj = AdversarialLogitPairing(weight=0.5, steps=3)
    state = obj.generator.get_state()
    x_adv, _ = obj.perturb(copy.deepcopy(net), x, y)
    obj.generator.set_state(state)
    reference = obj.loss(copy.deepcopy(net), x, x_adv, y)
    obj.generator.set_state(state)
    torch.testing.assert_close(obj(net, x, y), reference)


# ---- the pgdll adversary --------------------------------------------------------------------------------------

def test_pgdll_targets_budget_box_and_original_algorithm():
    net, (x, y) = _net(), _batch()
    net.train()
    obj = AdversarialLogitPairing(eps=EPS, step=STEP, steps=10)
    assert isinstance(obj.attack, PGD) and obj.attack.criterion_.targeted
    assert (obj.attack.random_start, obj.attack.projection, obj.attack.quantize) == (True, "clip", False)
    state = obj.generator.get_state()
    x_adv, targets = obj.perturb(net, x, y)
    assert net.training  # restored
    net.eval()
    with torch.no_grad():
        clean = net(x)
        adv = net(x_adv)
    assert torch.equal(targets, clean.argmin(1))  # least-likely class of the clean (inference-mode) prediction
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > EPS / 2  # it moved
    # descending the target's cross-entropy: the least-likely class became more likely for every sample
    assert (F.cross_entropy(adv, targets, reduction="none") < F.cross_entropy(clean, targets, reduction="none")).all()

    # tensorflow/models adversarial_logit_pairing generate_pgd_common, written out: uniform start in the ball,
    # clipped; steps x <- clip(x - step * sign(grad sum CE(target)), max(x0 - eps, 0), min(x0 + eps, 1)).
    obj.generator.set_state(state)
    seed = int(torch.randint(0, 2 ** 31 - 1, (), generator=obj.generator))  # the per-batch attack seed
    noise = torch.empty_like(x).uniform_(-EPS, EPS, generator=torch.Generator().manual_seed(derive_seed(seed, EPS)))
    lo, hi = (x - EPS).clamp(min=0), (x + EPS).clamp(max=1)
    z = torch.max(torch.min(x + noise, hi), lo)
    for _ in range(10):
        z = z.detach().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(net(z), targets, reduction="sum"), z)
        z = torch.max(torch.min(z - STEP * g.sign(), hi), lo)
    torch.testing.assert_close(x_adv, z.detach(), rtol=0, atol=1e-6)


def test_random_start_differs_per_batch_and_is_seeded():
    net, (x, y) = _net(), _batch()
    a = AdversarialLogitPairing(steps=1, generator=torch.Generator().manual_seed(5))
    b = AdversarialLogitPairing(steps=1, generator=torch.Generator().manual_seed(5))
    first, second = a.perturb(net, x, y)[0], a.perturb(net, x, y)[0]
    assert not torch.equal(first, second)  # a new random start for every batch
    assert torch.equal(first, b.perturb(net, x, y)[0])  # same seed, same adversarial batch


def test_batchnorm_statistics_untouched_by_the_attack():
    net, (x, y) = _net(), _batch()
    net.train()
    bn = net.body[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    obj = AdversarialLogitPairing(steps=5)
    obj.perturb(net, x, y)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2]) and net.training and bn.training
    # the whole objective changes them exactly as one training forward of the mixed batch [x; x_adv] does
    state = obj.generator.get_state()
    x_adv, _ = obj.perturb(net, x, y)
    reference = copy.deepcopy(net)
    with torch.no_grad():
        reference(torch.cat([x, x_adv]))
    obj.generator.set_state(state)
    obj(net, x, y)
    torch.testing.assert_close(bn.running_mean, reference.body[1].running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, reference.body[1].running_var, rtol=0, atol=0)
    assert int(bn.num_batches_tracked) == int(stats[2]) + 1


def test_no_global_random_draws():
    net, (x, y) = _net(), _batch()
    before = torch.get_rng_state()
    assert build_objective({"alp": False}, num_classes=5, seed=0) is cross_entropy
    obj = build_objective({"alp": True, "alp_steps": 2}, num_classes=5, seed=0)
    obj(net, x, y)
    assert torch.equal(torch.get_rng_state(), before)


# ---- build_objective and config -------------------------------------------------------------------------------

def test_build_objective_alp_defaults_and_refusals():
    assert ALP_DEFAULTS == {"alp": False, "alp_weight": 0.5, "alp_eps": "16/255", "alp_step": "2/255",
                            "alp_steps": 10, "alp_label_smoothing": 0.1}
    assert ALL_OBJECTIVE_DEFAULTS == {**OBJECTIVE_DEFAULTS, **ALP_DEFAULTS, **DIRECTION_DEFAULTS}
    assert build_objective({}, num_classes=10, seed=0) is cross_entropy
    obj = build_objective({"alp": True}, num_classes=10, seed=3)
    assert isinstance(obj, AdversarialLogitPairing)
    assert (obj.weight, obj.label_smoothing, obj.eps, obj.attack.step_size, obj.attack.steps) == (
        0.5, 0.1, pytest.approx(16 / 255), pytest.approx(2 / 255), 10)
    assert obj.attack.norm == "linf" and obj.attack.criterion_.targets == "least_likely"
    assert torch.equal(obj.generator.get_state(), torch.Generator().manual_seed(3).get_state())
    other = build_objective({"alp": True, "alp_weight": 1, "alp_eps": 0.05, "alp_step": "1/255", "alp_steps": 3,
                             "alp_label_smoothing": 0}, num_classes=10, seed=0)
    assert (other.weight, other.eps, other.attack.steps, other.label_smoothing) == (1.0, 0.05, 3, 0.0)
    for extra in ({"adversarial_training": True}, {"robust_additions": True}):
        with pytest.raises(ValueError, match="alp"):
            build_objective({"alp": True, **extra}, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="alp_wieght"):
        build_objective({"alp": True, "alp_wieght": 1}, num_classes=10, seed=0)


def _tiny(objective):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["models"]["cnn"]["train"]["objective"] = objective
    return cfg


def test_config_accepts_alp_and_leaves_other_models_params_alone():
    """No alp key gets a schema default: a model without ALP keeps the params (and results) it had."""
    objective = validate(_tiny({"alp": True}))["models"]["cnn"]["train"]["objective"]
    assert objective["alp"] is True and not (set(ALP_DEFAULTS) - {"alp"}) & set(objective)
    assert not set(ALP_DEFAULTS) & set(validate(_tiny({}))["models"]["cnn"]["train"]["objective"])
    fractions = validate(_tiny({"alp": True, "alp_eps": "8/255", "alp_step": 0.01}))
    assert fractions["models"]["cnn"]["train"]["objective"]["alp_eps"] == "8/255"


@pytest.mark.parametrize("objective,key", [
    ({"alp": "yes"}, "alp"),
    ({"alp": True, "alp_weight": -0.5}, "alp_weight"),
    ({"alp": True, "alp_eps": "16/0"}, "alp_eps"),
    ({"alp": True, "alp_step": "two"}, "alp_step"),
    ({"alp": True, "alp_steps": 0}, "alp_steps"),
    ({"alp": True, "alp_label_smoothing": 1.5}, "alp_label_smoothing"),
    ({"alp": True, "adversarial_training": True}, "alp"),
    ({"alp": True, "robust_additions": True}, "alp"),
], ids=["not bool", "negative weight", "zero denominator", "step text", "zero steps", "smoothing > 1",
        "with adversarial training", "with robust additions"])
def test_config_refuses_bad_alp_naming_the_key(objective, key):
    with pytest.raises(ConfigError) as info:
        validate(_tiny(objective))
    assert f"'models.cnn.train.objective.{key}'" in str(info.value)


# ---- a real run -----------------------------------------------------------------------------------------------

def test_short_alp_training_on_digits(tmp_path):
    train = load_split({"source": "digits", "test_fraction": 0.3}, "train", "unused", 0)
    x, y = train.x[:256], train.y[:256]
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, channels=(4, 8), hidden=16)
    objective = build_objective({"alp": True}, num_classes=10, seed=1)
    recipe = {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
              "augment": {"crop_padding": 0, "hflip": False}}
    rows = train_classifier(model, x, y, recipe, seed=0, objective=objective, log=lambda s: None, progress=False,
                            state_path=tmp_path / "state.pt", fingerprint="alp-test")  # the state must save
    assert len(rows) == 2
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("loss", "ce", "logit_pairing"))
        assert row["logit_pairing"] > 0
        assert row["loss"] == pytest.approx(row["ce"] + 0.5 * row["logit_pairing"], rel=1e-4)
    assert rows[1]["loss"] < rows[0]["loss"]  # it learns


def test_alp_training_resumes_bit_identical(tmp_path):
    """Killed after epoch 1 (its state saved), rerun: the same weights, rows and generator as an uninterrupted run."""
    train = load_split({"source": "digits", "test_fraction": 0.3}, "train", "unused", 0)
    x, y = train.x[:128], train.y[:128]
    recipe = {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0,
              "augment": {"crop_padding": 1, "hflip": False}}

    def run(state_path=None, log=lambda s: None):
        torch.manual_seed(0)
        model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, channels=(4, 8), hidden=16)
        objective = build_objective({"alp": True, "alp_steps": 3}, num_classes=10, seed=1)
        rows = train_classifier(model, x, y, recipe, seed=0, objective=objective, log=log, progress=False,
                                state_path=state_path, fingerprint=None if state_path is None else "alp-resume")
        return model.state_dict(), rows, objective.generator.get_state()

    reference = run()

    def crash(line):
        if line.startswith("epoch 2"):
            raise KeyboardInterrupt  # after epoch 2's row, before its state is saved: epoch 1's state remains
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(state, crash)
    lines = []
    resumed = run(state, lines.append)
    assert lines[0].startswith("resuming from") and [line.split(":")[0] for line in lines[1:]] == ["epoch 2"]
    assert resumed[1] == reference[1]
    assert all(torch.equal(resumed[0][k], reference[0][k]) for k in reference[0])
    assert torch.equal(resumed[2], reference[2])


def test_label_study_backbone_refuses_alp():
    config = yaml.safe_load((TINY.parents[2] / "config.yaml").read_text())
    config["labels"]["backbone"]["train"]["objective"] = {"alp": True}
    with pytest.raises(ConfigError, match=r"'labels\.backbone\.train\.objective\.alp'.*own loss"):
        validate(config)
