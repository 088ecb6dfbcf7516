"""Config validation: defaults filled in from the schema, and each kind of bad config names its key."""
import copy
from pathlib import Path

import pytest
import yaml

from advpipe.config import ConfigError, load, validate

ROOT = Path(__file__).resolve().parents[1]


def base():
    return {
        "datasets": {"digits": {"source": "digits"}},
        "models": {"cnn": {"dataset": "digits", "arch": "small_cnn"}},
        "attacks": {"fgsm": {"method": "fgsm"}, "cw": {"method": "cw"}},
        "vrapi": {"models": ["cnn"], "attacks": ["fgsm", "cw"], "trials": 2},
    }


def test_defaults_filled_from_schema():
    cfg = validate(base())
    assert cfg["seed"] == 0 and cfg["results"] == "results"
    assert cfg["attacks"]["fgsm"] == {"method": "fgsm", "batch_size": 1000, "norm": "linf", "eps": "3/255",
                                      "space": "pixels", "loss": "ce", "clamp": "box", "images": "correct", "grid_batch": 1024}
    assert cfg["attacks"]["cw"]["max_iterations"] == 1000 and cfg["attacks"]["cw"]["initial_const"] == 0.01
    assert cfg["models"]["cnn"]["train"]["augment"] == {"crop_padding": 4, "pad_mode": "zeros", "hflip": True}
    objective = cfg["models"]["cnn"]["train"]["objective"]  # SPEC 2's constants are the defaults
    assert objective["adv_eps"] == 0.01 and objective["l2min_eps"] == 0.1 and objective["adapt_psi_0"] == 220
    assert cfg["ara"] == {"n_images": 1000, "subset_seed": 1776, "eps": 20, "steps": 450, "momentum": 0.9,
                          "bins": 1000, "batch_size": 128, "ensure_proper_minimization": True}
    assert cfg["vrapi"]["projections"][0] == "pca" and len(cfg["vrapi"]["projections"]) == 7


def test_input_not_mutated():
    raw = base()
    before = copy.deepcopy(raw)
    validate(raw)
    assert raw == before


@pytest.mark.parametrize("shipped", ["config.yaml", "config/paper/vrapi.yaml", "config/paper/explanations.yaml",
                                     "config/paper/explanations_prebuilt.yaml", "config/paper/labels.yaml"])
def test_shipped_configs_are_valid(shipped):
    load(ROOT / shipped)


def _set(cfg, path, value):
    *parents, last = path
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


BAD = [
    # (what, where, value, key path named in the message)
    ("unknown top-level key", ["sed"], 1, "sed"),
    ("unknown nested key", ["models", "cnn", "epochs"], 3, "models.cnn.epochs"),
    ("wrong type", ["vrapi", "trials"], "many", "vrapi.trials"),
    ("negative eps", ["attacks", "fgsm", "eps"], -0.1, "attacks.fgsm.eps"),
    ("malformed eps fraction", ["attacks", "fgsm", "eps"], "3/0", "attacks.fgsm.eps"),
    ("unknown attack method", ["attacks", "fgsm", "method"], "deepfool", "attacks.fgsm.method"),
    ("parameter of another attack", ["attacks", "fgsm", "steps"], 10, "attacks.fgsm.steps"),
    ("wrong threat model norm", ["attacks", "fgsm", "norm"], "l1", "attacks.fgsm.norm"),
    ("unknown projection", ["vrapi", "projections"], ["pca", "isomap"], "vrapi.projections.1"),
    ("unknown architecture", ["models", "cnn", "arch"], "vgg99", "models.cnn.arch"),
    ("model with a missing dataset", ["models", "cnn", "dataset"], "mnist", "models.cnn.dataset"),
    ("study naming a missing model", ["vrapi", "models"], ["cnn", "resnet"], "vrapi.models.1"),
    ("study naming a missing attack", ["vrapi", "attacks"], ["pgd"], "vrapi.attacks.0"),
    ("plot trial beyond trials", ["vrapi", "plot"], {"trial": 5}, "vrapi.plot.trial"),
    ("unknown dataset source", ["datasets", "digits", "source"], "imagenet", "datasets.digits.source"),
    ("name unusable in paths", ["models", "cnn/x"], {"dataset": "digits", "arch": "small_cnn"}, "models.cnn/x"),
    ("zero trials", ["vrapi", "trials"], 0, "vrapi.trials"),
    ("imagefolder without path", ["datasets", "digits"], {"source": "imagefolder"}, "datasets.digits.path"),
    ("missing required section", ["datasets"], KeyError, "datasets"),
    ("unknown architecture argument", ["models", "cnn", "arch_args"], {"widht": 3}, "models.cnn.arch_args.widht"),
    ("unknown projection option", ["vrapi", "projection_options"], {"pca": {"foo": 1}},
     "vrapi.projection_options.pca.foo"),
    ("projection options not a mapping", ["vrapi", "projection_options"], {"pca": 5}, "vrapi.projection_options.pca"),
    ("unknown BIM option", ["attacks", "fgsm"], {"method": "bim", "warm_start": True}, "attacks.fgsm.warm_start"),
    ("explanations naming a missing model", ["explanations", "models"], ["resnet44"], "explanations.models.0"),
    ("l2_min without adversarial training", ["models", "cnn", "train", "objective"], {"l2_min": True},
     "models.cnn.train.objective.l2_min"),
    ("unknown objective key", ["models", "cnn", "train", "objective"], {"psi": 3}, "models.cnn.train.objective.psi"),
    ("both arch and checkpoint", ["models", "cnn", "checkpoint"], "published/net", "models.cnn"),
    ("unknown search mode", ["attacks", "fgsm"], {"method": "search", "mode": "fast"}, "attacks.fgsm.mode"),
    ("unknown padding mode", ["models", "cnn", "train", "augment"], {"pad_mode": "reflect"},
     "models.cnn.train.augment.pad_mode"),
    ("zero ARA steps", ["ara", "steps"], 0, "ara.steps"),
]


@pytest.mark.parametrize("what,path,value,named", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_key(what, path, value, named):
    cfg = base()
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert f"'{named}'" in str(info.value) or (value is KeyError and named in str(info.value))


def test_load_names_the_file(tmp_path):
    bad = base()
    bad["vrapi"]["trials"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="bad.yaml"):
        load(path)


def test_cli_check_config(tmp_path, capsys):
    from advpipe.cli import main

    assert main(["check-config", str(ROOT / "config.yaml")]) == 0
    bad = base()
    bad["models"]["cnn"]["dataset"] = "cifar10"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["check-config", str(path)]) == 2
    assert "models.cnn.dataset" in capsys.readouterr().err


def test_conda_env_pins_the_same_versions_as_pyproject():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/advpipe.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(deps)


def test_validation_cache_hits_misses_and_never_keeps_an_error(tmp_path, monkeypatch):
    """validate_cached: the same config is answered from the cache file without validating again (the Snakefile's
    no-op rebuild); a changed config, a corrupt cache file or another schema validates again; an invalid config
    raises every time and is not stored."""
    import advpipe.config as cfgmod

    raw = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    schema, cache = ROOT / "config/schema.yaml", tmp_path / "cache/validated.json"
    calls = []
    real = cfgmod.validate
    monkeypatch.setattr(cfgmod, "validate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = cfgmod.validate_cached(raw, schema, cache)
    assert first == real(raw) and len(calls) == 1 and cache.is_file()
    assert cfgmod.validate_cached(copy.deepcopy(raw), schema, cache) == first and len(calls) == 1  # a hit
    changed = copy.deepcopy(raw)
    changed["vrapi"]["trials"] = 3
    assert cfgmod.validate_cached(changed, schema, cache)["vrapi"]["trials"] == 3 and len(calls) == 2
    cache.write_text("{not json")
    assert cfgmod.validate_cached(changed, schema, cache)["vrapi"]["trials"] == 3 and len(calls) == 3
    other_schema = tmp_path / "schema.yaml"
    other_schema.write_text(schema.read_text() + "\n# another schema\n")
    cfgmod.validate_cached(changed, other_schema, cache)
    assert len(calls) == 4
    bad = copy.deepcopy(raw)
    bad["models"]["cnn"]["arch"] = "no_such_arch"
    for _ in range(2):
        with pytest.raises(ConfigError, match="models.cnn.arch"):
            cfgmod.validate_cached(bad, other_schema, cache)
    assert len(calls) == 6
