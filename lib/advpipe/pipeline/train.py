"""Stage train: build a model from its config entry, train it, save model.pt + model.json + train_log.csv."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from advpipe.config import ConfigError
from advpipe.data import Split, dataset_info, epoch_split, has_validation_split, load_split
from advpipe.data.splits import take, validation_level_split
from advpipe.io.tables import write_csv
from advpipe.models import save_trained
from advpipe.labels import load_label_file
from advpipe.models.checkpoint import build_from_spec
from advpipe.models.input_size import check_input_size
from advpipe.pipeline.specs import train_stream
from advpipe.sources import declared_range
from advpipe.train.validation import BestByEps50, BestCheckpoint, LabelObjective, evaluate
from advpipe.runtime import derive_seed, seed_everything, select_device
from advpipe.train import build_objective, evaluate_accuracy, resume, train_classifier


def pixel_normalization(norm: Any, channels: int, value_range: tuple[float, float],
                        info_mean: Sequence[float], info_std: Sequence[float]) -> tuple[list | None, list | None]:
    """(mean, std) on pixels in [0, 1] of a model's `normalize` entry, for a dataset whose natural values are
    lo + (hi - lo) * pixels (SPEC 5: [-1, 1]). `none` and explicit values mean the natural values (the model of
    a [-1, 1] dataset sees [-1, 1]); `dataset` statistics are the pixels' own, the same whatever the range."""
    lo, hi = value_range
    width = hi - lo
    if norm == "dataset":
        return list(info_mean), list(info_std)
    if isinstance(norm, Mapping):  # given explicitly, e.g. SPEC 3's CIFAR std (0.2023, 0.1994, 0.2010)
        mean, std = [float(m) for m in norm["mean"]], [float(v) for v in norm["std"]]
    elif (lo, hi) == (0.0, 1.0):
        return None, None
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    # (lo + w x - m) / s = (x - (m - lo) / w) / (s / w)
    return [(m - lo) / width for m in mean], [v / width for v in std]


def model_spec(model_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], data_root: str, seed: int) -> dict:
    """What model.json records: enough to rebuild the network without the config."""
    info = dataset_info(dataset_cfg, data_root, seed)
    value_range = declared_range(dataset_cfg)
    mean, std = pixel_normalization(model_cfg["normalize"], info.in_channels, value_range, info.mean, info.std)
    spec = {
        "arch": model_cfg["arch"], "arch_args": dict(model_cfg["arch_args"]),
        "in_channels": info.in_channels, "image_size": info.image_size, "num_classes": info.num_classes,
        "classes": list(info.classes), "mean": mean, "std": std,
        "dataset": dict(dataset_cfg), "train": dict(model_cfg["train"]),
        "input_shape": list(info.shape),
    }
    if value_range != (0.0, 1.0):
        spec["range"] = list(value_range)
    if model_cfg.get("one_logit"):
        if info.num_classes != 2:
            raise ConfigError(f"config key 'models.<model>.one_logit': dataset has {info.num_classes} classes; a "
                              "one-logit model tells two classes apart")
        spec["one_logit"] = True
    return spec


def with_estimates(split: Split, dx_path: str | os.PathLike | None) -> Split:
    """The split with an estimator's directions as extras: `dx` (one per image, the direct method) or `dx_all`
    (one per (image, class), the indirect one), joined on the samples' index."""
    if dx_path is None:
        return split
    from advpipe.pipeline.alignment import read_dx

    dx = read_dx(dx_path, split.index)
    key = "dx_all" if dx.dim() == split.x.dim() + 1 else "dx"
    return Split(x=split.x, y=split.y, index=split.index, classes=split.classes, extras={**split.extras, key: dx})


def training_attack(role: str, attacks: Mapping[str, Any] | None, model_name: str, seed: int):
    """The engine attack a training runs in `role` (attack_training, select_attack), or None."""
    cfg = (attacks or {}).get(role)
    if cfg is None:
        return None
    from advpipe.pipeline.attack import configured_attack

    return configured_attack(cfg["name"], cfg, derive_seed(seed, "train", model_name, role))


def validation_split(dataset: Mapping[str, Any], full: Split, recipe: Mapping[str, Any], model_name: str,
                     data_root: str, seed: int, selects: bool) -> tuple[Split, Split | None]:
    """(training, validation) splits: train.validation_fraction's held-out share (SPEC 3); else, when the epoch is
    chosen by eps50 (SPEC 5), the dataset's own validation split; else no validation."""
    if recipe["validation_fraction"] is not None:
        train_pos, val_pos = validation_level_split(len(full), recipe["validation_fraction"], recipe["level"], seed)
        return take(full, train_pos), take(full, val_pos)
    if recipe["level"] != 100:
        raise ConfigError(f"config key 'models.{model_name}.train.level': a level below 100 needs "
                          "train.validation_fraction (the held-out share comes first, SPEC 3)")
    if selects:
        if not has_validation_split(dataset):
            raise ConfigError(f"config key 'models.{model_name}.train.select_attack': the dataset has no validation "
                              "split of its own; expected train.validation_fraction")
        return full, load_split(dataset, "validation", data_root, seed)
    return full, None


def dataset_file(dataset_cfg: Mapping[str, Any], data_root: str) -> str:
    """Where a dataset's images come from, for messages: its file or folder, else its source under data_root."""
    if "path" in dataset_cfg:
        path = Path(dataset_cfg["path"])
        return str(path if path.is_absolute() else Path(data_root) / path)
    return f"{dataset_cfg.get('source')}" + ("" if dataset_cfg.get("source") == "digits" else f" under {data_root}")


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
        out_dir: str | os.PathLike, label_path: str | os.PathLike | None = None, data_root: str = "data",
        device: str = "auto", state_path: str | os.PathLike | None = None,
        train_attacks: Mapping[str, Any] | None = None, dx_estimator: str | None = None,
        dx_path: str | os.PathLike | None = None, log=print) -> dict:
    """Train model `model_name` (its resolved entry and dataset: advpipe.pipeline.specs.model_job) into out_dir;
    return model.json's content.

    A model with a `label:` key regresses the label set at `label_path` (SPEC 3; loss SmoothL1, or CE for
    category). `train.validation_fraction` holds out a validation split first and keeps the best epoch (highest
    validation accuracy, ties to the lower loss); `train.level` trains on that percent of the rest (SPEC 3's
    data efficiency). With `state_path` (outside the outputs) the training state is saved every epoch and a
    rerun of a killed job resumes from it.

    SPEC 5: data drawn fresh every epoch (spheres) train on epoch e's sample; `train_attacks` (advpipe.pipeline.
    specs.train_job) are the attack of `attack_training` and the `select_attack` whose validation eps50 picks the
    epoch; the cosine penalty reads the split's ground-truth dx, or the estimator's dump at `dx_path`.
    """
    train_seed = derive_seed(seed, train_stream(model_name, model))
    seed_everything(train_seed)
    device = select_device(device)
    recipe = model["train"]
    spec = model_spec(model, dataset, data_root, seed)
    labels, kind = None, "category"
    if "label" in model:
        kind = model["label"]["kind"]
        labels = torch.from_numpy(np.asarray(load_label_file(label_path, spec["num_classes"]), dtype=np.float32))
        spec["label"] = {"name": model["label"]["name"], "kind": kind, "shape": list(labels.shape[1:])}
    # Images too small for the network fail here, naming the dataset, rather than deep inside its first forward
    # pass (one zero image through a copy built aside, which leaves the global RNG as it was).
    check_input_size(spec, model["dataset"], where=dataset_file(dataset, data_root))
    net = build_from_spec(spec)  # first draw from the seeded global RNG: the initial weights
    if labels is not None and kind != "category":
        net.labels.copy_(labels)
    net = net.to(device)
    if getattr(net, "init_note", None):
        log(f"{model_name}: {net.init_note}")  # e.g. no local ImageNet weights: trained from scratch
    full = with_estimates(load_split(dataset, "train", data_root, seed), dx_path)
    test = load_split(dataset, "test", data_root, seed)
    selector = training_attack("select_attack", train_attacks, model_name, seed)
    train, val = validation_split(dataset, full, recipe, model_name, data_root, seed, selector is not None)
    if recipe["validation_fraction"] is not None:
        spec["level"] = float(recipe["level"])
        spec["split"] = {"train_images": len(train), "validation_images": len(val), "split_seed": seed}
    aug = recipe["augment"]
    if train.x.dim() != 4 and (aug["crop_padding"] > 0 or aug["hflip"]):
        raise ConfigError(f"config key 'models.{model_name}.train.augment': crops and flips are for images; "
                          f"{model['dataset']!r} holds vectors of shape {tuple(train.x.shape[1:])}; expected "
                          "{crop_padding: 0, hflip: false}")
    fresh = epoch_split(dataset, 1, data_root, seed) is not None
    log(f"training {model_name}: {model['arch']} on {len(train)} {'fresh samples per epoch' if fresh else 'images'} "
        f"of {model['dataset']}" + (f", {len(val)} held out for validation" if val is not None else ""))
    if len(train) % recipe["batch_size"] == 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                                      for m in net.modules()):
        raise ConfigError(f"config key 'models.{model_name}.train.batch_size': {len(train)} training images leave a "
                          f"last batch of one image at batch_size {recipe['batch_size']}, on which BatchNorm cannot "
                          "train; change the batch size (or the level)")
    # The objective draws its own random numbers (random classes, half-and-half masks): its own seed.
    objective_seed = derive_seed(seed, "objective", model_name)
    if labels is not None:
        objective = LabelObjective(kind, labels.to(device))
    else:
        objective_cfg = dict(recipe["objective"])
        if objective_cfg.get("attack_training"):  # the name, resolved into the attack's parameters
            from advpipe.pipeline.attack import engine_params

            objective_cfg["attack_training"] = engine_params(train_attacks["attack_training"])
        try:
            objective = build_objective(objective_cfg, num_classes=spec["num_classes"], seed=objective_seed)
        except ValueError as err:
            raise ConfigError(f"config key 'models.{model_name}.train.objective': {err}") from err
    validation = LabelObjective(kind, None if labels is None else labels.to(device))
    if selector is not None:
        best = BestByEps50(val.x, val.y, selector, batch_size=recipe["batch_size"] * 20,
                           seed=derive_seed(seed, "validation", model_name),
                           min_accuracy=recipe.get("select_min_accuracy", 0.0))
    else:
        best = BestCheckpoint(val.x, val.y, validation) if val is not None else None
    uses_extras = getattr(objective, "uses_extras", False)
    epoch_data = None
    if fresh:
        def epoch_data(epoch: int):
            sample = epoch_split(dataset, epoch, data_root, seed)
            return sample.x, sample.y, (sample.extras if uses_extras else None)
    # The label tensor is in the fingerprint: a resumed state overwrites the model's label buffer.
    digest = resume.tensor_digest(labels) if labels is not None else None
    rows = train_classifier(net, train.x, train.y, recipe, train_seed, objective=objective, log=log,
                            on_epoch_end=best, state_path=state_path, epoch_data=epoch_data,
                            extras=train.extras if uses_extras and not fresh else None,
                            fingerprint=resume.fingerprint("train", spec, objective_seed, digest))
    if isinstance(best, BestByEps50):
        if best.state is None:
            raise ConfigError(f"config key 'models.{model_name}.train.select_min_accuracy': no epoch reached validation "
                              f"accuracy {best.min_accuracy:g}; expected a lower bound (or more training)")
        net.load_state_dict(best.state)
        net.eval()
        spec["metrics"] = {"best_epoch": best.epoch, "val_eps50": best.eps50,
                           "test_accuracy": evaluate_accuracy(net, test.x, test.y)}
    elif best is not None:
        net.load_state_dict(best.state)
        net.eval()
        test_acc, test_loss = evaluate(net, test.x, test.y, validation)
        spec["metrics"] = {"best_epoch": best.epoch, "val_accuracy": best.accuracy, "val_loss": best.val_loss,
                           "test_accuracy": test_acc, "test_loss": test_loss}
    else:
        if hasattr(objective, "state_dict"):
            spec["objective_state"] = objective.state_dict()  # e.g. the psi integrator (SPEC 2)
        spec["metrics"] = {"train_accuracy": evaluate_accuracy(net, train.x, train.y),
                           "test_accuracy": evaluate_accuracy(net, test.x, test.y)}
    log(f"{model_name}: {spec['metrics']}")
    out_dir = Path(out_dir)
    write_csv(pd.DataFrame(rows), out_dir / "train_log.csv")
    save_trained(out_dir, net, spec)  # model.json last: its presence marks a complete folder
    if state_path is not None:
        resume.clear_state(state_path)
    return spec
