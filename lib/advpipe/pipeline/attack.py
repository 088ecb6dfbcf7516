"""Stage attack: attack the correctly classified test images (SPEC 1 attack.py), keep per-sample outcomes."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from advpipe.attacks import ATTACKS, build_attack
from advpipe.attacks.norms import perturbation_norms
from advpipe.config import ConfigError, entry
from advpipe.data import load_split
from advpipe.io.h5 import DumpError, provenance, read_dump, write_dump
from advpipe.io.images import save_class_samples
from advpipe.io.tables import write_csv
from advpipe.models import load_trained
from advpipe.models.checkpoint import check_fits_data
from advpipe.pipeline.represent import eval_tables, forward_all
from advpipe.runtime import derive_seed, seed_everything, select_device

# Config keys that describe the job, not the attack's own parameters.
_NOT_ATTACK_PARAMS = ("batch_size",)


def stored_images(x: np.ndarray) -> np.ndarray:
    """Images as attacked: uint8 when every value lies on the 1/255 grid (re-quantised attacks), else float32."""
    grid = np.rint(x * 255).astype(np.uint8)
    # Compared in x's own dtype, so that load_x_adv gives back exactly the attacked float32 values.
    return grid if np.array_equal(grid.astype(x.dtype) / x.dtype.type(255), x) else x


def norms_stats(norms: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """norms_stats.csv: count, mean, std, min, quartiles and max of each norm over the attacked images."""
    return pd.DataFrame({k: v for k, v in norms.items()}).describe().T.rename_axis("norm").reset_index()


def configured_attack(attack_name: str, attack_cfg: Mapping[str, Any], seed: int):
    """The Attack of config entry `attacks.<attack_name>`; a bad parameter is a ConfigError naming its key."""
    params = {k: v for k, v in attack_cfg.items() if k not in _NOT_ATTACK_PARAMS}
    cls = ATTACKS.get(params.get("method"))
    if cls is not None and "norm" not in cls.__dataclass_fields__:
        params.pop("norm", None)  # C&W (L2) and the search (RMS) have one norm: the schema states it
    params["seed"] = seed
    try:
        return build_attack(params)
    except ValueError as err:  # the attack's own check, "<parameter>: <what is wrong>"
        field, sep, what = str(err).partition(": ")
        if sep and field in attack_cfg:
            raise ConfigError(f"config key 'attacks.{attack_name}.{field}': {what}") from err
        raise ConfigError(f"config key 'attacks.{attack_name}': {err}") from err


def run(config: Mapping[str, Any], model_name: str, attack_name: str, model_dir: str, clean_h5: str,
        out_h5: str, out_norms_stats: str, out_eval: str, out_confusion: str, images_dir: str,
        log=print) -> None:
    seed = derive_seed(config["seed"], "attack", model_name, attack_name)
    model_cfg, attack_cfg = entry(config, "models", model_name), entry(config, "attacks", attack_name)
    attack = configured_attack(attack_name, attack_cfg, seed)  # a bad parameter fails before any work
    if attack.is_grid:  # the engine answers grids (the label study uses them); this stage's dump is per image
        raise ConfigError(f"config key 'attacks.{attack_name}.eps': the attack rule stores one adversarial per "
                          f"image and takes one eps, got the grid {attack_cfg['eps']!r}")
    seed_everything(seed)
    device = select_device(config["device"])
    dataset_cfg = entry(config, "datasets", model_cfg["dataset"])
    split = load_split(dataset_cfg, "test", config["data_root"], config["seed"])
    check_fits_data(model_dir, tuple(split.x.shape[1:]), split.classes, model_cfg["dataset"])
    clean = read_dump(clean_h5, ["index", "label", "pred", "correct"])
    if not np.array_equal(clean["index"], split.index):
        raise DumpError(f"{clean_h5}: dataset 'index' ({len(clean['index'])} rows) does not match the test split "
                        f"of {model_cfg['dataset']!r} ({len(split.index)} images); expected the representation "
                        "dump of that split (stale dump? delete it and rerun)")
    keep = np.flatnonzero(clean["correct"])
    x = split.x[keep]
    # Untargeted on the model's own prediction (equal to the label: only correct images are attacked).
    y = torch.from_numpy(clean["pred"][keep])
    model = load_trained(model_dir, device)
    log(f"{attack_name} on {model_name}: {len(keep)} correctly classified test images")
    # Success comes from the one forward pass below, which also yields the representations.
    result = attack.run(model, x.to(device), y.to(device), batch_size=attack_cfg["batch_size"],
                        desc=f"{attack_name}", check_success=False)
    x_adv = result.x_adv.detach().cpu()
    out = forward_all(model, x_adv, attack_cfg["batch_size"], desc="represent adversarial")
    norms = {k: v.cpu().numpy() for k, v in perturbation_norms(x, x_adv).items()}
    label = clean["label"][keep]
    arrays = {
        "index": clean["index"][keep], "label": label,
        "x_adv": stored_images(x_adv.numpy()),
        **out, "success": out["pred"] != label, "correct": out["pred"] == label,
        **{f"norm_{k}": v for k, v in norms.items()},
    }
    if result.distance is not None:  # minimal attacks: the smallest adversarial distance found (inf: none)
        arrays["distance"] = result.distance.cpu().numpy()
    section = {"model": model_cfg, "attack": attack_cfg, "attack_name": attack_name}
    write_dump(out_h5, arrays, provenance(section, seed))
    write_csv(norms_stats(norms), out_norms_stats)
    evaluation, confusion = eval_tables(label, out["pred"], split.classes)
    write_csv(evaluation, out_eval)
    write_csv(confusion, out_confusion, index=True)
    # Adversarial PNGs under the ids of the original images (SPEC 1), per true class.
    save_class_samples(x_adv.numpy(), label, arrays["index"], split.classes, images_dir,
                       config["represent"]["num_saved_images"])
    log(f"{attack_name}: success rate {arrays['success'].mean():.4f}, "
        f"mean L2 {norms['L2'].mean():.4f}, mean Linf {norms['Linf'].mean():.4f}")


def load_x_adv(path: str) -> np.ndarray:
    """The adversarial inputs of an attack dump as float32 in [0,1], whatever their stored type."""
    x = read_dump(path, ["x_adv"])["x_adv"]
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
