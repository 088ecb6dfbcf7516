"""Models of the gradient-direction study (SPEC 5): the Sphere MLP, one-logit binary models, vector inputs and
torchvision's ResNet-18."""
import json
import re

import pytest
import torch
import torchvision
from torch import nn

from advpipe.models import build_model, load_trained, save_trained
from advpipe.models.checkpoint import CheckpointError, build_from_spec, check_fits_data
from advpipe.models.input_size import check_input_size
from advpipe.models.layers import activations, find_layer


def sphere_spec(**kw):
    return {"arch": "mlp", "arch_args": {}, "in_channels": 1, "image_size": None, "input_shape": [500],
            "num_classes": 2, "classes": ["r1.0", "r1.3"], "one_logit": True, "mean": None, "std": None, **kw}


def test_mlp_layers_follow_the_original():
    model = build_from_spec(sphere_spec())
    kinds = [type(m) for m in model.body] + [type(model.head)]
    # ReLU before BN, as ricbl direct_method/classifier.py; Flatten is a no-op on vectors.
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    dims = [(m.in_features, m.out_features) for m in (model.body[1], model.body[4], model.head)]
    assert dims == [(500, 1000), (1000, 1000), (1000, 1)]
    logits, feats = model.eval().forward_features(torch.randn(3, 500))
    assert feats.shape == (3, 1000) and logits.shape == (3, 2)
    assert find_layer(model, "penultimate") is model.body
    assert activations(model, "penultimate", torch.randn(3, 500))[1].shape == (3, 1000)


def test_mlp_options():
    model = build_model("mlp", in_channels=1, num_classes=3, image_size=8, hidden=[16], batchnorm=False)
    assert [type(m) for m in model.body] == [nn.Flatten, nn.Linear, nn.ReLU] and model.body[1].in_features == 64
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_one_logit_scores_are_minus_d_d():
    torch.manual_seed(0)
    model = build_from_spec(sphere_spec()).eval()
    x = torch.randn(8, 500)
    d = model.forward_normalized(model.normalize(x))
    assert d.shape == (8, 1)
    scores = model(x)
    assert scores.shape == (8, 2)
    torch.testing.assert_close(scores, torch.cat([-d, d], 1))
    torch.testing.assert_close(model.decode(d), scores)
    assert torch.equal(scores.argmax(1), (d[:, 0] > 0).long())
    assert model.one_logit and not build_from_spec(sphere_spec(one_logit=False)).one_logit


def test_one_logit_needs_two_classes():
    with pytest.raises(ValueError, match="one_logit"):
        build_from_spec(sphere_spec(num_classes=3, classes=["a", "b", "c"]))


def test_normalize_broadcasts_for_vectors():
    model = build_model("mlp", in_channels=1, num_classes=2, image_size=None, input_shape=[5], mean=[0.5], std=[0.5])
    assert model.mean.shape == (1, 1, 1, 1)  # the saved buffer shape is unchanged
    x = torch.rand(4, 5)
    torch.testing.assert_close(model.normalize(x), 2 * x - 1)
    torch.testing.assert_close(model.denormalize(model.normalize(x)), x)


def test_one_logit_round_trip_on_vectors(tmp_path):
    torch.manual_seed(1)
    model = build_from_spec(sphere_spec()).eval()
    save_trained(tmp_path, model, sphere_spec())
    loaded = load_trained(tmp_path)
    x = torch.randn(5, 500)
    assert loaded.one_logit
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.forward_normalized(x), model.forward_normalized(x), rtol=0, atol=0)
    check_fits_data(tmp_path, (500,), ["r1.0", "r1.3"], "spheres")
    with pytest.raises(CheckpointError, match=r"shape \(500,\) \(model.json\).*shape \(400,\)"):
        check_fits_data(tmp_path, (400,), ["r1.0", "r1.3"], "spheres")
    check_input_size(sphere_spec(), "spheres")  # vectors: nothing to refuse


@pytest.mark.parametrize("one_logit,phrase", [
    (False, r"num_classes 2 in model.json vs 1 outputs.*one_logit: true"),
    (True, r"one_logit true in model.json \(1 output for its 2 classes\) vs 2 outputs"),
])
def test_wrong_spec_is_named(tmp_path, one_logit, phrase):
    model = build_from_spec(sphere_spec(one_logit=not one_logit))
    save_trained(tmp_path, model, sphere_spec(one_logit=not one_logit))
    (tmp_path / "model.json").write_text(json.dumps(sphere_spec(one_logit=one_logit)))
    with pytest.raises(CheckpointError) as err:
        load_trained(tmp_path)
    text = str(err.value)
    assert f"{tmp_path / 'model.json'} and {tmp_path / 'model.pt'} disagree" in text
    assert re.search(phrase, text), text


def tv(**kw):
    args = {"in_channels": 3, "num_classes": 10, "image_size": 32, **kw}
    return build_model("tv_resnet18", **args)


def test_tv_resnet18_cifar_stem_and_grey():
    torch.manual_seed(0)
    model = tv(cifar_stem=True).eval()
    assert model.body.conv1.kernel_size == (3, 3) and model.body.conv1.stride == (1, 1)
    assert isinstance(model.body.maxpool, nn.Identity)
    logits, feats = model.forward_features(torch.rand(1, 3, 32, 32))
    assert logits.shape == (1, 10) and feats.shape == (1, 512)
    grey = tv(in_channels=1, cifar_stem=True, imagenet_normalize="indirect").eval()
    assert grey(torch.rand(1, 1, 32, 32)).shape == (1, 10)
    assert "from scratch" in grey.init_note
    one = tv(num_classes=2, one_logit=True).eval()
    assert one.head.out_features == 1 and one(torch.rand(2, 3, 32, 32)).shape == (2, 2)
    assert activations(one, "layer4", torch.rand(1, 3, 32, 32))[1].shape == (1, 512 * 1 * 1)


@pytest.mark.parametrize("mode,mapped", [("direct", lambda z: z), ("indirect", lambda z: z / 2 + 0.5)])
def test_imagenet_normalisation_of_the_original(mode, mapped):
    model = tv(in_channels=1, imagenet_normalize=mode)
    z = torch.rand(2, 1, 4, 4) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.body.input(z), (mapped(z).expand(-1, 3, -1, -1) - mean) / std)
    assert tv(imagenet_normalize=True).body.input.mode == "direct"
    with pytest.raises(ValueError, match="imagenet_normalize"):
        tv(imagenet_normalize="yes")


def test_frozen_bn_keeps_running_stats():
    torch.manual_seed(0)
    model = tv(frozen_bn=True).train()
    assert model.training and not model.body.bn1.training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model(torch.rand(4, 3, 32, 32)).sum().backward()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.body.bn1.weight.grad is not None  # the affine weights still learn
    mlp = build_model("mlp", in_channels=1, num_classes=2, image_size=None, input_shape=[5], frozen_bn=True)
    assert not mlp.train().body[3].training


def test_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(1)
    fresh_fc = tv(num_classes=2).head.weight.clone()
    torch.manual_seed(1)
    model = tv(num_classes=2, weights=str(path))
    torch.testing.assert_close(model.body.conv1.weight, reference.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.body.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    torch.testing.assert_close(model.head.weight, fresh_fc, rtol=0, atol=0)  # fc not loaded
    assert str(path) in model.init_note


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=f"{missing}: file does not exist"):
        tv(weights=str(missing))
    (tmp_path / "other.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="other.pth: empty file"):
        tv(weights=str(tmp_path / "other.pth"))


def test_other_layer_shapes_of_a_vector_model_name_input_shape(tmp_path):
    save_trained(tmp_path, build_from_spec(sphere_spec(arch_args={"hidden": [8, 8]})), sphere_spec())
    (tmp_path / "model.json").write_text(json.dumps(sphere_spec(arch_args={"hidden": [8, 4]})))
    with pytest.raises(CheckpointError, match=r"input_shape \[500\] in model.json give other layer shapes"):
        load_trained(tmp_path)
