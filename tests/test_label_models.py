"""Label-representation heads, nearest-label decoding, losses, and the SPEC 3 attacks against independent per-image
references written from the originals (tests/spec3_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import spec3_reference as ref
from types import SimpleNamespace

from advpipe.attacks.criteria import random_targets
from advpipe.attacks.losses import make_loss
from advpipe.models.cnn import SmallCNN
from advpipe.models.label_heads import HighDimHead, LabelModel, VectorHead, label_loss, nearest_label_scores

# The batched SPEC 3 attacks under test: the shared engine's configurations (tests/engine_adapter.py).
from engine_adapter import attack_under_test  # noqa: E402


C, HIDDEN = 10, 16


def backbone(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(1, C, 8, channels=(4, 8), hidden=HIDDEN, mean=[0.4], std=[0.3])


def random_labels(shape, seed: int = 1) -> torch.Tensor:
    return torch.rand((C, *shape), generator=torch.Generator().manual_seed(seed)) * 80


def randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def make(kind: str):
    """(model in eval mode, kind, labels or None) for a category, a 64x64 and a vector label model."""
    net = backbone()
    if kind == "category":
        return net.eval(), "category", None
    if kind == "random":
        labels = random_labels((64, 64))
        model = LabelModel(net, HighDimHead(HIDDEN, 64), labels)
    else:  # lowdim
        labels = random_labels((C,))
        model = LabelModel(net, VectorHead(HIDDEN, C), labels)
    randomize_bn(model)
    return model.eval(), kind, labels


def images(n: int = 5, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, C, (n,), generator=g)


# ---------------------------------------------------------------- heads and models

@pytest.mark.parametrize("size, first_convt", [(64, 64 * 64 * 16 + 64), (48, 64 * 64 * 9 + 64)])
def test_highdim_head_shape_and_parameter_count(one_thread, size, first_convt):
    head = HighDimHead(HIDDEN, size)
    # BN1d(16) 32, Linear(16->64) 1088, then ConvT + following BN: 64->32 32800 + BN64 128, 32->16 8208 + BN32 64,
    # 16->8 2056 + BN16 32, 8->1 129 + BN8 16.
    expected = 32 + 1088 + first_convt + (32800 + 128) + (8208 + 64) + (2056 + 32) + (129 + 16)
    assert sum(p.numel() for p in head.parameters()) == expected
    assert expected == (110153 if size == 64 else 81481)
    out = head.train()(torch.randn(3, HIDDEN))
    assert out.shape == (3, size, size)
    assert head.eval()(torch.randn(1, HIDDEN)).shape == (1, size, size)
    with pytest.raises(ValueError):
        HighDimHead(HIDDEN, 32)


def test_label_model_composes_backbone(one_thread):
    net = backbone()
    labels = random_labels((64, 64))
    model = LabelModel(net, HighDimHead(HIDDEN), labels).eval()
    assert model.body is net.body and torch.equal(model.mean, net.mean) and torch.equal(model.std, net.std)
    x, _ = images(3)
    with torch.no_grad():
        scores, feats = model.forward_features(x)
        assert torch.equal(feats, net.body(net.normalize(x)))
        pred = model.predict_label(x)
        assert pred.shape == (3, 64, 64)
        assert torch.equal(scores, nearest_label_scores(pred, labels))
        assert torch.equal(model(x), scores)
        assert torch.equal(model.forward_normalized(model.normalize(x)), pred)
    assert torch.equal(model.state_dict()["labels"], labels)


@pytest.mark.parametrize("shape", [(64, 64), (48, 48), (10,), (50,)])
def test_exact_label_decodes_to_its_class_with_zero_loss(shape):
    labels = random_labels(shape)
    classes = torch.arange(C)
    scores = nearest_label_scores(labels, labels)
    assert torch.equal(scores.argmax(1), classes)
    assert torch.all(scores.diagonal() == 0)
    assert label_loss("random", labels)(labels, classes).item() == 0.0
    assert torch.all(label_loss("random", labels, "per_sample")(labels, classes) == 0)


def test_decoder_scores_equal_direct_mse_loop():
    labels = random_labels((64, 64))
    labels[7] = labels[2]  # a tie: both decoders must pick the first
    out = torch.rand(6, 64, 64, generator=torch.Generator().manual_seed(9)) * 80
    out[0] = labels[2]
    scores = nearest_label_scores(out, labels)
    ref = torch.empty(6, C)
    for b in range(6):
        for c in range(C):
            ref[b, c] = -((out[b] - labels[c]) ** 2).mean()
    torch.testing.assert_close(scores, ref, rtol=1e-6, atol=0)
    assert torch.equal(scores.argmax(1), torch.tensor([min(range(C), key=lambda c: -ref[b, c].item())
                                                       for b in range(6)]))
    assert scores.argmax(1)[0] == 2 and scores[0, 2] == 0 and scores[0, 7] == 0


def test_label_losses():
    labels = random_labels((64, 64))
    out = torch.randn(4, 64, 64) * 40 + 40
    y = torch.tensor([0, 3, 3, 9])
    loss = label_loss("speech", labels)(out, y)
    torch.testing.assert_close(loss, torch.nn.SmoothL1Loss()(out, labels[y]))
    per = label_loss("normal_dim=50", random_labels((50,)), "per_sample")(out[:, 0, :50], y)
    assert per.shape == (4,)
    logits = torch.randn(4, C)
    torch.testing.assert_close(label_loss("category")(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(label_loss("category", reduction="per_sample")(logits, y),
                               F.cross_entropy(logits, y, reduction="none"))
    with pytest.raises(ValueError):
        label_loss("speach", labels)
    with pytest.raises(ValueError):
        label_loss("random")  # no labels


# ---------------------------------------------------------------- attacks vs the per-image references

@pytest.mark.parametrize("kind", ["category", "random", "lowdim"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_spec3_reference(one_thread, kind, targeted):
    model, kind, labels = make(kind)
    x, y = images()
    z = ref.normalize(model, x)
    cls = ref.original_targets(y, C) if targeted else y
    eps = 0.1
    adv = attack_under_test("fgsm", model, z, cls, eps, kind, labels, targeted=targeted)
    expected = ref.fgsm(model, z, cls, eps, labels, targeted=targeted)
    assert torch.equal(adv, expected)
    assert not torch.equal(adv, z)
    # per-image clamp to the image's own range, and each pixel moved by eps unless clamped
    lo, hi = z.amin((1, 2, 3), keepdim=True), z.amax((1, 2, 3), keepdim=True)
    assert torch.all(adv >= lo) and torch.all(adv <= hi)
    moved = (adv - z).abs()
    assert torch.all(((moved - eps).abs() < 1e-6) | (adv == lo) | (adv == hi) | (moved == 0))


@pytest.mark.parametrize("kind", ["category", "random", "lowdim"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("accumulate", [True, False])
def test_bim_matches_spec3_reference(one_thread, kind, targeted, accumulate):
    model, kind, labels = make(kind)
    x, y = images()
    z = ref.normalize(model, x)
    cls = ref.original_targets(y, C) if targeted else y
    eps = 0.2
    adv = attack_under_test("bim", model, z, cls, eps, kind, labels, targeted=targeted,
                            accumulate_gradients=accumulate)
    expected = ref.bim(model, z, cls, eps, labels, targeted=targeted, accumulate=accumulate)
    assert torch.equal(adv, expected)
    assert (adv - z).abs().max() <= eps * (1 + 1e-6)
    assert (adv - z).abs().max() > eps / 2  # it moved


def test_spec3_reference_bim_can_tell_the_two_gradient_rules_apart(one_thread):
    """The comparison above can fail: the reference's two gradient rules give different iterates here, so an
    attack that took the wrong rule would not equal the reference."""
    model, kind, labels = make("random")
    x, y = images()
    z = ref.normalize(model, x)
    a = ref.bim(model, z, y, 0.3, labels, accumulate=True)
    b = ref.bim(model, z, y, 0.3, labels, accumulate=False)
    assert not torch.equal(a, b)
    assert not torch.equal(attack_under_test("bim", model, z, y, 0.3, kind, labels, accumulate_gradients=False), a)


@pytest.mark.parametrize("kind", ["category", "random", "lowdim"])
def test_pgd_matches_spec3_reference(one_thread, kind):
    """torchattacks.PGD as cdu890 called it (random start, [0,1] clamp of normalised inputs, CE on the raw outputs
    with the label tensor as soft target), one image at a time, against the batched attack. The random start is
    the same noise: drawn once over the batch tensor from a generator seeded as the batched call's."""
    model, kind, labels = make(kind)
    x, y = images()
    z = ref.normalize(model, x)
    eps = 0.1
    adv = attack_under_test("pgd", model, z, y, eps, kind, labels, generator=torch.Generator().manual_seed(1))
    noise = ref.pgd_start_noise(z, eps, torch.Generator().manual_seed(1))
    expected = ref.pgd(model, z, y, eps, noise, labels)
    assert torch.equal(adv, expected)
    assert adv.min() >= 0 and adv.max() <= 1  # the torchattacks [0,1] clamp quirk, on normalised inputs
    assert not torch.equal(adv, ref.pgd(model, z, y, eps, noise.flip(0), labels))  # the noise matters
    # without random start and without the clamp: 4 steps of 2/255, each clipped to the eps ball
    free = attack_under_test("pgd", model, z, y, eps, kind, labels, random_start=False, clamp_range=None)
    assert torch.equal(free, ref.pgd(model, z, y, eps, None, labels, clamp01=False))
    assert torch.allclose((free - z).abs().amax((1, 2, 3)), torch.full((len(z),), 4 * 2 / 255), atol=1e-6)


def test_random_targets_reproduce_original_draws():
    y = torch.randint(0, C, (200,), generator=torch.Generator().manual_seed(0))
    t = random_targets(y, C)
    assert torch.all(t != y) and t.min() >= 0 and t.max() < C
    assert torch.equal(t, random_targets(y, C))  # same seed, same targets
    # The original's loop (torch.manual_seed(444), a batch-size-1 DataLoader, one draw per image, redrawn on y)
    assert t.tolist() == ref.original_targets(y, C).tolist()
    assert not torch.equal(random_targets(y, C, seed=445), t)
    assert torch.all(random_targets(torch.tensor([0, 1, 1, 0]), 2) == torch.tensor([1, 0, 0, 1]))


def test_pgd_loss_is_soft_target_cross_entropy():
    """torchattacks' CrossEntropyLoss(outputs, label tensor), per image: -sum_c t_c log softmax(o)_c over dim 1,
    averaged over the other axes."""
    labels = random_labels((64, 64))
    out = torch.randn(3, 64, 64)
    y = torch.tensor([2, 0, 9])
    ref = -(labels[y] * out.log_softmax(1)).sum(1).mean(1)
    def pgd_loss(labels=None):  # the engine's soft_ce hook for a model holding `labels` (or a plain classifier)
        return make_loss("soft_ce", SimpleNamespace() if labels is None else SimpleNamespace(labels=labels))
    assert torch.allclose(pgd_loss(labels)(out, y), ref, atol=1e-4)
    vec = random_labels((10,))
    out = torch.randn(3, 10)
    assert torch.allclose(pgd_loss(vec)(out, y), -(vec[y] * out.log_softmax(1)).sum(1), atol=1e-4)
    logits = torch.randn(3, C)
    assert torch.allclose(pgd_loss()(logits, y), F.cross_entropy(logits, y, reduction="none"))


def test_study_accuracy_counts_initially_wrong_as_failures(tmp_path):
    """SPEC 3's accuracy from an attack dump: #(initially correct AND correct after the attack) / N."""
    from advpipe.io.h5 import write_dump
    from advpipe.labels.stages import attack_rows

    label = np.array([0, 1, 2, 3])
    clean = np.array([True, True, False, False])
    pred = np.array([[0, 0], [1, 7], [2, 2], [9, 3]])  # (N, K): eps 0 unattacked, then one attack
    write_dump(tmp_path / "a.h5", {"label": label, "clean_correct": clean, "pred_eps": pred},
               {"eps": np.array([0.0, 0.1])})
    rows = attack_rows("mine", 100, "fgsm", tmp_path / "a.h5")
    assert [r["accuracy"] for r in rows] == [0.5, 0.25]  # a wrong image predicted right later still counts wrong
    assert all(r["clean_accuracy"] == 0.5 and r["n_images"] == 4 and r["eps"] == e for r, e in zip(rows, (0, 0.1)))


def test_label_model_works_with_the_shared_attack_interface(one_thread):
    from advpipe.attacks import FGSM

    model, _, _ = make("random")
    x, y = images()
    result = FGSM(eps=0.1)(model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)
