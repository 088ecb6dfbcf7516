"""advpipe.attacks.search and advpipe.metrics.ara: the SPEC 2 perturbation search and ARA, against an independent
step-by-step loop written like wwoods/adversarial-explanations-cifar main.py `_adv_images`, and SPEC 2 (b) values."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advpipe.attacks import ATTACKS, PerturbationSearch, build_attack, perturbation_search, rms, step_sizes
from advpipe.metrics import accuracy_curve, ara, ara_distances, ara_subset

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- ARA ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("D", [0.01, 1.0, 3.7])
def test_ara_of_constant_distances(D):
    # SPEC 2 (b): every d = D -> A_b = 1 for the first 999 bins, 0 in the last: (D/1000) * 999 * 0.9
    assert ara(np.full(50, D), 10) == pytest.approx(0.8991 * D, rel=1e-12)


def test_ara_of_uniform_distances():
    D = 2.5
    d = np.linspace(0.0, D, 100_001)
    # The limit is D * 0.9^2 / 2 = 0.405 D; the 1000-bin right Riemann sum sits 0.45 gap below it (0.40455 D)
    assert ara(d, 10) == pytest.approx(0.40455 * D, rel=1e-4)
    assert ara(d, 10) == pytest.approx(0.405 * D, rel=1.5e-3)
    assert ara(d, 10, bins=10_000) == pytest.approx(0.405 * D, rel=2e-4)
    # order and a chance level of 1/2 (area of (0.5 - eps/D)+ = D/8)
    assert ara(d[::-1], 10) == ara(d, 10)
    assert ara(d, 2, bins=10_000) == pytest.approx(D / 8, rel=1e-3)


def test_ara_all_misclassified_is_zero_without_warning():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        assert ara(np.zeros(20), 10) == 0.0
        eps, acc = accuracy_curve(np.zeros(20))
    assert eps.tolist() == [0.0] and acc.tolist() == [0.0]


@pytest.mark.parametrize("bad", [[], np.zeros((2, 2)), [0.1, -0.1], [0.1, np.nan], [np.inf]])
def test_ara_rejects_bad_distances(bad):
    with pytest.raises(ValueError, match="distances"):
        ara(bad, 10)


def test_ara_rejects_bad_classes_and_bins():
    with pytest.raises(ValueError, match="num_classes"):
        ara([0.1], 0)
    with pytest.raises(ValueError, match="bins"):
        ara([0.1], 10, bins=0)


def test_accuracy_curve_is_the_ara_discretisation():
    rng = np.random.default_rng(0)
    d = np.concatenate([np.zeros(7), rng.gamma(2.0, 0.02, 193)])
    eps, acc = accuracy_curve(d, bins=1000)
    gap = d.max() / 1000
    assert len(eps) == len(acc) == 1001 and eps[0] == 0 and eps[-1] == pytest.approx(d.max())
    assert acc[0] == pytest.approx(193 / 200) and acc[-1] == 0 and (np.diff(acc) <= 0).all()
    assert gap * np.maximum(acc[1:] - 0.1, 0).sum() == pytest.approx(ara(d, 10), rel=1e-12)
    # A_k against the definition "fraction with d > eps_k", away from bin edges
    k = np.arange(1, 1001, 37)
    assert np.abs(acc[k] - (d[None] > eps[k, None]).mean(1)).max() <= 1 / 200


def test_ara_subset_is_calculate_aras_permutation():
    state = torch.get_rng_state()
    pick = ara_subset(10_000, 1000)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    with torch.random.fork_rng():
        torch.manual_seed(1776)
        expected = torch.randperm(10_000)[:1000]  # main.py calculate_ara
    assert torch.equal(pick, expected) and pick.dtype == torch.int64
    assert torch.equal(ara_subset(10_000, 10), pick[:10])
    with pytest.raises(ValueError, match="n"):
        ara_subset(5, 6)


# ---- step sizes ---------------------------------------------------------------------------------------

def test_step_sizes():
    s = step_sizes(20, 450)
    assert s.dtype == torch.float64 and s.shape == (450,)
    assert s.sum().item() == pytest.approx(20, rel=1e-12)
    assert round(s[0].item(), 4) == 0.0887 and f"{s[-1].item():.3g}" == "0.000197"  # SPEC 2 (b)
    assert (s.diff() < 0).all()
    # main.py's Python-float expression, bit for bit
    assert s.tolist() == [20 * (450 - t) / (450 * 451 / 2) for t in range(450)]
    assert step_sizes(0.5, 1).tolist() == [0.5]


def test_rms():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0]]).view(2, 1, 1, 2)
    assert torch.allclose(rms(v), torch.tensor([12.5 ** 0.5, 0.0]))


# ---- the search against a step-by-step reference ------------------------------------------------------

def reference_iterates(model, x, y, *, eps, steps, mode, momentum=0.0):
    """main.py `_adv_images` written out (l2min/btr, no mask): every evaluated delta (steps + 1 of them) and
    whether the criterion held there. No best tracking here: the minimum is taken afterwards over all iterates."""
    deltas = x.new_zeros(x.shape).requires_grad_()
    mom = x.new_zeros(x.shape)
    iterates, met = [], []
    for step in range(steps + 1):
        guesses = model(x + deltas)
        loss = F.cross_entropy(guesses, y, reduction="none")
        grads = torch.autograd.grad(loss.sum(), deltas)[0]
        if mode == "l2min":
            follow = (guesses.argmax(1) == y).float()
        else:
            sm = guesses.softmax(1)
            follow = (sm.gather(1, y.unsqueeze(1))[:, 0] > 1 / sm.size(1)).float()
        iterates.append(deltas.detach().clone())
        met.append(follow == 0)
        if step == steps:
            break
        ss = eps * (steps - step) / (steps * (steps + 1) / 2)
        follow = follow.view(-1, 1, 1, 1)
        sdir = follow * grads + (1 - follow) * -deltas.detach()
        sdir /= 1e-8 + sdir.pow(2).mean((1, 2, 3)).sqrt().view(-1, 1, 1, 1)
        if momentum > 0:
            mom = mom.mul_(momentum).add_(sdir, alpha=1 - momentum)
            sdir = mom.clone()
        deltas.data.add_(sdir, alpha=ss)
    return torch.stack(iterates), torch.stack(met)


def smallest_met(iterates, met):
    """(delta of smallest RMS among met iterates, first such on ties; zeros if none), its RMS (inf if none)."""
    ms = iterates.pow(2).flatten(2).mean(2)
    ms = torch.where(met, ms, torch.full_like(ms, float("inf")))
    best_ms, at = ms.min(0)  # min over steps: the first minimal index
    best = iterates[at, torch.arange(iterates.shape[1])]
    best[~met.any(0)] = 0
    return best, best_ms.sqrt()


@pytest.fixture(scope="module")
def correct(digits_model):
    """The first 160 correctly classified test images, labelled with the model's prediction, whose clean CE is not
    0 in float32: where it is, the gradient underflows (~1e-10), d = g / (1e-8 + RMS(g)) is tiny and the search
    barely moves, as the original's would (3 of the first 160 on the fixture model)."""
    model, x, y, pred = digits_model
    with torch.no_grad():
        keep = (pred == y) & (F.cross_entropy(model(x), y, reduction="none") > 0)
    return model, x[keep][:160], pred[keep][:160]


@pytest.mark.parametrize("mode, momentum, eps, steps", [("l2min", 0.0, 1.0, 20), ("l2min", 0.9, 3.0, 40),
                                                       ("btr", 0.0, 1.0, 20), ("btr", 0.9, 3.0, 40)])
def test_search_returns_the_smallest_met_iterate(correct, mode, momentum, eps, steps):
    model, x, y = correct
    result = perturbation_search(model, x, y, eps=eps, steps=steps, momentum=momentum, mode=mode)
    iterates, met = reference_iterates(model, x, y, eps=eps, steps=steps, mode=mode, momentum=momentum)
    expected, expected_rms = smallest_met(iterates, met)
    assert torch.equal(result.delta, expected)
    assert torch.equal(result.met, met.any(0)) and result.met.all()
    assert (met.sum(0) > 1).float().mean() > 0.9  # several candidates per sample: the minimum is a real choice
    # minimal over every iterate at which the criterion held
    found = rms(result.delta)
    all_rms = iterates.pow(2).flatten(2).mean(2).sqrt()
    assert torch.equal(found, expected_rms)
    assert (found[None] <= torch.where(met, all_rms, torch.inf)).all()
    assert torch.equal(result.first_met, met.int().argmax(0))
    with torch.no_grad():
        logits = model(x + result.delta)
    if mode == "l2min":
        assert (logits.argmax(1) != y).all()
    else:
        assert (logits.softmax(1).gather(1, y[:, None])[:, 0] <= 0.1).all()
    assert not result.delta.requires_grad and result.delta.shape == x.shape


def test_momentum_zero_is_the_plain_path(correct):
    model, x, y = correct
    x, y = x[:64], y[:64]
    plain = perturbation_search(model, x, y, eps=1.0, steps=12, mode="l2min", ensure_proper_minimization=False)
    zero = perturbation_search(model, x, y, eps=1.0, steps=12, mode="l2min", momentum=0.0,
                               ensure_proper_minimization=False)
    assert torch.equal(plain.delta, zero.delta)
    # the momentum recursion at mu = 0 (m = 0 m + 1 d) gives the same iterates as no momentum at all
    iterates, met = reference_iterates(model, x, y, eps=1.0, steps=12, mode="l2min", momentum=1e-300)
    assert torch.equal(zero.delta, smallest_met(iterates, met)[0])
    small = perturbation_search(model, x, y, eps=1.0, steps=12, mode="l2min", momentum=0.05,
                                ensure_proper_minimization=False)
    assert not torch.equal(small.delta, zero.delta)


def test_already_misclassified_images_get_zero(digits_model):
    model, x, y, pred = digits_model
    wrong = pred != y
    assert wrong.any()
    with torch.no_grad():
        at_chance = model(x).softmax(1).gather(1, y[:, None])[:, 0] <= 0.1
    assert at_chance.any() and (wrong & ~at_chance).any()
    for mode, done in (("l2min", wrong), ("btr", at_chance)):
        result = perturbation_search(model, x, y, eps=1.0, steps=20, mode=mode, ensure_proper_minimization=False)
        assert (result.delta[done] == 0).all() and (result.first_met[done] == 0).all()
        assert (result.first_met[~done] > 0).all()


def test_standard_mode_stays_within_the_budget(correct):
    model, x, y = correct
    result = perturbation_search(model, x, y, eps=0.05, steps=7, ensure_proper_minimization=False)
    r = rms(result.delta)
    assert result.met.all() and (r <= 0.05 + 1e-6).all() and (r > 0.04).all()
    assert (result.first_met == -1).all()  # eps_overshoot 1 never reaches RMS eps within the steps
    with torch.no_grad():
        assert model(x + result.delta).argmax(1).ne(y).any()


def test_encourage_moves_toward_the_target(correct):
    model, x, _ = correct
    x = x[:20]
    target = (model(x).argmax(1) + 1 + torch.arange(20) % 9) % 10  # never the predicted class
    result = perturbation_search(model, x, target, eps=0.1, steps=35, eps_overshoot=5, encourage=True)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, target[:, None])
        after = model(x + result.delta).softmax(1).gather(1, target[:, None])
    assert (after > before).all() and after.median() > 0.5
    with pytest.raises(ValueError, match="encourage"):
        perturbation_search(model, x, target, eps=0.1, steps=3, mode="l2min", encourage=True)


class ShiftedMean(nn.Module):
    """Two classes, logits (10 (mean(x) - 0.5), 0): a sample at mean 0.5 + m needs its mean lowered by m to flip.

    The CE gradient is uniform over pixels, so each step lowers the mean by its step size: sample i is first
    misclassified at the first t with ss_0 + ... + ss_{t-1} > m_i."""

    def forward(self, x):
        z = 10 * (x.flatten(1).mean(1) - 0.5)
        return torch.stack([z, torch.zeros_like(z)], 1)


def shifted_mean_case():
    margins = torch.tensor([0.03, 0.27, 0.30, 0.385, 0.45])
    x = (0.5 + margins).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ShiftedMean().eval(), x, torch.zeros(5, dtype=torch.int64)


def test_ensure_proper_minimization_names_late_and_never_met_samples():
    # eps 0.4, 10 steps: cumulative step sums 0.073 0.138 0.196 0.247 0.291 0.327 0.356 0.378 0.393 0.400
    model, x, y = shifted_mean_case()
    free = perturbation_search(model, x, y, eps=0.4, steps=10, mode="l2min", ensure_proper_minimization=False)
    assert free.first_met.tolist() == [1, 5, 6, 9, -1]  # T // 2 = 5 is still in time
    assert free.met.tolist() == [True] * 4 + [False] and (free.delta[4] == 0).all()
    with pytest.raises(ValueError, match=r"samples \[2, 3\] met the criterion only after step 5 of 10"
                                         r"; samples \[4\] never met it"):
        perturbation_search(model, x, y, eps=0.4, steps=10, mode="l2min")
    perturbation_search(model, x[:2], y[:2], eps=0.4, steps=10, mode="l2min")  # all in time: no error
    # ara_distances checks per batch and names indices into x
    with pytest.raises(ValueError, match=r"samples \[2, 3\] met the criterion only after step 5 of 10; ensure"):
        ara_distances(model, x, y, mode="l2min", eps=0.4, steps=10, momentum=0.0, batch_size=2, progress=False)


def test_ensure_proper_minimization_in_standard_mode_needs_overshoot(correct):
    model, x, y = correct
    with pytest.raises(ValueError, match="ensure_proper_minimization"):
        perturbation_search(model, x, y, eps=0.05, steps=7)
    # explanations' overshoot 5 reaches RMS eps early: the check passes
    perturbation_search(model, x, y, eps=0.05, steps=35, eps_overshoot=5)


def test_half_and_half_is_seeded_and_perturbs_about_half(correct):
    model, x, y = correct
    kw = dict(eps=0.05, steps=7, half_and_half=True, ensure_proper_minimization=False)
    a = perturbation_search(model, x, y, generator=torch.Generator().manual_seed(3), **kw).delta
    b = perturbation_search(model, x, y, generator=torch.Generator().manual_seed(3), **kw).delta
    c = perturbation_search(model, x, y, generator=torch.Generator().manual_seed(4), **kw).delta
    assert torch.equal(a, b) and not torch.equal(a, c)
    moved = a.flatten(1).ne(0).any(1)
    assert 0.35 < moved.float().mean() < 0.65
    # the mask is drawn once, as main.py's: moved samples took all 7 steps, exactly as without the mask
    full = perturbation_search(model, x, y, eps=0.05, steps=7, ensure_proper_minimization=False).delta
    assert torch.allclose(a[moved], full[moved], atol=1e-7, rtol=0)
    # main.py draws (torch.rand(N, 1, 1, 1) < 0.5): the same draws from the same generator
    expected = torch.rand(len(x), generator=torch.Generator().manual_seed(3)) < 0.5
    assert torch.equal(moved, expected)


def test_search_leaves_the_model_alone_under_no_grad(correct):
    model, x, y = correct
    x, y = x[:32], y[:32]
    before = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    outside = perturbation_search(model, x, y, eps=1.0, steps=10, mode="l2min")
    with torch.no_grad():
        inside = perturbation_search(model, x, y, eps=1.0, steps=10, mode="l2min")
    assert torch.equal(inside.delta, outside.delta)
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_search_runs_in_train_mode():
    # adversarial training calls the search with the model in train mode: BN batch statistics, running stats
    # updated by each of its forwards (main.py), and still no parameter gradients.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).train()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    result = perturbation_search(model, x, y, eps=0.01, steps=7, ensure_proper_minimization=False)
    assert model.training and model[1].num_batches_tracked.item() == 7
    assert (rms(result.delta) > 0).all()
    assert all(p.grad is None for p in model.parameters())


def test_search_rejects_bad_parameters(correct):
    model, x, y = correct
    for kw, name in [({"mode": "linf"}, "mode"), ({"steps": 0}, "steps"), ({"eps": 0}, "eps"),
                     ({"momentum": 1.0}, "momentum"), ({"eps_overshoot": -1}, "eps_overshoot")]:
        with pytest.raises(ValueError, match=name):
            perturbation_search(model, x, y, **{"eps": 0.1, "steps": 3, "mode": "l2min", **kw})


# ---- the registered attack ----------------------------------------------------------------------------

def test_registered_attack(correct):
    model, x, y = correct
    assert ATTACKS["search"] is PerturbationSearch
    attack = build_attack({"method": "search", "eps": 1, "steps": 20, "mode": "l2min"})
    result = attack(model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    # x_adv is x plus the minimal delta of the independent step-by-step loop, clamped to [0,1]
    delta = smallest_met(*reference_iterates(model, x, y, eps=1, steps=20, mode="l2min"))[0]
    assert torch.equal(result.x_adv, (x + delta).clamp(0, 1))
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)
        assert (model(x + delta).argmax(1) != y).all()
    # The minimal deltas sit on the decision boundary and push background pixels below 0: clamping undoes most
    # (measured 7.5% still fooled). ARA measures the unclamped delta, as the original.
    assert result.success.float().mean() < 0.5
    # half-and-half from the config seed: reproducible through run()
    cfg = {"method": "search", "eps": "1/100", "steps": 7, "half_and_half": True, "seed": 2,
           "ensure_proper_minimization": False}
    r1, r2 = (build_attack(cfg).run(model, x, y, batch_size=64, progress=False) for _ in range(2))
    assert torch.equal(r1.x_adv, r2.x_adv) and 0.3 < (r1.x_adv != x).flatten(1).any(1).float().mean() < 0.7


def linear_walk(margin_rms, total, steps, momentum):
    """SPEC 2's search in one dimension, float64: for a two-class linear model every direction it takes (the CE
    gradient, a positive multiple of w_other - w_y, and -delta) is parallel to u = w_other - w_y, so delta =
    s * u / RMS(u) and each unit-RMS step moves s by ss_t (momentum mixes those +-1 directions). The criterion
    (still classified y; argmax ties go to y = class 0) holds while s <= margin_rms. Returns the smallest |s| of
    the evaluated points at which it failed (the search's answer), and the step at which that first happened."""
    s, m, best, first = 0.0, 0.0, float("inf"), -1
    for t in range(steps + 1):
        follow = s <= margin_rms
        if not follow:
            best = min(best, abs(s))
            first = t if first < 0 else first
        if t == steps:
            break
        d = 1.0 if follow else -float(np.sign(s))
        if momentum > 0:
            m = momentum * m + (1 - momentum) * d
            d = m
        s += total * (steps - t) / (steps * (steps + 1) / 2) * d
    return best, first


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_registered_attack_finds_the_distance_to_a_linear_boundary(momentum):
    """One image, a linear two-class model: the minimal perturbation is known in closed form, the RMS distance to
    the decision hyperplane d* = margin / (|u|_2 sqrt(n)), u = w_1 - w_0, and the search can only approach it
    from above with its shrinking steps (its exact answer: the one-dimensional walk above)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 16, generator=g)
    x = 0.5 + 0.05 * torch.randn(1, 1, 4, 4, generator=g)
    u = (w[1] - w[0]).double()
    # f_0 - f_1 = -u.x - b_1: a margin of 0.3 |u|_2, an L2 distance of 0.3 (RMS 0.075) to the hyperplane
    bias = torch.tensor([0.0, -(u @ x.double().flatten()).item() - 0.3 * u.norm().item()])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.copy_(bias)
    y = torch.zeros(1, dtype=torch.int64)
    with torch.no_grad():
        logits = model(x).double()[0]
    d_star = (logits[0] - logits[1]).item() / (u.norm().item() * 16 ** 0.5)  # RMS distance to the hyperplane
    assert 0.05 < d_star < 0.1
    eps, steps = 0.3, 60
    expected, first = linear_walk(d_star, eps, steps, momentum)
    assert 0 < first <= steps // 2  # so the default ensure_proper_minimization passes
    result = build_attack({"method": "search", "eps": eps, "steps": steps, "mode": "l2min",
                           "momentum": momentum})(model, x, y)
    found = rms((result.x_adv - x).double()).item()
    assert result.x_adv.min() > 0 and result.x_adv.max() < 1  # no clamping: x_adv - x is the search's delta
    assert found == pytest.approx(expected, abs=1e-6)
    assert d_star < found <= d_star * 1.02  # within 2% of the true minimum, never below it
    with torch.no_grad():
        assert model(result.x_adv).argmax(1).item() == 1 and result.success.item()
    # the perturbation is along u (a multiple of the hyperplane's normal): cosine 1
    cos = torch.nn.functional.cosine_similarity((result.x_adv - x).double().flatten(), u, dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("cfg, match", [
    ({"eps": 1, "steps": 5, "mode": "linf"}, "mode"),
    ({"eps": 1, "steps": 5, "mode": "l2min", "momentum": 1.5}, "momentum"),
    ({"eps": 1, "steps": 0, "mode": "l2min"}, "steps"),
    ({"eps": 1, "steps": 5, "mode": "l2min", "half_and_half": 1}, "half_and_half"),
    ({"eps": 1, "steps": 5}, "ensure_proper_minimization"),  # standard mode, overshoot 1: can never pass
    ({"steps": 5}, "missing.*eps"),
])
def test_registered_attack_rejects_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_attack({"method": "search", **cfg})


# ---- ARA distances ------------------------------------------------------------------------------------

def test_ara_distances(digits_model):
    model, x, y, pred = digits_model
    x, y, pred = x[:270], y[:270], pred[:270]
    assert (pred != y).any()
    d = ara_distances(model, x, y, mode="l2min", eps=1.0, steps=20, momentum=0.0, batch_size=1000, progress=False)
    assert d.dtype == np.float64 and d.shape == (len(x),)
    assert (d[(pred != y).numpy()] == 0).all() and (d[(pred == y).numpy()] > 0).all()
    expected = rms(perturbation_search(model, x, y, eps=1.0, steps=20, mode="l2min").delta)
    assert np.array_equal(d, expected.double().numpy())
    batched = ara_distances(model, x, y, mode="l2min", eps=1.0, steps=20, momentum=0.0, batch_size=64,
                            progress=False)
    np.testing.assert_allclose(batched, d, rtol=1e-5, atol=1e-7)
    btr = ara_distances(model, x, y, mode="btr", eps=1.0, steps=20, momentum=0.0, batch_size=1000, progress=False)
    # pushing p_y down to chance takes at least as much as flipping the argmax, up to the search's granularity
    assert np.median(btr) > np.median(d)
    assert 0 < ara(d, 10) < ara(btr, 10)
    with pytest.raises(ValueError, match="mode"):
        ara_distances(model, x, y, mode="standard", progress=False)
    with pytest.raises(ValueError, match="training mode"):
        ara_distances(model.train(), x, y, mode="l2min", progress=False)
    model.eval()
