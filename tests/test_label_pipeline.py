"""The label-representations study's stages (SPEC 3): splits by level, best-epoch keeping, label-model
checkpoints, the attack stage and the batched attacks against the per-image references written from the originals
(tests/spec3_reference.py), the CIFAR ResNet and the study's config checks."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

import spec3_reference as ref
from advpipe.config import ConfigError, validate
from advpipe.data.splits import validation_level_split
from advpipe.models import build_model, load_trained, save_trained
from advpipe.models.checkpoint import build_from_spec
from advpipe.models.label_heads import HighDimHead, LabelModel, VectorHead, label_loss
from advpipe.labels import stages
from advpipe.labels.stages import data_efficiency
from advpipe.labels.study import label_attack_name, label_model_name
from advpipe.pipeline import attack as attack_stage
from advpipe.pipeline import train as train_stage
from advpipe.pipeline.specs import attack_job, model_job
from advpipe.train.validation import BestCheckpoint

# The batched SPEC 3 attacks under test: the shared engine's configurations (tests/engine_adapter.py).
from engine_adapter import attack_under_test  # noqa: E402


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- splits -----------------------------------------------------------------------------------------------

def test_validation_split_is_the_originals_shuffle():
    """First 10% of np.random.seed(s); np.random.shuffle(indices) are validation, the next level% train."""
    np.random.seed(7)
    indices = list(range(1000))
    np.random.shuffle(indices)
    train, val = validation_level_split(1000, 0.1, 20, seed=7)
    assert val.tolist() == indices[:100]
    assert train.tolist() == indices[100:300]


def test_levels_are_nested_and_disjoint_from_validation():
    val_sets, trains = [], {}
    for level in (1, 2, 4, 8, 10, 20, 100):
        trains[level], val = validation_level_split(5000, 0.1, level, seed=3)
        val_sets.append(val.tolist())
        assert len(trains[level]) == min(int(5000 * level / 100), 4500)  # cut off at the end (45k of 50k)
        assert not set(trains[level]) & set(val)
    assert all(v == val_sets[0] for v in val_sets)  # validation never depends on the level
    assert trains[10].tolist() == trains[100][:500].tolist()  # smaller levels are prefixes
    with pytest.raises(ValueError, match="level"):
        validation_level_split(100, 0.1, 0, seed=0)
    with pytest.raises(ValueError, match="non-empty"):
        validation_level_split(10, 0.1, 1, seed=0)


# --- best checkpoint ------------------------------------------------------------------------------------------

class Fixed(torch.nn.Module):
    """A 'model' whose scores and loss are set per epoch, to drive BestCheckpoint."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.correct, self.loss = 0, 0.0

    def forward(self, x):
        y = torch.arange(len(x)) % 2
        scores = torch.nn.functional.one_hot(y, 2).float()
        scores[self.correct:] = scores[self.correct:].flip(1)  # the first `correct` images right
        return scores


class FixedObjective:
    def raw(self, model, x):
        return model(x)

    def scores(self, model, out):
        return out

    def __init__(self, model):
        self.loss = lambda out, y: torch.tensor(model.loss)


def test_best_checkpoint_highest_accuracy_ties_by_lower_loss():
    model = Fixed()
    x, y = torch.zeros(10, 1), torch.arange(10) % 2
    best = BestCheckpoint(x, y, FixedObjective(model))
    history = [(5, 1.0), (8, 2.0), (8, 1.5), (8, 1.7), (7, 0.1)]  # (correct, loss) per epoch
    flags = []
    for epoch, (correct, loss) in enumerate(history, 1):
        model.correct, model.loss = correct, loss
        model.w.data.fill_(epoch)
        row = best(epoch, model)
        flags.append(row["best"])
        assert row["val_accuracy"] == correct / 10 and row["val_loss"] == pytest.approx(loss)
    assert flags == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert best.epoch == 3 and best.accuracy == 0.8 and best.val_loss == pytest.approx(1.5)
    assert best.state["w"].item() == 3.0  # a copy of that epoch's weights, not a reference


# --- label models as checkpoints --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, head", [((64, 64), HighDimHead), ((48, 48), HighDimHead), ((10,), VectorHead)])
def test_label_model_round_trips_through_model_json(tmp_path, one_thread, shape, head):
    spec = {"arch": "small_cnn", "arch_args": {"channels": [4, 8], "hidden": 16}, "in_channels": 1,
            "image_size": 8, "num_classes": 10, "classes": [str(i) for i in range(10)], "mean": [0.4], "std": [0.3],
            "label": {"name": "x", "kind": "random", "shape": list(shape)}}
    torch.manual_seed(0)
    model = build_from_spec(spec)
    assert isinstance(model, LabelModel) and isinstance(model.head, head)
    model.labels.copy_(torch.rand(10, *shape) * 80)
    model.eval()
    save_trained(tmp_path, model, spec)
    loaded = load_trained(tmp_path)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(loaded.labels, model.labels)
    assert torch.equal(loaded(x), model(x)) and torch.equal(loaded.predict_label(x), model.predict_label(x))


def test_category_spec_is_the_plain_classifier():
    spec = {"arch": "small_cnn", "in_channels": 1, "image_size": 8, "num_classes": 10, "classes": list("abcdefghij"),
            "label": {"name": "category", "kind": "category", "shape": [10]}}
    assert not isinstance(build_from_spec(spec), LabelModel)


def test_no_head_for_other_label_shapes():
    spec = {"arch": "small_cnn", "in_channels": 1, "image_size": 8, "num_classes": 10, "classes": list("abcdefghij"),
            "label": {"name": "x", "kind": "random", "shape": [32, 32]}}
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        build_from_spec(spec)


# --- CIFAR ResNet -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [20, 32, 110])
def test_cifar_resnet_parameter_count(depth):
    """bearpaw's ResNet-(6n+2) with 1x1 conv-BN shortcuts, counted from its layers by hand."""
    n = (depth - 2) // 6
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731 (no conv biases)
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for c in (16, 32, 64):
        for i in range(n):
            total += conv(cin, c, 3) + bn(c) + conv(c, c, 3) + bn(c)
            if cin != c:
                total += conv(cin, c, 1) + bn(c)
            cin = c
    total += 64 * 10 + 10
    model = build_model("cifar_resnet", in_channels=3, num_classes=10, image_size=32, depth=depth)
    assert sum(p.numel() for p in model.parameters()) == total
    assert depth != 32 or total == 466906  # 0.46M, the published ResNet-32 size plus two 1x1 shortcuts
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("cifar_resnet", in_channels=3, num_classes=10, image_size=32, depth=30)


# --- the attack stage ---------------------------------------------------------------------------------------

def study_config(tmp_path, **attack):
    config = yaml.safe_load(open("config.yaml"))
    config["results"] = str(tmp_path)
    config["device"] = "cpu"
    config["labels"]["backbone"]["train"]["epochs"] = 8
    config["labels"]["attack"] = {"n_images": 40, "eps": [0, 0.1, 0.3], **attack}
    return validate(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Eight-epoch category and composite-label (64x64, learns fastest) models of the default study, with their label files."""
    tmp_path = tmp_path_factory.mktemp("labels")
    config = study_config(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for label in ("category", "composite"):
        stages.make_label_set(label=label, kind=label, dataset=config["datasets"]["digits"], seed=config["seed"],
                              out_path=tmp_path / f"{label}.npy", log=lambda m: None)
        train_stage.run(**model_job(config, label_model_name(label, 100)), out_dir=tmp_path / label,
                        label_path=tmp_path / f"{label}.npy", device="cpu", log=lambda m: None)
    torch.set_num_threads(before)
    return tmp_path


def label_table(config, trained, label, out):
    """The study's table for one label: the shared attack stage runs each generated attack on the label's model,
    the study's table reads the dumps."""
    dumps = {}
    for a in config["labels"]["attack"]["attacks"]:
        o = out / a
        dumps[a] = o / "attack.h5"
        attack_stage.run(**attack_job(config, label_model_name(label, 100), label_attack_name(a)),
                         model_dir=trained / label, clean_h5=None, out_h5=dumps[a], out_norms_stats=o / "n.csv",
                         out_eval=o / "e.csv", out_confusion=o / "c.csv", images_dir=o / "images", device="cpu",
                         log=lambda m: None)
    return stages.attack_table({label: dumps}, 100, out / "table.csv", out / "figures")


def attack_images(config):
    from advpipe.data import load_split
    from advpipe.data.splits import subset
    from advpipe.runtime import derive_seed

    test = load_split(config["datasets"]["digits"], "test", "data", config["seed"])
    return subset(test, 40, derive_seed(config["seed"], "labels", "attack_subset"))


@pytest.mark.parametrize("label", ["category", "composite"])
def test_attack_stage_accuracies_equal_the_originals_loops(trained, one_thread, label):
    """Every accuracy of the stage (batched, 16 images a batch) equals the originals' batch-size-1 loops
    (spec3_reference: their attacks, decoding and counting, targets drawn as theirs), at eps 0 the clean accuracy."""
    from advpipe.runtime import derive_seed

    attacks = ["fgsm", "fgsm_targeted", "bim", "bim_targeted", "pgd"]
    config = study_config(trained, attacks=attacks, batch_size=16)
    table = label_table(config, trained, label, trained / f"table_{label}")
    model = load_trained(trained / label)
    test = attack_images(config)
    labels = None if label == "category" else model.labels
    z = ref.normalize(model, test.x)
    targets = ref.original_targets(test.y, 10)
    clean = ref.is_correct(model, z, test.y, labels).sum().item() / len(test.y)
    assert list(zip(table.attack, table.eps)) == [(a, e) for a in attacks for e in (0, 0.1, 0.3)]
    for row in table.itertuples():
        noise = None
        if row.attack == "pgd":  # the stage's start offsets: its seeded generator, one draw per batch of 16
            gen = torch.Generator().manual_seed(derive_seed(config["seed"], "labels", "pgd", label, float(row.eps)))
            noise = torch.cat([ref.pgd_start_noise(zb, row.eps, gen) for zb in z.split(16)])
        expected = ref.accuracy(model, z, test.y, row.eps, row.attack, labels, targets, noise)
        assert row.accuracy == expected, (row.attack, row.eps)
        assert row.clean_accuracy == clean
    assert clean > 0.6  # trained enough that the attacks have images to flip
    assert table.accuracy.min() < clean  # and they do flip some


@pytest.mark.parametrize("label", ["category", "composite"])
def test_attacks_match_spec3_reference_on_trained_models(trained, one_thread, label):
    """The batched attacks equal the per-image references bit for bit on the trained CNN classifier and the
    trained 64x64-label model (SPEC 3 settings: BIM 5 steps with the never-zeroed gradient, PGD 4 x 2/255 with
    random start and the [0,1] clamp)."""
    model = load_trained(trained / label)
    test = attack_images(study_config(trained))
    kind = "category" if label == "category" else "composite"
    labels = None if label == "category" else model.labels
    z, y = ref.normalize(model, test.x[:8]), test.y[:8]
    targets = ref.original_targets(test.y, 10)[:8]
    eps = 0.3
    for targeted in (False, True):
        cls = targets if targeted else y
        assert torch.equal(attack_under_test("fgsm", model, z, cls, eps, kind, labels, targeted=targeted),
                           ref.fgsm(model, z, cls, eps, labels, targeted=targeted))
        assert torch.equal(attack_under_test("bim", model, z, cls, eps, kind, labels, targeted=targeted),
                           ref.bim(model, z, cls, eps, labels, targeted=targeted))
    adv = attack_under_test("pgd", model, z, y, eps, kind, labels, generator=torch.Generator().manual_seed(3))
    noise = ref.pgd_start_noise(z, eps, torch.Generator().manual_seed(3))
    assert torch.equal(adv, ref.pgd(model, z, y, eps, noise, labels))
    assert not torch.equal(adv, z.clamp(0, 1))


def test_attack_stage_is_deterministic_and_pgd_runs(trained, one_thread):
    config = study_config(trained, attacks=["pgd", "fgsm"])
    a = label_table(config, trained, "composite", trained / "a")
    b = label_table(config, trained, "composite", trained / "b")
    assert (trained / "a/table.csv").read_bytes() == (trained / "b/table.csv").read_bytes()
    assert list(a.attack) == ["pgd"] * 3 + ["fgsm"] * 3 and list(a.eps) == [0, 0.1, 0.3] * 2
    assert a.equals(b)
    assert a.accuracy.iloc[0] == a.clean_accuracy.iloc[0]  # eps 0 is not attacked (the original's `continue`)
    assert a.accuracy.iloc[2] < a.clean_accuracy.iloc[0]


def test_trained_label_model_records_split_and_best_epoch(trained):
    table = data_efficiency([trained / "category", trained / "composite"], trained / "eff.csv", trained / "eff")
    assert list(table.label) == ["category", "composite"]
    assert (table.train_images == 1131).all()  # 1257 digits training images - 126 validation
    assert table.best_epoch.between(1, 8).all() and table.val_accuracy.between(0, 1).all()
    log = __import__("pandas").read_csv(trained / "composite" / "train_log.csv")
    assert list(log.columns[-3:]) == ["val_accuracy", "val_loss", "best"]
    best = table.set_index("label").loc["composite"]
    assert log.val_accuracy.max() == pytest.approx(best.val_accuracy) and (trained / "eff.pdf").is_file()
    assert log.best.iloc[int(best.best_epoch) - 1] == 1 and log.val_accuracy.iloc[-1] <= best.val_accuracy


def test_saved_weights_are_the_best_epochs(trained):
    """model.pt is the best epoch's state: its validation accuracy recomputed from the file equals the recorded
    one, which is the best of the log."""
    from advpipe.data import load_split
    from advpipe.data.splits import take

    config = study_config(trained)
    full = load_split(config["datasets"]["digits"], "train", "data", config["seed"])
    train_pos, val_pos = validation_level_split(len(full), 0.1, 100, config["seed"])
    val = take(full, val_pos)
    for label in ("category", "composite"):
        model = load_trained(trained / label)
        spec = __import__("json").loads((trained / label / "model.json").read_text())
        with torch.no_grad():
            acc = (model(val.x).argmax(1) == val.y).float().mean().item()
        assert acc == pytest.approx(spec["metrics"]["val_accuracy"])


# --- config ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(kinds=["category", "rainbow"]), "labels.kinds.1': unknown label kind 'rainbow'"),
    (lambda s: s.update(kinds=["normal_dim=x"]), "labels.kinds.0'"),
    (lambda s: s["attack"].update(level=50), "labels.attack.level': 50"),
    (lambda s: s.update(levels=[0]), "labels.levels.0"),
    (lambda s: s.update(levels=[120]), "labels.levels.0"),
    (lambda s: s["backbone"].update(arch="vgg99"), "labels.backbone.arch'"),
    (lambda s: s["backbone"]["train"].update(objective={"adversarial_training": True}),
     "labels.backbone.train.objective"),
    (lambda s: s.update(label_files={"random": "x.npy"}), "labels.label_files.random"),
    (lambda s: s["attack"].update(attacks=["cw"]), "labels.attack.attacks.0"),
    (lambda s: s.pop("backbone"), "labels.backbone"),
    (lambda s: s.update(levels=[100, 12.3456789]), "labels.levels.1': 12.3456789 has more digits"),
])
def test_bad_label_study_config_is_refused(change, message):
    config = yaml.safe_load(open("config.yaml"))
    change(config["labels"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        validate(copy.deepcopy(config))
