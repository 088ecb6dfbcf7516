"""Models: representation from the same pass, normalisation inside, safe trained-model folders."""
import json
import os
import pickle

import pytest
import torch

from advpipe.models import ARCHS, build_model, load_trained, save_trained
from advpipe.models.checkpoint import CheckpointError


def spec(arch="small_cnn", **kw):
    return {"arch": arch, "arch_args": {}, "in_channels": 1, "image_size": 8, "num_classes": 10,
            "classes": [str(i) for i in range(10)], "mean": None, "std": None, **kw}


@pytest.mark.parametrize("arch,channels,size,dim", [("small_cnn", 1, 8, 128), ("resnet18", 3, 32, 512)])
def test_forward_features_is_one_pass(arch, channels, size, dim):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=channels, num_classes=10, image_size=size).eval()
    x = torch.rand(4, channels, size, size)
    logits, feats = model.forward_features(x)
    assert feats.shape == (4, dim) and logits.shape == (4, 10)
    # The representation is what the final linear layer sees.
    torch.testing.assert_close(model.head(feats), logits)
    torch.testing.assert_close(model(x), logits)


def test_normalisation_inside_model():
    torch.manual_seed(0)
    plain = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8).eval()
    normed = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.25]).eval()
    normed.load_state_dict(plain.state_dict() | {"mean": normed.mean, "std": normed.std})
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(normed(x), plain((x - 0.5) / 0.25))


def test_resnet18_matches_kuangliu_size():
    model = build_model("resnet18", in_channels=3, num_classes=10, image_size=32)
    # kuangliu's ResNet18 for CIFAR-10 has 11,173,962 parameters.
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8).eval()
    save_trained(tmp_path, model, spec())
    loaded = load_trained(tmp_path)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not loaded.training
    first = (tmp_path / "model.pt").read_bytes()
    save_trained(tmp_path, model, spec())
    assert (tmp_path / "model.pt").read_bytes() == first  # same weights, same bytes
    assert set(ARCHS) >= {"small_cnn", "resnet18"}


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(spec()))
    with open(tmp_path / "model.pt", "wb") as f:
        pickle.dump({"weight": _Exploit()}, f)
    torch.save({"w": _Exploit()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt"):
        load_trained(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_missing_files_named(tmp_path):
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8)
    save_trained(tmp_path, model, spec())
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt"):
        load_trained(tmp_path)
    (tmp_path / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt: file does not exist"):
        load_trained(tmp_path)
    with pytest.raises(CheckpointError, match="model.json"):
        load_trained(tmp_path / "nowhere")


def test_architecture_mismatch_named(tmp_path):
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8)
    save_trained(tmp_path, model, spec(num_classes=3))
    with pytest.raises(CheckpointError, match="does not match"):
        load_trained(tmp_path)
