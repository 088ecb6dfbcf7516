"""The label study's PGD (SPEC 3: cdu890 attack_v3.py called torchattacks.PGD) against torchattacks itself.

torchattacks is a peer measured by bench/ (pyproject extra `bench`), not a test dependency: without it these tests
skip. The attacks are called through the adapter below.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advpipe.attacks.spaces import Space
from engine_adapter import attack_under_test
from advpipe.models.cnn import SmallCNN
from advpipe.models.label_heads import HighDimHead, LabelModel

torchattacks = pytest.importorskip("torchattacks")

def pgd_under_test(net, z, y, eps, *, alpha, steps, labels=None, random_start, clamp01=True):
    """The engine's PGD (SPEC 3 configuration) on inputs z of the raw network `net` (no normalisation); the random
    start from the global RNG, as torchattacks draws it."""
    raw_space = Space("raw", lambda v: v, lambda v: v, net, 0.0, 1.0)
    return attack_under_test("pgd", net.model, z, y, eps, alpha=alpha, steps=steps, random_start=random_start,
                             clamp_range=(0.0, 1.0) if clamp01 else None, space=raw_space)


class Raw(nn.Module):
    """A Classifier's or LabelModel's raw output (logits or label-space prediction) straight from its input, with
    no normalisation: the network torchattacks sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.head(self.model.body(x))


def small_models():
    torch.manual_seed(0)
    cnn = SmallCNN(1, 10, 8, channels=(4, 8), hidden=16)
    torch.manual_seed(1)
    backbone = SmallCNN(1, 10, 8, channels=(4, 8), hidden=16)
    labels = torch.rand(10, 64, 64, generator=torch.Generator().manual_seed(2)) * 80
    label_model = LabelModel(backbone, HighDimHead(16, 64), labels)
    g = torch.Generator().manual_seed(5)
    for m in label_model.modules():  # non-trivial eval-mode BN
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return {"classifier": (Raw(cnn).eval(), None), "label_model": (Raw(label_model).eval(), labels)}


def inputs(n=12):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


# torchattacks averages the CE over the batch (nn.CrossEntropyLoss()), label_attacks sums per-image losses: the
# gradients differ by the factor 1/B, which the sign step removes unless an entry underflows. Hence "equal, or
# within 1e-6" (one float32 ulp at 1.0 is 1.2e-7; a flipped sign would show as 2 * alpha = 0.016).
TOL = 1e-6


@pytest.mark.parametrize("name", ["classifier", "label_model"])
def test_pgd_without_random_start_equals_torchattacks(one_thread, name):
    net, labels = small_models()[name]
    x, y = inputs()
    target = y if labels is None else labels[y]  # cdu890 handed label models their label tensor
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    expected = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, target)
    ours = pgd_under_test(net, x, y, eps, alpha=alpha, steps=steps, labels=labels, random_start=False)
    assert (ours - expected).abs().max() <= TOL
    assert (ours - x).abs().max() > eps / 2 and (ours - x).abs().max() <= eps + 1e-6


@pytest.mark.parametrize("name", ["classifier", "label_model"])
def test_pgd_as_cdu890_called_it_equals_torchattacks(one_thread, name):
    """torchattacks.PGD(model, eps, alpha=2/255, steps=4) with its random start, on NORMALISED inputs (its [0,1]
    clamp is the quirk SPEC 3 records): same global seed, same start, same result."""
    net, labels = small_models()[name]
    x, y = inputs()
    z = (x - 0.4) / 0.3  # normalised: well outside [0,1]
    target = y if labels is None else labels[y]
    eps = 0.1
    torch.manual_seed(11)
    expected = torchattacks.PGD(net, eps=eps, alpha=2 / 255, steps=4)(z, target)
    torch.manual_seed(11)
    ours = pgd_under_test(net, z, y, eps, alpha=2 / 255, steps=4, labels=labels, random_start=True)
    assert (ours - expected).abs().max() <= TOL
    assert ours.min() >= 0 and ours.max() <= 1  # the quirk: clamped to [0,1] although z is not in it
