"""advpipe.attacks: FGSM/BIM against foolbox, quantisation to the 1/255 grid, C&W-L2, config parsing, norms."""
from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch
from torch import nn

from advpipe.attacks import (ATTACKS, BIM, FGSM, AttackResult, CarliniWagnerL2, build_attack, parse_fraction,
                             perturbation_norms, quantize_to_grid)
from advpipe.attacks.cw import update_const

EPS = 3 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def correct(digits_model):
    """(model, x, y) restricted to correctly classified test images, y = the model's own prediction (SPEC 1)."""
    model, x, y, pred = digits_model
    keep = pred == y
    return model, x[keep], pred[keep]


def test_fixture_model_is_accurate(digits_model):
    model, x, y, pred = digits_model
    assert (pred == y).float().mean() > 0.9


# ---- FGSM / BIM ---------------------------------------------------------------------------------------

def assert_in_ball_on_grid(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    scaled = x_adv * 255
    assert (scaled - scaled.round()).abs().max() < 1e-4


@pytest.mark.parametrize("cfg", [
    {"method": "fgsm", "eps": "3/255"},
    {"method": "bim", "eps": "3/255", "step_size": "1/255", "steps": 10},
    {"method": "fgsm", "eps": 0.1},  # 25.5 grid steps: the ball's edge falls between grid points
    {"method": "bim", "eps": 0.1, "step_size": 0.02, "steps": 10, "random_start": True},
])
def test_quantized_adversarials_stay_in_ball_on_grid_in_box(correct, cfg):
    model, x, y = correct
    result = build_attack(cfg)(model, x, y)
    assert_in_ball_on_grid(result.x_adv, x, parse_fraction(cfg["eps"]))
    assert result.x_adv.shape == x.shape and result.success.shape == (len(x),)


def test_quantization_keeps_off_grid_inputs_in_ball(correct):
    # Inputs shifted by 0.4 grid steps: plain rounding would land up to 0.9 steps from x, beyond a 3-step eps.
    model, x, y = correct
    x_off = (x + 0.4 / 255).clamp(0, 1)
    for attack in (FGSM(eps=EPS), BIM(eps=EPS, step_size=1 / 255, steps=10)):
        x_adv = attack(model, x_off, y).x_adv
        assert (x_adv - x_off).abs().max() <= EPS + 1e-6
        scaled = x_adv * 255
        assert (scaled - scaled.round()).abs().max() < 1e-4


def test_quantize_to_grid_values():
    x = torch.tensor([10, 10, 10.5, 10.5, 0, 255]) / 255
    x_adv = torch.tensor([13.4, 13.6, 13.5, 7.4, -3, 258]) / 255
    q = quantize_to_grid(x_adv, x, EPS) * 255
    # 13.6 rounds to 14, one step outside x + 3; around 10.5 the ball [7.5, 13.5] holds grid points 8..13
    assert torch.allclose(q, torch.tensor([13.0, 13, 13, 8, 0, 255]), atol=1e-4)
    # eps smaller than the distance to any grid point: the unrounded value is kept (the budget wins)
    x = torch.tensor([10.5 / 255])
    assert torch.equal(quantize_to_grid(x + 0.1 / 255, x, 0.2 / 255), x + 0.1 / 255)


@pytest.mark.parametrize("name", ["fgsm", "bim"])
def test_matches_foolbox_without_quantization(correct, name):
    model, x, y = correct
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    if name == "fgsm":
        ours, theirs = FGSM(eps=EPS, quantize=False), fb.attacks.FGSM()
    else:
        ours = BIM(eps=EPS, step_size=1 / 255, steps=10, quantize=False)
        theirs = fb.attacks.LinfPGD(abs_stepsize=1 / 255, steps=10, random_start=False)
    result = ours(model, x, y)
    _, clipped, success = theirs(fmodel, x, y, epsilons=EPS)
    assert torch.allclose(result.x_adv, clipped, atol=1e-6, rtol=0)
    assert torch.equal(result.success, success)
    assert (result.x_adv != x).any()


def test_fgsm_is_one_bim_step(correct):
    model, x, y = correct
    fgsm = FGSM(eps=0.05, quantize=False)(model, x, y)
    bim = BIM(eps=0.05, step_size=0.05, steps=1, quantize=False)(model, x, y)
    assert torch.equal(fgsm.x_adv, bim.x_adv) and torch.equal(fgsm.success, bim.success)


def test_more_steps_and_budget_fool_more(correct):
    model, x, y = correct
    rates = [BIM(eps=eps, step_size=eps / 4, steps=10)(model, x, y).success.float().mean().item()
             for eps in (3 / 255, 0.1, 0.3)]
    assert rates[0] <= rates[1] <= rates[2] and rates[2] > 0.9


def test_success_means_misclassified(correct):
    model, x, y = correct
    result = BIM(eps=0.1, step_size=0.02, steps=10)(model, x, y)
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)
    assert 0 < result.success.float().mean() < 1


def test_random_start_is_seeded(correct):
    model, x, y = correct
    cfg = {"method": "bim", "eps": 0.1, "step_size": 0.01, "steps": 2, "random_start": True, "quantize": False}
    a, b = build_attack({**cfg, "seed": 3})(model, x, y), build_attack({**cfg, "seed": 3})(model, x, y)
    c = build_attack({**cfg, "seed": 4})(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    no_start = build_attack({**cfg, "random_start": False})(model, x, y)
    assert not torch.equal(a.x_adv, no_start.x_adv)
    assert (a.x_adv - x).abs().max() <= 0.1 + 1e-6
    # run(): one generator threads through the batches, so a rerun with the same batch size is identical
    attack = build_attack({**cfg, "seed": 3})
    r1, r2 = (attack.run(model, x, y, batch_size=100, progress=False) for _ in range(2))
    assert torch.equal(r1.x_adv, r2.x_adv)


def test_clamp_none_lets_iterates_leave_the_box(correct):
    # vrapi passed no clip range to cleverhans: pixels at 0 are pushed below 0 (the gradient is taken there)
    # and only the final result is clipped, so the result can differ from the clipped iteration.
    model, x, y = correct
    clipped = BIM(eps=0.1, step_size=0.02, steps=10, quantize=False)(model, x, y).x_adv
    free = BIM(eps=0.1, step_size=0.02, steps=10, quantize=False, clamp="none")(model, x, y).x_adv
    assert free.min() >= 0 and free.max() <= 1 and (free - x).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(clipped, free)


def test_run_batches_like_one_call(correct):
    model, x, y = correct
    attack = BIM(eps=EPS, step_size=1 / 255, steps=10)
    whole, batched = attack(model, x, y), attack.run(model, x, y, batch_size=128, progress=False)
    assert torch.allclose(whole.x_adv, batched.x_adv, atol=1e-6) and torch.equal(whole.success, batched.success)
    empty = attack.run(model, x[:0], y[:0], batch_size=8, progress=False)
    assert empty.x_adv.shape == (0, *x.shape[1:]) and empty.success.shape == (0,)


@pytest.mark.parametrize("cfg", [
    {"method": "pgd", "norm": "linf", "steps": 3},
    {"method": "pgd", "norm": "l2", "steps": 3, "clamp": "per_image"},
    {"method": "bim", "norm": "rms", "steps": 2, "accumulate_gradients": True, "criterion": "btr"},
    {"method": "fgsm", "criterion": {"kind": "targeted", "targets": "least_likely"}},
])
def test_fused_grid_equals_each_eps_alone(correct, cfg):
    """A grid runs as fused passes over (K x B) inputs (grid_batch); every eps must come out as that eps attacked
    by itself: its own budget, step, random start and targets, whatever the grid around it and however it is cut
    into passes. The reference is K single-eps attacks; the random starts line up because each eps draws from
    its own stream (derive_seed(seed, eps))."""
    from advpipe.runtime import derive_seed
    model, x, y = correct
    x, y = x[:60], y[:60]
    grid = [0.0, 0.02, 0.05, 0.1, 0.3] if cfg["method"] != "bim" else [0.0, 0.01, 0.05]
    fused = [build_attack({**cfg, "eps": grid, "seed": 5, "grid_batch": n}).run(model, x, y, 25, progress=False)
             for n in (10**6, 50)]  # all eps in one pass; two eps a pass (a last pass of one)
    assert build_attack({**cfg, "eps": grid, "grid_batch": 50}).fused_groups(25) == [[1, 2], [3, 4]][:len(grid) // 2]
    for k, eps in enumerate(grid):
        alone = build_attack({**cfg, "eps": eps, "seed": 5}).run(model, x, y, 25, progress=False)
        if cfg.get("method") == "pgd" and eps:  # the single-eps attack seeds its stream as the grid does
            assert build_attack({**cfg, "eps": eps, "seed": 5}).make_generators(x.device)[0].initial_seed() \
                == derive_seed(5, eps)
        for result in fused:
            assert torch.allclose(result.x_adv[k], alone.x_adv, atol=1e-6), (k, eps)
            assert torch.equal(result.success[k], alone.success) and torch.equal(result.pred[k], alone.pred)
            assert torch.allclose(result.norms["Linf"][k], alone.norms["Linf"], atol=1e-6)
    assert torch.equal(fused[0].x_adv[0], x)  # eps 0: the clean input
    assert 0 < fused[0].success[-1].float().mean()


def test_minimal_attack_answers_every_eps_from_one_outcome(correct):
    """C&W over an L2 grid: one attack, one scoring; success at eps is exactly 'misclassified and distance <= eps'."""
    model, x, y = correct
    x, y = x[:40], y[:40]
    grid = [0.1, 0.3, 0.6, 1.0]
    result = CarliniWagnerL2(eps=grid, max_iterations=30, binary_search_steps=2)(model, x, y)
    with torch.no_grad():
        fooled = model(result.x_adv[0]).argmax(1) != y
    l2 = (result.x_adv[0] - x).flatten(1).norm(dim=1)
    for k, eps in enumerate(grid):
        assert torch.equal(result.success[k], fooled & (result.distance <= eps))
        assert torch.allclose(result.norms["L2"][k], l2, atol=1e-5)
    assert result.success.float().mean(1).diff().ge(0).all() and result.success[-1].any()


def test_attack_leaves_model_alone_and_works_under_no_grad(correct):
    model, x, y = correct
    flags = [p.requires_grad for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]  # foolbox leaves some
    with torch.no_grad():
        result = BIM(eps=EPS, step_size=1 / 255, steps=3)(model, x[:16], y[:16])
    CarliniWagnerL2(max_iterations=3, binary_search_steps=1)(model, x[:16], y[:16])
    assert not result.x_adv.requires_grad
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_bad_inputs_are_refused(correct):
    model, x, y = correct
    attack = FGSM(eps=EPS)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        attack(model, x * 2, y)
    with pytest.raises(ValueError, match="int64"):
        attack(model, x, y.int())


def test_attack_inside_training_leaves_batchnorm_statistics_alone():
    # An attack inside training (adversarial training, ALP) runs BatchNorm on its running statistics and does not
    # update them: the result equals the eval-mode attack, the statistics are unchanged, train mode is restored.
    from advpipe.models.preact import PreActResNet
    torch.manual_seed(0)
    model = PreActResNet(in_channels=1, num_classes=10, image_size=8, depth=8, width=4)
    with torch.no_grad():  # non-trivial running statistics
        model.train()(torch.rand(64, 1, 8, 8))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    attack = build_attack({"method": "pgd", "eps": 0.1, "steps": 3, "quantize": False})
    expected = attack(model.eval(), x, y).x_adv
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    got = attack(model.train(), x, y).x_adv
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert torch.equal(got, expected)


# ---- C&W L2 -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cw_result(correct):
    """C&W-L2 on the first 128 correctly classified images; 100 iterations with lr 0.05 (vs 1000 at 5e-3)."""
    model, x, y = correct
    x, y = x[:128], y[:128]
    return x, y, CarliniWagnerL2(learning_rate=0.05, max_iterations=100)(model, x, y)


def test_cw_fools_almost_all_with_small_l2(correct, cw_result):
    model, _, _ = correct
    x, y, result = cw_result
    assert result.success.float().mean() >= 0.95  # measured: 1.0
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    l2 = perturbation_norms(x, result.x_adv)["L2"]
    # C&W minimises L2, so it should beat any feasible misclassifying point; the smallest fooling FGSM step on an
    # eps grid is one. Measured: C&W median 0.57, FGSM-min median 0.81, C&W smaller on 128/128 samples.
    fgsm_l2 = torch.full_like(l2, float("inf"))
    for eps in torch.arange(0.02, 0.62, 0.02).tolist():
        r = FGSM(eps=eps, quantize=False)(model, x, y)
        fgsm_l2 = torch.where(r.success, torch.minimum(fgsm_l2, perturbation_norms(x, r.x_adv)["L2"]), fgsm_l2)
    both = result.success & fgsm_l2.isfinite()
    assert both.float().mean() >= 0.95
    assert l2[result.success].median() < 0.75
    assert l2[both].median() < 0.85 * fgsm_l2[both].median()
    assert (l2[both] < fgsm_l2[both]).float().mean() >= 0.9


def test_cw_failures_return_the_original(correct):
    # One iteration at modifier 0 reproduces x (up to the 0.999999 tanh scaling): nothing is fooled.
    model, x, y = correct
    result = CarliniWagnerL2(max_iterations=1, binary_search_steps=1)(model, x, y)
    assert not result.success.any()
    assert torch.equal(result.x_adv, x)


class ConstantLogits(nn.Module):
    """Logits that ignore the input (but keep it in the graph): the C&W loss cannot decrease."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.register_buffer("bias", torch.tensor([1.0, 0.0, -1.0]))

    def forward(self, x):
        self.calls += 1
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("abort_early, calls", [(True, 5 * 11 + 1), (False, 5 * 100 + 1)])
def test_cw_abort_early_checks_every_tenth_iteration(abort_early, calls):
    # Flat loss: the check at iteration 0 records it, the check at 10 finds no 0.01% drop and stops the search.
    model = ConstantLogits().eval()
    x, y = torch.full((4, 1, 2, 2), 0.5), torch.zeros(4, dtype=torch.long)
    result = CarliniWagnerL2(max_iterations=100, abort_early=abort_early)(model, x, y)
    assert model.calls == calls  # + 1: the forward that evaluates success
    assert not result.success.any() and torch.equal(result.x_adv, x)


def test_cw_binary_search_on_const():
    const, lower, upper = torch.tensor([0.01, 0.01]), torch.zeros(2), torch.full((2,), 1e10)
    const, lower, upper = update_const(const, lower, upper, torch.tensor([True, False]))
    assert torch.allclose(const, torch.tensor([0.005, 0.1])) and upper[0] == 0.01 and lower[1] == 0.01
    const, lower, upper = update_const(const, lower, upper, torch.tensor([False, True]))
    # sample 0 failed at 0.005 below a known upper bound 0.01: bisect; sample 1 succeeded at 0.1: bisect [0.01, 0.1]
    assert torch.allclose(const, torch.tensor([0.0075, 0.055]))


def test_cw_warm_start_variant_runs(correct):
    # cleverhans.torch (what vrapi ran): Adam state and w carry over between binary-search steps, no abort-early.
    model, x, y = correct
    result = CarliniWagnerL2(learning_rate=0.05, max_iterations=30, binary_search_steps=3, abort_early=False,
                             warm_start=True)(model, x[:32], y[:32])
    assert result.success.float().mean() > 0.5
    assert torch.equal(result.x_adv[~result.success], x[:32][~result.success])


# ---- config -------------------------------------------------------------------------------------------

def test_build_attack_defaults_and_registry():
    assert set(ATTACKS) == {"fgsm", "bim", "pgd", "cw", "search", "foolbox", "square"}
    cw = build_attack({"method": "cw"})
    assert (cw.learning_rate, cw.confidence, cw.initial_const, cw.binary_search_steps, cw.max_iterations,
            cw.abort_early) == (5e-3, 0.0, 1e-2, 5, 1000, True)
    bim = build_attack({"method": "bim", "eps": "3/255", "step_size": "1/255", "steps": 10})
    assert bim.eps == pytest.approx(3 / 255) and bim.random_start is False and bim.quantize is True


@pytest.mark.parametrize("cfg, match", [
    ({"method": "deepfool"}, "deepfool"),
    ({"eps": 0.1}, "None"),
    ({"method": "fgsm", "eps": 0.1, "epsilon": 0.1}, "epsilon"),
    ({"method": "fgsm"}, "missing.*eps"),
    ({"method": "fgsm", "eps": "-3/255"}, "eps"),
    ({"method": "fgsm", "eps": "3//255"}, "eps"),
    ({"method": "fgsm", "eps": 0.1, "quantize": "yes"}, "quantize"),
    ({"method": "bim", "eps": 0.1, "step_size": 0.01, "steps": 0}, "steps"),
    ({"method": "bim", "eps": 0.1, "step_size": 0.01, "steps": 2.5}, "steps"),
    ({"method": "bim", "eps": 0.1, "step_size": 0.01, "steps": True}, "steps"),
    ({"method": "cw", "learning_rate": 0}, "learning_rate"),
    ({"method": "cw", "max_iterations": -1}, "max_iterations"),
])
def test_build_attack_errors_name_the_problem(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_attack(cfg)


@pytest.mark.parametrize("v, expected", [(0.1, 0.1), (0, 0.0), ("3/255", 3 / 255), (" 1/255 ", 1 / 255),
                                         ("0.03", 0.03), ("1e-2", 0.01)])
def test_parse_fraction(v, expected):
    assert parse_fraction(v) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("v", ["-1/255", -0.1, "1/0", "abc", "", "3/255/2", None, True, "nan", float("inf")])
def test_parse_fraction_rejects(v):
    with pytest.raises(ValueError):
        parse_fraction(v)


# ---- norms --------------------------------------------------------------------------------------------

def test_perturbation_norms_match_numpy():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 4, 4, generator=gen)
    x_adv = x + torch.randn(5, 3, 4, 4, generator=gen) * (torch.rand(5, 3, 4, 4, generator=gen) > 0.5)
    x_adv[2] = x[2]  # an unchanged sample: every norm is 0
    d = (x_adv - x).numpy().reshape(5, -1).astype(np.float64)
    norms = perturbation_norms(x, x_adv)
    expected = {"L0": (d != 0).sum(1), "L1": np.abs(d).sum(1), "L2": np.linalg.norm(d, axis=1),
                "Linf": np.abs(d).max(1), "RMS": np.sqrt((d ** 2).mean(1))}
    assert set(norms) == set(expected)
    for key, want in expected.items():
        assert norms[key].shape == (5,)
        np.testing.assert_allclose(norms[key].numpy(), want, rtol=1e-5, atol=1e-7, err_msg=key)
    assert norms["L0"].dtype == torch.int64 and norms["L0"][2] == 0


def test_attack_result_cat():
    a = AttackResult(torch.zeros(2, 1, 2, 2), torch.tensor([True, False]))
    b = AttackResult(torch.ones(1, 1, 2, 2), torch.tensor([True]))
    c = AttackResult.cat([a, b])
    assert c.x_adv.shape == (3, 1, 2, 2) and c.success.tolist() == [True, False, True]


def test_success_check_can_be_left_to_the_caller(correct):
    model, x, y = correct
    attack = BIM(eps=EPS, step_size=1 / 255, steps=3)
    checked = attack.run(model, x, y, batch_size=50, progress=False)
    unchecked = attack.run(model, x, y, batch_size=50, progress=False, check_success=False)
    assert unchecked.success is None
    assert torch.equal(checked.x_adv, unchecked.x_adv)


def test_eps_grid_in_normalized_space_on_a_three_channel_model():
    """A grid stated in normalised units on an RGB model: the (K, B, C, H, W) adversarials are decoded per
    sample with the model's per-channel statistics (a paper-scale CIFAR config crashed here), and each eps
    equals that eps attacked alone."""
    from advpipe.models.registry import build_model
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=3, num_classes=10, image_size=8, mean=[0.5, 0.4, 0.3],
                        std=[0.2, 0.25, 0.3]).eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    grid = build_attack({"method": "fgsm", "eps": [0.05, 0.2], "space": "normalized"})(model, x, y)
    for k, eps in enumerate([0.05, 0.2]):
        alone = build_attack({"method": "fgsm", "eps": eps, "space": "normalized"})(model, x, y)
        assert torch.allclose(grid.x_adv[k], alone.x_adv, atol=1e-6) and torch.equal(grid.success[k], alone.success)
    # the budget is in normalised units: per channel, at most eps * std in pixels
    std = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    assert ((grid.x_adv[1] - x).abs() <= 0.2 * std + 1e-6).all()
