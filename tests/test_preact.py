"""Pre-activation ResNet and Half-Huber ReLU of SPEC 2, and the importer of the authors' checkpoints."""
import hashlib
import json
import math
import os
import pickle
import sys

import pytest
import torch
from torch import nn

from advpipe.cli import main as cli
from advpipe.models import ARCHS, build_model, load_trained
from advpipe.models.activations import HHReLU, hhrelu
from advpipe.models.checkpoint import CheckpointError
from advpipe.models.preact import PreActResNet
from advpipe.models.wwoods import CIFAR10_CLASSES, import_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- model

def _conv(cin, cout, k):
    return cin * cout * k * k


def _bn(c):
    return 2 * c  # weight and bias


def _block(cin, cout, projection):
    return (_bn(cin) + _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3)
            + (_conv(cin, cout, 3) if projection else 0))


def test_resnet44_parameter_count():
    n, w = 7, 16
    expected = _conv(3, w, 3)
    cin = w
    for stage in range(3):
        cout = w * 2 ** stage
        expected += sum(_block(cin if i == 0 else cout, cout, projection=(i == 0 and stage > 0)) for i in range(n))
        cin = cout
    expected += _bn(4 * w) + 4 * w * 10 + 10  # final BN, 1x1 conv (as a Linear) with bias
    assert expected == 681_626  # by hand: 432 + 32,704 + 129,888 + 517,824 + 128 + 650
    model = build_model("preact_resnet", in_channels=3, num_classes=10, image_size=32, depth=44, width=16)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert "preact_resnet" in ARCHS


@pytest.mark.parametrize("depth", [0, 2, 7, 10, 45, -4, 44.0, "44", True])
def test_bad_depth_refused(depth):
    with pytest.raises(ValueError, match=r"depth must be 6n\+2 with n >= 1"):
        PreActResNet(3, 10, 32, depth=depth)


def test_bad_activation_refused():
    with pytest.raises(ValueError, match="activation"):
        PreActResNet(3, 10, 32, depth=8, activation="gelu")
    with pytest.raises(ValueError, match="hhrelu_delta"):
        PreActResNet(3, 10, 32, depth=8, activation="hhrelu", hhrelu_delta=0)


@pytest.mark.parametrize("activation", ["relu", "hhrelu"])
def test_blocks_start_as_identity(activation):
    """Zero last convs: identity-shortcut blocks return their input; the two projecting blocks (stride 2,
    more channels) reduce to their shortcut conv on act(BN(x)); so the net is stem -> 2 shortcut convs ->
    final BN -> act -> pool -> head."""
    torch.manual_seed(0)
    model = PreActResNet(3, 10, 32, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], depth=14, width=8,
                         activation=activation).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    assert (model.head.bias == 0).all()
    stem, stages, final_bn, final_act = model.body[0], model.body[1:4], model.body[4], model.body[5]
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        h = stem((x - model.mean) / model.std)
        for stage in stages:
            for block in stage:
                assert (block.main[-1].weight == 0).all()
                if block.shortcut is None:
                    torch.testing.assert_close(block(h), h, rtol=0, atol=0)
                else:
                    h = block.shortcut(block.pre(h))
        feats = final_act(final_bn(h)).mean((2, 3))
        expected = model.head(feats)
        logits, representation = model.forward_features(x)
    assert sum(b.shortcut is not None for s in stages for b in s) == 2
    torch.testing.assert_close(representation, feats, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_global_pool_any_size(channels, size):
    torch.manual_seed(0)
    model = build_model("preact_resnet", in_channels=channels, num_classes=10, image_size=size,
                        depth=8, width=4).eval()
    x = torch.rand(2, channels, size, size)
    logits, feats = model.forward_features(x)
    assert feats.shape == (2, 16) and logits.shape == (2, 10)
    torch.testing.assert_close(model.head(feats), logits)


def test_double_backprop_through_hhrelu_net():
    """The robust penalty psi * mean |ds/dx|^2 needs d/dtheta of an input gradient (create_graph)."""
    torch.manual_seed(0)
    model = PreActResNet(1, 10, 8, depth=8, width=4, activation="hhrelu")
    for m in model.modules():  # non-zero last convs, so every block's weights reach the penalty
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    (grad_x,) = torch.autograd.grad(model(x)[:, 3].sum(), x, create_graph=True)
    grad_x.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if name.endswith("weight") and "main.3" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- Half-Huber ReLU

def _h(u, d):
    return 0.0 if u <= 0 else (u * u / (2 * d) if u <= d else u - d / 2)


def _dh(u, d):
    return min(max(u, 0.0), d) / d


def _value_and_grad(u, d):
    x = torch.tensor([u], dtype=torch.float64, requires_grad=True)
    y = hhrelu(x, d)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.item(), g.item()


def test_hhrelu_paper_values():
    for u, value, grad in [(0.25, 0.0625, 0.5), (0.5, 0.25, 1.0), (1.0, 0.75, 1.0), (3.0, 2.75, 1.0),
                           (0.0, 0.0, 0.0), (-1.0, 0.0, 0.0)]:
        assert _value_and_grad(u, 0.5) == pytest.approx((value, grad), abs=1e-12), u
    # float32 module, the default delta
    torch.testing.assert_close(HHReLU()(torch.tensor([0.25, 0.5, 1.0])), torch.tensor([0.0625, 0.25, 0.75]))


@pytest.mark.parametrize("delta", [0.25, 1.0, 2.0])
def test_hhrelu_any_delta(delta):
    for u in [-1.0, 0.0, 0.1, delta / 2, delta, 1.5 * delta, 3.0]:
        assert _value_and_grad(u, delta) == pytest.approx((_h(u, delta), _dh(u, delta)), abs=1e-12), (u, delta)
    # the spot values for delta 0.25 and 1 by hand
    if delta == 0.25:
        assert _value_and_grad(0.125, delta) == pytest.approx((0.03125, 0.5))
        assert _value_and_grad(1.0, delta) == pytest.approx((0.875, 1.0))
    if delta == 1.0:
        assert _value_and_grad(0.5, delta) == pytest.approx((0.125, 0.5))
        assert _value_and_grad(2.0, delta) == pytest.approx((1.5, 1.0))


@pytest.mark.parametrize("delta", [0.25, 0.5, 1.0])
def test_hhrelu_gradcheck(delta):
    torch.manual_seed(0)
    u = torch.empty(64, dtype=torch.float64).uniform_(-1.0, 2.5)
    u = u[((u.abs() > 1e-3) & ((u - delta).abs() > 1e-3))].requires_grad_()  # off the kinks
    assert torch.autograd.gradcheck(lambda t: hhrelu(t, delta), (u,))
    assert torch.autograd.gradgradcheck(lambda t: hhrelu(t, delta), (u,))
    # second derivative 1/delta inside the bowl, 0 elsewhere
    (g,) = torch.autograd.grad(hhrelu(u, delta).sum(), u, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), u)
    bowl = (u > 0) & (u < delta)
    torch.testing.assert_close(gg, bowl.double() / delta)


# ---------------------------------------------------------------- the authors' layout, written independently

class RefHHReLU(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.register_buffer("d", torch.tensor(d, dtype=torch.float))

    def forward(self, x):
        d = self.d
        return torch.where(x <= 0, torch.zeros_like(x), torch.where(x <= d, x * x / (2 * d), x - d / 2))


class RefBlock(nn.Module):
    def __init__(self, act, nf_in, nf, stride):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(nf_in), act())
        self.main = nn.Sequential(nn.Conv2d(nf_in, nf, 3, padding=1, stride=stride, bias=False),
                                  nn.BatchNorm2d(nf), act(), nn.Conv2d(nf, nf, 3, padding=1, bias=False))
        self.shortcut = (nn.Conv2d(nf_in, nf, 3, padding=1, stride=stride, bias=False)
                         if stride != 1 or nf_in != nf else None)

    def forward(self, x):
        pre = self.pre(x)
        return self.main(pre) + (x if self.shortcut is None else self.shortcut(pre))


class RefModel(nn.Module):
    """model.py `Model`: input_offset buffer; pipe = stem, 3 Sequential stages, BN, act, AvgPool, 1x1 conv."""

    def __init__(self, n, fts, act, offset):
        super().__init__()
        self.register_buffer("input_offset", torch.tensor(offset))
        pipe = [nn.Conv2d(3, fts[0], 3, padding=1, bias=False)]
        ft = fts[0]
        for i, bft in enumerate(fts):
            pipe.append(nn.Sequential(*[RefBlock(act, ft if j == 0 else bft, bft, 2 if (i and not j) else 1)
                                        for j in range(n)]))
            ft = bft
        pipe += [nn.BatchNorm2d(ft), act(), nn.AvgPool2d(32 // 4), nn.Conv2d(ft, 10, 1)]
        self.pipe = nn.Sequential(*pipe)

    def forward(self, x):
        x = (x - self.input_offset[0].view(1, -1, 1, 1)) / self.input_offset[1].view(1, -1, 1, 1)
        return self.pipe(x)[:, :, 0, 0]


OFFSET = [[0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]]


def _reference(n, width, robust, delta, seed=0):
    """A trained-looking reference net: random convs (last ones not zero), random BN affine and statistics."""
    torch.manual_seed(seed)
    act = (lambda: RefHHReLU(delta)) if robust else nn.ReLU
    ref = RefModel(n, [width, 2 * width, 4 * width], act, OFFSET)
    for m in ref.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    return ref.eval()


def _fake_main_function(monkeypatch, name, fn):
    """Host `fn` in __main__ as the authors' script did (pickle stores a reference `__main__.name`)."""
    fn.__module__, fn.__qualname__ = "__main__", name
    monkeypatch.setattr(sys.modules["__main__"], name, fn, raising=False)
    return fn


@pytest.fixture
def authors_options(monkeypatch):
    """training_options as main.py builds them, `arch` holding the __main__ function."""
    def make(n, width, robust, integration=None, adv=False, l2min=False):
        def cifar10_preprocess(ft_out):
            return nn.Conv2d(3, ft_out, kernel_size=3, padding=1, bias=False)

        fn = _fake_main_function(monkeypatch, "cifar10_preprocess", cifar10_preprocess)
        options = {"adversarial_training": adv, "l2_min": l2min, "robust_additions": robust,
                   "arch": [32, fn, [n] * 3, [width, 2 * width, 4 * width], 10], "input_offset": OFFSET}
        if integration is not None:
            options["robust_integration"] = integration
        return options
    return make


def _save(path, ref, options, monkeypatch, legacy=False):
    torch.save({"model_params": ref.state_dict(), "training_options": options}, path,
               _use_new_zipfile_serialization=not legacy)
    monkeypatch.delattr(sys.modules["__main__"], "cifar10_preprocess")  # the function is gone when importing


CASES = {  # name: (depth, width, robust, delta, robust_integration, adversarial, l2min, legacy format)
    "standard_zip": (14, 8, False, None, None, False, False, False),
    # I such that psi is README's "final Psi" of resnet44-all, 14240 (I = ln(14240/220)/0.02, about 208.5)
    "robust_legacy_resnet44": (44, 16, True, 0.5, 50 * math.log(14240 / 220), False, False, True),
    "all_delta_0.25_zip": (8, 4, True, 0.25, 252.5, True, True, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_authors_checkpoint(case, tmp_path, monkeypatch, authors_options, capsys):
    depth, width, robust, delta, integration, adv, l2min, legacy = CASES[case]
    n = (depth - 2) // 6
    ref = _reference(n, width, robust, delta)
    options = authors_options(n, width, robust, integration, adv, l2min)
    src = tmp_path / "resnet.pt"
    _save(src, ref, options, monkeypatch, legacy=legacy)
    assert not hasattr(sys.modules["__main__"], "cifar10_preprocess")
    # The file is the awkward kind: torch's safe loader refuses it, a plain load cannot find the function.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(src, weights_only=True)
    with pytest.raises(AttributeError, match="cifar10_preprocess"):
        torch.load(src, weights_only=False)

    dest = tmp_path / "imported"
    assert cli(["import-checkpoint", "wwoods", str(src), str(dest)]) == 0
    assert f"depth {depth}, width {width}" in capsys.readouterr().out

    model = load_trained(dest)
    assert isinstance(model, PreActResNet) and not model.training
    # Random images of unlike brightness: the global pool averages plain noise to nearly one logit vector.
    x = torch.rand(6, 3, 32, 32) ** torch.linspace(0.3, 3.0, 6).view(6, 1, 1, 1)
    with torch.no_grad():
        expected = ref(x)
        logits, feats = model.forward_features(x)
    assert expected.std(0).mean() > 0.01  # logits that depend on the input, far beyond atol
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert feats.shape == (6, 4 * width)

    spec = json.loads((dest / "model.json").read_text())
    assert spec["arch"] == "preact_resnet"
    assert spec["arch_args"] == {"depth": depth, "width": width, "activation": "hhrelu" if robust else "relu",
                                 **({"hhrelu_delta": delta} if robust else {})}
    assert (spec["in_channels"], spec["image_size"], spec["num_classes"]) == (3, 32, 10)
    assert spec["classes"] == CIFAR10_CLASSES == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                  "frog", "horse", "ship", "truck"]
    assert spec["mean"] == pytest.approx(OFFSET[0]) and spec["std"] == pytest.approx(OFFSET[1])
    origin = spec["imported_from"]
    assert origin["path"] == str(src.resolve())
    assert origin["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    plain = {"adversarial_training": adv, "l2_min": l2min, "robust_additions": robust,
             "arch": [32, "__main__.cifar10_preprocess", [n] * 3, [width, 2 * width, 4 * width], 10],
             "input_offset": OFFSET}
    if robust:
        plain["robust_integration"] = integration
    assert origin["training_options"] == plain
    assert origin["psi"] == (pytest.approx(220 * math.exp(0.02 * integration)) if robust else None)
    if depth == 44:
        assert origin["psi"] == pytest.approx(14240, rel=1e-12)


class _ShellExploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _touch(path):
    open(path, "w").close()


class _FunctionExploit:
    def __init__(self, fn, marker):
        self.fn, self.marker = fn, marker

    def __reduce__(self):
        return self.fn, (str(self.marker),)


@pytest.mark.parametrize("kind", ["os.system", "module function", "__main__ function"])
def test_code_in_checkpoint_refused(kind, tmp_path, monkeypatch, authors_options, capsys):
    marker = tmp_path / "PWNED"
    if kind == "os.system":
        payload = _ShellExploit(marker)
    elif kind == "module function":
        payload = _FunctionExploit(_touch, marker)
    else:  # present in __main__ while importing: an ordinary load would call it
        payload = _FunctionExploit(_fake_main_function(monkeypatch, "make_marker", lambda p: _touch(p)), marker)
    ref = _reference(1, 4, False, None)
    options = authors_options(1, 4, False)
    options["adversarial_training"] = payload
    src = tmp_path / "evil.pt"
    _save(src, ref, options, monkeypatch)
    dest = tmp_path / "out"
    with pytest.raises(CheckpointError, match=rf"{src}: refused to load"):
        import_checkpoint(src, dest)
    assert cli(["import-checkpoint", "wwoods", str(src), str(dest)]) == 2
    assert f"{src}: refused to load" in capsys.readouterr().err
    assert not marker.exists() and not dest.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_or_missing_checkpoint_refused(legacy, tmp_path, monkeypatch, authors_options, capsys):
    src = tmp_path / "resnet.pt"
    _save(src, _reference(1, 4, True, 0.5), authors_options(1, 4, True, 3.0), monkeypatch, legacy=legacy)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{src}: truncated or corrupt"):
        import_checkpoint(src, tmp_path / "out")
    assert cli(["import-checkpoint", "wwoods", str(src), str(tmp_path / "out")]) == 2
    assert f"{src}: truncated or corrupt" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="nowhere.pt: file does not exist"):
        import_checkpoint(tmp_path / "nowhere.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_layout_refused(tmp_path, monkeypatch, authors_options):
    """robust_additions without HHReLU `d` buffers (or any other key mismatch) is named, not guessed."""
    src = tmp_path / "resnet.pt"
    _save(src, _reference(1, 4, False, None), authors_options(1, 4, True, 3.0), monkeypatch)
    with pytest.raises(CheckpointError, match=r"resnet.pt: not the authors' pre-activation ResNet layout "
                                              r"\(HHReLU `d` buffers"):
        import_checkpoint(src, tmp_path / "out")
