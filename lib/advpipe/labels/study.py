"""How the label-representations study names its labels and levels in config keys and file paths (no torch:
the Snakefile imports this)."""
from __future__ import annotations

from typing import Any, Mapping


def label_kinds(study: Mapping[str, Any]) -> dict[str, str]:
    """Label name (used in file paths) -> kind string for make_labels: each of `kinds` is its own name,
    each `label_files` entry is `file=<path>` under its key (bert, glove, ...)."""
    kinds = {kind: kind for kind in study["kinds"]}
    kinds.update({name: f"file={path}" for name, path in study["label_files"].items()})
    return kinds


def format_level(level: float) -> str:
    """A level as it appears in paths: 100, 20, 2.5."""
    return f"{float(level):g}"


# The originals' targets: torch.manual_seed(444), one draw taken by the test loader, then one randint per image.
SPEC3_TARGETS = {"kind": "targeted", "targets": "random", "seed": 444, "skip": 1}
SPEC3_ATTACKS = ("fgsm", "fgsm_targeted", "bim", "bim_targeted", "pgd")
PREFIX = "labels_"


def engine_config(name: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """SPEC 3 attack `name` as a configuration of the shared attack engine, over the study's eps grid in the
    normalised space: FGSM clamps to each image's range, BIM does not clamp and (by default) steps along the
    never-zeroed gradient sum, PGD is torchattacks' (soft-target CE, [0,1] clamp of normalised inputs)."""
    common: dict[str, Any] = {"eps": [float(e) for e in cfg["eps"]], "space": "normalized", "quantize": False}
    if name.endswith("_targeted"):
        common["criterion"] = dict(SPEC3_TARGETS)
    base = name.removesuffix("_targeted")
    if base == "fgsm":
        return {"method": "fgsm", "loss": "model", "clamp": "per_image", **common}
    if base == "bim":
        return {"method": "bim", "loss": "model", "clamp": "none", "steps": cfg["bim_steps"], "step_size": None,
                "accumulate_gradients": cfg["accumulate_gradients"], **common}
    if name == "pgd":
        return {"method": "pgd", "loss": "soft_ce", "clamp": [0.0, 1.0] if cfg["pgd_clamp"] else "none",
                "steps": cfg["pgd_steps"], "step_size": cfg["pgd_alpha"], **common}
    raise KeyError(f"unknown label attack {name!r}; known: {list(SPEC3_ATTACKS)}")


def slug(text: str) -> str:
    """A label or level as it may appear in a model name: '=' -> '-', '.' -> 'p' (normal_dim=10 -> normal_dim-10)."""
    return text.replace("=", "-").replace(".", "p")


def label_model_name(label: str, level: float) -> str:
    """The `models:` entry of the (label, level) model: labels_<label>_<level>, e.g. labels_category_100."""
    return f"{PREFIX}{slug(label)}_{slug(format_level(level))}"


def label_attack_name(attack: str) -> str:
    """The `attacks:` entry of a SPEC 3 attack: labels_fgsm, labels_bim_targeted, ..."""
    return f"{PREFIX}{attack}"


def attack_level(study: Mapping[str, Any]) -> float:
    level = study["attack"].get("level")
    return max(study["levels"]) if level is None else level


def expand(config: dict[str, Any]) -> dict[str, Any]:
    """Add the label study's models and attacks to `models:` and `attacks:` (one footing: the shared train and
    attack stages build them). Each (label, level) model is the backbone with a `label:` key and the validation
    split / level of its recipe; it keeps the study's random streams, so it trains and is attacked exactly as the
    study's own stages did. ValueError when a generated name is already taken."""
    study = config["labels"]
    if not study["enabled"] or not label_kinds(study):
        return config
    backbone = study["backbone"]
    for label, kind in label_kinds(study).items():
        for level in study["levels"]:
            name = label_model_name(label, level)
            model = {
                **backbone,
                "train": {**backbone["train"], "validation_fraction": study["validation_fraction"],
                          "level": float(level)},
                "label": {"name": label, "kind": kind},
                "streams": {"train": f"labels/train/{label}/{format_level(level)}",
                            "attack": f"labels/pgd/{label}"},
            }
            _add(config, "models", name, model)
    cfg = study["attack"]
    for attack in cfg["attacks"]:
        entry = {**engine_config(attack, cfg), "batch_size": cfg["batch_size"], "images": "all"}
        if cfg.get("n_images") is not None:  # the same images for every label
            entry["subset"] = {"n": cfg["n_images"], "stream": "labels/attack_subset"}
        _add(config, "attacks", label_attack_name(attack), entry)
    return config


def _add(config: dict[str, Any], section: str, name: str, value: dict[str, Any]) -> None:
    """config[section][name] = value; an entry already there must be this one (a config expanded and validated
    before: the schema may have filled in defaults)."""
    existing = config[section].get(name)
    if existing is not None and any(existing.get(k) != v for k, v in value.items()):
        raise ValueError(f"config key '{section}.{name}': the label study generates this name; rename your entry")
    config[section][name] = {**(existing or {}), **value}
