"""Stage label_attack (SPEC 3 attack.py / attack_v3.py): one trained label model under FGSM, BIM (untargeted
and targeted) and PGD over the eps grid, in the normalised input space; one row per (attack, eps)."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from advpipe.attacks import build_attack, parse_fraction, random_targets
from advpipe.config import entry
from advpipe.data import load_split
from advpipe.data.splits import subset
from advpipe.io.h5 import provenance, write_dump
from advpipe.io.tables import write_csv
from advpipe.models import load_trained
from advpipe.models.checkpoint import check_fits_data, read_spec
from advpipe.runtime import derive_seed, seed_everything, select_device

ATTACKS = ("fgsm", "fgsm_targeted", "bim", "bim_targeted", "pgd")
COLUMNS = ["label", "level", "attack", "eps", "accuracy", "clean_accuracy", "n_images"]
# The originals' targets: torch.manual_seed(444), one draw taken by the test loader, then one randint per image.
SPEC3_TARGETS = {"kind": "targeted", "targets": "random", "seed": 444, "skip": 1}


def engine_config(name: str, cfg: Mapping[str, Any], seed: int | str) -> dict[str, Any]:
    """SPEC 3 attack `name` as a configuration of the shared attack engine, over the study's eps grid in the
    normalised space: FGSM clamps to each image's range, BIM does not clamp and (by default) steps along the
    never-zeroed gradient sum, PGD is torchattacks' (soft-target CE, [0,1] clamp of normalised inputs)."""
    common = {"eps": [float(e) for e in cfg["eps"]], "space": "normalized", "quantize": False, "seed": seed}
    if name.endswith("_targeted"):
        common["criterion"] = SPEC3_TARGETS
    base = name.removesuffix("_targeted")
    if base == "fgsm":
        return {"method": "fgsm", "loss": "model", "clamp": "per_image", **common}
    if base == "bim":
        return {"method": "bim", "loss": "model", "clamp": "none", "steps": cfg["bim_steps"],
                "accumulate_gradients": cfg["accumulate_gradients"], **common}
    if name == "pgd":
        return {"method": "pgd", "loss": "soft_ce", "clamp": [0.0, 1.0] if cfg["pgd_clamp"] else "none",
                "steps": cfg["pgd_steps"], "step_size": parse_fraction(cfg["pgd_alpha"], "labels.attack.pgd_alpha"),
                **common}
    raise KeyError(f"unknown label attack {name!r}; known: {list(ATTACKS)}")


def robust_accuracy(correct_clean: torch.Tensor, correct_adv: torch.Tensor) -> float:
    """SPEC 3 accuracy: #(initially correct AND still correct after the attack) / N; initially wrong = failure."""
    correct_clean, correct_adv = correct_clean.bool(), correct_adv.bool()
    if correct_clean.shape != correct_adv.shape or correct_clean.dim() != 1:
        raise ValueError(f"need two (N,) masks, got {tuple(correct_clean.shape)} and {tuple(correct_adv.shape)}")
    if len(correct_clean) == 0:
        raise ValueError("robust_accuracy of zero images is undefined")
    return (correct_clean & correct_adv).sum().item() / len(correct_clean)


def run(config: Mapping[str, Any], label: str, level: float, model_dir: str | os.PathLike, out_csv: str,
        out_h5: str | os.PathLike | None = None, log=print) -> pd.DataFrame:
    """Attack the (label, level) model in model_dir on the study's test images; write and return the table,
    and (out_h5) the per-image dump: `index`, `label`, `target`, `clean_correct` and per attack
    `correct_<attack>` (N, K): correct after the attack at each of the K eps (attrs `eps`).

    Accuracy = #(initially correct AND correct after the attack) / N. As the original, eps 0 is not attacked
    (its accuracy is the clean one, even for PGD, whose [0,1] clamp would otherwise change the input). The
    targets of the targeted attacks are drawn once for the test images, as the original's per-attack
    `torch.manual_seed(444)` + test-loader loop does, and so are the same at every eps.
    """
    study = config["labels"]
    cfg = study["attack"]
    seed = derive_seed(config["seed"], "labels", "attack", label)
    seed_everything(seed)
    device = select_device(config["device"])
    dataset = study["backbone"]["dataset"]
    test = load_split(entry(config, "datasets", dataset), "test", config["data_root"], config["seed"])
    if cfg.get("n_images") is not None:  # the same images for every label: the subset seed has no label in it
        test = subset(test, cfg["n_images"], derive_seed(config["seed"], "labels", "attack_subset"))
    check_fits_data(model_dir, tuple(test.x.shape[1:]), test.classes, dataset)
    spec = read_spec(model_dir)
    model = load_trained(model_dir, device)
    kind = spec.get("label", {}).get("kind", "category")
    bs = cfg["batch_size"]

    x, y = test.x.to(device), test.y.to(device)
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(y), bs)]) == y
    clean_acc = clean.sum().item() / len(y)
    log(f"label {label} ({kind}) level {level}: clean accuracy {clean_acc:.4f} on {len(y)} test images")
    rows, correct, targets = [], {}, None
    for name in tqdm(cfg["attacks"], desc=f"attacks {label}", unit="attack"):
        # PGD's random starts: one stream per (label, eps), named as before the engine (same draws, same table).
        attack = build_attack(engine_config(name, cfg, f"{config['seed']}/labels/pgd/{label}"))
        result = attack.run(model, x, y, batch_size=bs, progress=False, store=False)
        if name.endswith("_targeted"):
            targets = result.classes  # drawn alike for every targeted attack
        still = result.pred == y  # (K, N): correct after the attack at each eps
        correct[name] = still.T.cpu().numpy()
        for eps, still_k in zip(cfg["eps"], still):
            acc = robust_accuracy(clean, still_k)
            rows.append({"label": label, "level": float(level), "attack": name, "eps": float(eps), "accuracy": acc,
                         "clean_accuracy": clean_acc, "n_images": len(y)})
            log(f"{name} eps {eps:g}: accuracy {acc:.4f}")
    if targets is None:
        targets = random_targets(test.y, len(test.classes), SPEC3_TARGETS["seed"], SPEC3_TARGETS["skip"])
    table = pd.DataFrame(rows, columns=COLUMNS)
    if out_h5 is not None:
        arrays = {"index": test.index, "label": test.y.numpy(), "target": targets.cpu().numpy(),
                  "clean_correct": clean.cpu().numpy()}
        arrays.update({f"correct_{a}": masks for a, masks in correct.items()})
        attrs = provenance({"labels": {k: study[k] for k in ("backbone", "attack", "validation_fraction")},
                            "label": label, "level": float(level)}, config["seed"])
        write_dump(out_h5, arrays, {**attrs, "eps": np.asarray(cfg["eps"], dtype=np.float64)})
    write_csv(table, out_csv)  # last: the table marks the job complete
    return table
