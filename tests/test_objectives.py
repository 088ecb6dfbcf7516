"""SPEC 2 training objectives (adversarial training, robust additions with adaptive psi), the SGD step schedule
and replicate padding of the training loop."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advpipe.data import crop_flip_params, load_split, random_crop_flip
from advpipe.models import build_model
from advpipe.models.base import Classifier
from advpipe.train import train_classifier
from advpipe.train.loop import cross_entropy
from advpipe.train.objectives import (OBJECTIVE_DEFAULTS, AdversarialTraining, RobustAdditions, build_objective,
                                      input_gradient_penalty, integrator_step, smoothed_score, tandem_margin)

pytestmark = pytest.mark.usefixtures("one_thread")

SGD = {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
       "augment": {"crop_padding": 0, "hflip": False}}


class Lin(Classifier):
    """Flatten -> (optional BN) -> Linear: a tiny classifier with known weights."""

    def __init__(self, in_features: int, classes: int, bn: bool = False):
        super().__init__(1)
        self.body = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(in_features) if bn else nn.Identity())
        self.head = nn.Linear(in_features, classes)


def _digits(n=192):
    train = load_split({"source": "digits", "test_fraction": 0.3}, "train", "unused", 0)
    return train.x[:n], train.y[:n]


def _small_cnn(seed=0):
    torch.manual_seed(seed)
    return build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, channels=(4, 8), hidden=16)


# ---- adaptive psi ---------------------------------------------------------------------------------------------

def test_psi_integrator_cases_of_spec():
    assert integrator_step(5.0, 1.5) == 5.0  # CE at the target: unchanged
    assert integrator_step(5.0, 0.5) == 6.0  # -ln(1/3) = 1.0986 clipped to +1
    assert -math.log(0.5 / 1.5) == pytest.approx(1.0986, abs=1e-4)
    assert integrator_step(5.0, 3.0) == pytest.approx(4.99, abs=1e-12)  # -ln 2 clipped to -0.01
    assert integrator_step(5.0, 1.5 * math.exp(-0.25)) == pytest.approx(5.25)  # inside the clip: -ln(ce/1.5)
    assert integrator_step(0.004, 3.0) == 0.0  # max(0, .) floor
    assert integrator_step(0.0, 0.0) == 1.0  # CE 0: ln 0 clipped, no math error
    assert integrator_step(2.0, 3.0, l_target=3.0, eps_pos=0.5, eps_neg=0.2) == 2.0
    assert integrator_step(2.0, 6.0, l_target=3.0, eps_pos=0.5, eps_neg=0.2) == pytest.approx(1.8)
    with pytest.raises(FloatingPointError):
        integrator_step(0.0, float("nan"))


def test_psi_formula_and_state():
    obj = RobustAdditions()
    assert obj.psi == 220.0
    obj.load_state_dict({"robust_integration": 209.0})
    assert obj.psi == pytest.approx(220 * math.exp(0.02 * 209))
    assert obj.state_dict() == {"robust_integration": 209.0}
    # README's final psi 14240 <-> I about 209 (SPEC 2).
    assert math.log(14240 / 220) / 0.02 == pytest.approx(208.5, abs=0.1)
    assert RobustAdditions(psi_0=10, psi_rate=0.5, integration=2.0).psi == pytest.approx(10 * math.e)


def test_integrator_updated_with_this_batch_ce_before_its_penalty():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5)).double()
    x, y = torch.rand(6, 3, 2, 2, dtype=torch.float64), torch.randint(0, 5, (6,))
    obj = RobustAdditions(generator=torch.Generator().manual_seed(1), integration=3.0)
    loss = obj(model, x, y)
    xr = x.clone().requires_grad_()
    logits = model(xr)
    ce = F.cross_entropy(logits, y).item()
    i_new = integrator_step(3.0, ce)
    assert obj.integration == i_new
    cls, tandem = RobustAdditions(generator=torch.Generator().manual_seed(1)).draw(6, 5)
    expected = ce + 220 * math.exp(0.02 * i_new) * input_gradient_penalty(logits, xr, y, cls, tandem).item()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert not x.requires_grad  # the caller's batch is untouched
    log = obj.epoch_log()
    assert log == {"ce": pytest.approx(ce), "psi": pytest.approx(obj.psi), "robust_integration": i_new}
    assert math.isnan(obj.epoch_log()["ce"])  # reset per epoch


# ---- the penalty ----------------------------------------------------------------------------------------------

def test_tandem_margin_known_values():
    logits = torch.tensor([[1.0, 5.0, 3.0], [2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [4.0, -2.0, 7.0]])
    y = torch.tensor([0, 0, 2, 2])
    assert torch.equal(tandem_margin(logits, y), torch.tensor([-4.0, 2.0, 0.0, 3.0]))
    s = smoothed_score(logits, y, torch.tensor([1, 2, 0, 1]), torch.tensor([True, False, False, True]))
    assert torch.equal(s, torch.tensor([-4.0, -1.0, 0.0, 3.0]))


def test_draws_follow_zeta_and_generator():
    obj = RobustAdditions(generator=torch.Generator().manual_seed(0))
    cls, tandem = obj.draw(20000, 10)
    assert tandem.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert torch.bincount(cls, minlength=10).min() > 1800  # uniform over 10 classes
    again = RobustAdditions(generator=torch.Generator().manual_seed(0)).draw(20000, 10)
    assert torch.equal(cls, again[0]) and torch.equal(tandem, again[1])


def _tiny_double_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def test_penalty_is_mean_of_per_sample_input_gradients():
    model = _tiny_double_model()
    x, y = torch.rand(5, 2, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    cls, tandem = torch.tensor([3, 0, 1, 1, 2]), torch.tensor([False, True, False, True, False])
    xr = x.clone().requires_grad_()
    pen = input_gradient_penalty(model(xr), xr, y, cls, tandem, z=2)
    per = []
    for i in range(5):
        xi = x[i:i + 1].clone().requires_grad_()
        li = model(xi)
        si = tandem_margin(li, y[i:i + 1]) if tandem[i] else li[:, cls[i]]
        per.append(torch.autograd.grad(si.sum(), xi)[0].pow(2))
    assert pen.item() == pytest.approx(torch.cat(per).mean().item(), rel=1e-12)
    pen3 = input_gradient_penalty(model(xr), xr, y, cls, tandem, z=3)
    assert pen3.item() == pytest.approx(torch.cat(per).pow(1.5).mean().item(), rel=1e-12)


def test_robust_loss_gradient_matches_central_differences():
    """Double backprop: d(CE + psi * mean |ds/dx|^2)/d(params) against central differences, float64."""
    model = _tiny_double_model()
    x, y = torch.rand(6, 2, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    obj = RobustAdditions(zeta=0.5, generator=torch.Generator(), integration=4.0)
    cls, tandem = RobustAdditions(zeta=0.5, generator=torch.Generator().manual_seed(7)).draw(6, 4)
    assert tandem.any() and not tandem.all()  # both kinds of s in the check

    def loss():
        obj.generator.manual_seed(7)  # same draws and same I on every evaluation
        obj.load_state_dict({"robust_integration": 4.0})
        return obj(model, x, y)

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params)
    ce_grads = torch.autograd.grad(cross_entropy(model, x, y), params)
    # The penalty term reaches the parameters (all but the output bias, which ds/dx does not depend on).
    assert [torch.allclose(g, g_ce) for g, g_ce in zip(grads, ce_grads)] == [False, False, False, True]
    h = 1e-6
    for p, g in zip(params, grads):
        fd = torch.zeros_like(p)
        flat = p.data.view(-1)  # edits through .data: the loss itself needs autograd for d/dx
        for k in range(p.numel()):
            orig = flat[k].item()
            flat[k] = orig + h
            up = loss().item()
            flat[k] = orig - h
            down = loss().item()
            flat[k] = orig
            fd.view(-1)[k] = (up - down) / (2 * h)
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-7)


# ---- build_objective ------------------------------------------------------------------------------------------

def test_build_objective_defaults_and_combinations():
    assert build_objective({}, num_classes=10, seed=0) is cross_entropy
    off = {"adversarial_training": False, "l2_min": False, "robust_additions": False}
    assert build_objective(off, num_classes=10, seed=0) is cross_entropy
    assert OBJECTIVE_DEFAULTS == {"adversarial_training": False, "l2_min": False, "robust_additions": False,
                                  "adv_eps": 0.01, "adv_steps": 7, "l2min_eps": 0.1, "robust_z": 2,
                                  "robust_zeta": 0.2, "adapt_l_target": 1.5, "adapt_psi_0": 220, "adapt_psi": 0.02,
                                  "adapt_eps_pos": 1, "adapt_eps_neg": 0.01}

    robust = build_objective({"robust_additions": True}, num_classes=10, seed=0)
    assert isinstance(robust, RobustAdditions)
    assert (robust.z, robust.zeta, robust.l_target, robust.psi_0, robust.psi_rate, robust.eps_pos,
            robust.eps_neg, robust.integration) == (2, 0.2, 1.5, 220, 0.02, 1, 0.01, 0.0)

    adv = build_objective({"adversarial_training": True}, num_classes=10, seed=0)
    assert isinstance(adv, AdversarialTraining) and adv.loss is cross_entropy
    assert (adv.eps, adv.steps, adv.l2_min, adv.l2min_eps, adv.half_and_half) == (0.01, 7, False, 0.1, False)
    assert adv.search_in_train_mode and adv.state_dict() == {} and adv.epoch_log() == {}

    both = build_objective({"adversarial_training": True, "l2_min": True, "robust_additions": True,
                            "adapt_psi_0": 100, "adv_steps": 3}, num_classes=10, seed=0)
    assert isinstance(both, AdversarialTraining) and isinstance(both.loss, RobustAdditions)
    assert both.half_and_half and both.l2_min and both.steps == 3 and both.loss.psi_0 == 100
    assert both.generator is both.loss.generator  # one seeded stream
    both.load_state_dict({"robust_integration": 2.5})
    assert both.state_dict() == {"robust_integration": 2.5} and both.epoch_log()["psi"] == pytest.approx(
        100 * math.exp(0.05))


def test_build_objective_rejects_unknown_keys_and_lone_l2min():
    with pytest.raises(ValueError, match="robust_addition"):
        build_objective({"robust_addition": True}, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="l2_min"):
        build_objective({"l2_min": True}, num_classes=10, seed=0)


# ---- adversarial training -------------------------------------------------------------------------------------

def test_adversarial_training_changes_the_batch():
    x, y = _digits(64)
    model = _small_cnn().train()
    adv = AdversarialTraining(generator=torch.Generator().manual_seed(0))
    x_adv = adv.perturb(model, x, y)
    rms = (x_adv - x).pow(2).mean((1, 2, 3)).sqrt()
    assert (rms > 0).all() and (rms <= 0.01 * (1 + 1e-4)).all()  # step sizes sum to eps: RMS <= eps
    assert model.training
    with torch.no_grad():
        ce = cross_entropy(model, x, y).item()
    assert adv(model, x, y).item() > ce  # ascends CE
    half = AdversarialTraining(half_and_half=True, generator=torch.Generator().manual_seed(0)).perturb(model, x, y)
    moved = (half != x).flatten(1).any(1)
    assert 0 < moved.sum() < len(x)


def test_l2min_leaves_unflippable_samples_clean():
    model = Lin(4, 2)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model.head.bias.zero_()
    # Margin 2*sum(x): RMS 0.1 moves sum(x) by at most 0.4, so sample 0 (sum 4) cannot flip, sample 1 (0.02) can.
    x = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.005)])
    y = torch.tensor([0, 0])
    x_adv = AdversarialTraining(l2_min=True, generator=torch.Generator().manual_seed(0)).perturb(model, x, y)
    assert torch.equal(x_adv[0], x[0])
    assert not torch.equal(x_adv[1], x[1])
    assert model(x_adv[1:]).argmax(1).item() == 1
    assert (x_adv[1] - x[1]).pow(2).mean().sqrt() <= 0.1 * (1 + 1e-4)


def test_search_bn_mode():
    x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    model = Lin(4, 3, bn=True).train()
    before = model.body[1].running_mean.clone()
    AdversarialTraining(search_in_train_mode=False).perturb(model, x, y)
    assert model.training and torch.equal(model.body[1].running_mean, before)
    AdversarialTraining().perturb(model, x, y)  # the original's train-mode search moves the running stats
    assert model.training and not torch.equal(model.body[1].running_mean, before)
    model.eval()
    AdversarialTraining().perturb(model, x, y)
    assert not model.training  # mode restored


def test_combined_objective_applies_robust_loss_to_adversarial_batch():
    x, y = _digits(32)
    model = _small_cnn().train()
    cfg = {"adversarial_training": True, "robust_additions": True}
    both = build_objective(cfg, num_classes=10, seed=4)
    loss = both(model, x, y)
    twin = build_objective(cfg, num_classes=10, seed=4)
    x_adv = twin.perturb(model, x, y)  # same generator stream: same half-and-half mask
    assert not torch.equal(x_adv, x)
    ce = F.cross_entropy(model(x_adv), y).item()
    log = both.epoch_log()
    assert log["ce"] == pytest.approx(ce, rel=1e-6) and log["robust_integration"] == integrator_step(0.0, ce)
    assert loss.item() == pytest.approx(twin.loss(model, x_adv, y).item(), rel=1e-6)


# ---- the loop -------------------------------------------------------------------------------------------------

class CountingCE:
    def __init__(self):
        self.calls = 0

    def __call__(self, model, x, y):
        self.calls += 1
        return cross_entropy(model, x, y)

    def epoch_log(self):
        return {"calls": float(self.calls)}


def test_lr_milestones_and_epoch_log_in_rows():
    x, y = _digits(64)
    recipe = {**SGD, "epochs": 5, "batch_size": 32, "lr_milestones": [2, 4], "lr_gamma": 0.1}
    rows = train_classifier(_small_cnn(), x, y, recipe, 0, objective=CountingCE(), log=lambda _: None,
                            progress=False)
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    assert [r["calls"] for r in rows] == [2, 4, 6, 8, 10]
    rows = train_classifier(_small_cnn(), x, y, {**recipe, "lr_gamma": 0.5, "lr_milestones": [1]}, 0,
                            log=lambda _: None, progress=False)
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.05, 0.05, 0.05, 0.05])
    assert set(rows[0]) == {"epoch", "loss", "lr"}


def test_new_recipe_keys_at_their_defaults_change_nothing():
    x, y = _digits(96)
    recipe = {**SGD, "augment": {"crop_padding": 1, "hflip": True}}
    a, b = _small_cnn(), _small_cnn()
    rows_a = train_classifier(a, x, y, recipe, 3, log=lambda _: None, progress=False)
    explicit = {**recipe, "lr_milestones": [], "lr_gamma": 0.1, "augment": {**recipe["augment"], "pad_mode": "zeros"}}
    rows_b = train_classifier(b, x, y, explicit, 3, log=lambda _: None, progress=False)
    assert rows_a == rows_b
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    c = _small_cnn()
    train_classifier(c, x, y, {**recipe, "augment": {**recipe["augment"], "pad_mode": "replicate"}}, 3,
                     log=lambda _: None, progress=False)
    assert not torch.equal(a.head.weight, c.head.weight)  # the recipe key reaches the augmentation


# ---- replicate padding ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding, hflip", [(4, True), (2, False), (0, True)])
@pytest.mark.parametrize("pad_mode", ["zeros", "replicate"])
def test_crop_padding_matches_per_sample_reference(padding, hflip, pad_mode):
    x = torch.rand(16, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(x, padding, hflip, torch.Generator().manual_seed(42), pad_mode=pad_mode)
    top, left, flip = crop_flip_params(16, padding, hflip, torch.Generator().manual_seed(42))
    mode = "constant" if pad_mode == "zeros" else "replicate"
    ref = []
    for xi, t, l, f in zip(x, top.tolist(), left.tolist(), flip.tolist()):
        yi = F.pad(xi[None], (padding,) * 4, mode=mode)[0, :, t:t + 7, l:l + 9]
        ref.append(yi.flip(-1) if f else yi)
    assert torch.equal(out, torch.stack(ref))
    if pad_mode == "zeros":  # the default is today's zero padding
        assert torch.equal(out, random_crop_flip(x, padding, hflip, torch.Generator().manual_seed(42)))


def test_replicate_padding_known_values_and_bad_mode():
    x = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    zero = torch.zeros(1, dtype=torch.long)
    from advpipe.data import crop_flip
    assert torch.equal(crop_flip(x, 1, zero, zero, torch.tensor([False]), pad_mode="replicate"),
                       torch.tensor([[[[0.0, 0], [0, 0]]]]))
    two = torch.full((1,), 2, dtype=torch.long)
    assert torch.equal(crop_flip(x, 1, two, two, torch.tensor([False]), pad_mode="replicate"),
                       torch.tensor([[[[3.0, 3], [3, 3]]]]))
    one = torch.ones(1, dtype=torch.long)
    assert torch.equal(crop_flip(x, 1, zero, one, torch.tensor([True]), pad_mode="replicate"),
                       torch.tensor([[[[1.0, 0], [1, 0]]]]))  # zeros would give [[0, 0], [1, 0]]
    with pytest.raises(ValueError, match="pad_mode"):
        random_crop_flip(x, 1, False, torch.Generator(), pad_mode="reflect")


# ---- determinism ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [{"robust_additions": True}, {"robust_additions": True, "adversarial_training": True}])
def test_training_with_robust_objective_is_deterministic(cfg):
    x, y = _digits(128)
    recipe = {**SGD, "lr": 0.01, "augment": {"crop_padding": 1, "hflip": True, "pad_mode": "replicate"}}
    runs = []
    for _ in range(2):
        model, obj = _small_cnn(), build_objective(cfg, num_classes=10, seed=11)
        rows = train_classifier(model, x, y, recipe, 3, objective=obj, log=lambda _: None, progress=False)
        runs.append((model, obj, rows))
    (a, obj_a, rows_a), (b, obj_b, rows_b) = runs
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert rows_a == rows_b and obj_a.state_dict() == obj_b.state_dict()
    assert {"ce", "psi", "robust_integration"} <= set(rows_a[-1])
    last = rows_a[-1]
    assert last["psi"] == pytest.approx(220 * math.exp(0.02 * last["robust_integration"]))
    assert math.isfinite(last["loss"]) and last["loss"] > last["ce"] > 0
    c, obj_c = _small_cnn(), build_objective(cfg, num_classes=10, seed=12)
    train_classifier(c, x, y, recipe, 3, objective=obj_c, log=lambda _: None, progress=False)
    assert not torch.equal(a.head.weight, c.head.weight)  # the objective's seed matters
