"""Stage label_attack (SPEC 3 attack.py / attack_v3.py): one trained label model under FGSM, BIM (untargeted
and targeted) and PGD over the eps grid, in the normalised input space; one row per (attack, eps)."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from advpipe.attacks import label_attacks as la
from advpipe.attacks.base import parse_fraction
from advpipe.config import entry
from advpipe.data import load_split
from advpipe.data.splits import subset
from advpipe.io.h5 import provenance, write_dump
from advpipe.io.tables import write_csv
from advpipe.models import load_trained
from advpipe.models.checkpoint import check_fits_data, read_spec
from advpipe.models.label_heads import label_loss
from advpipe.runtime import derive_seed, seed_everything, select_device

ATTACKS = ("fgsm", "fgsm_targeted", "bim", "bim_targeted", "pgd")
COLUMNS = ["label", "level", "attack", "eps", "accuracy", "clean_accuracy", "n_images"]


def attack_fn(name: str, cfg: Mapping[str, Any]) -> Callable[..., torch.Tensor]:
    """(forward, z, classes, eps, loss_fn, generator) -> adversarial z for attack `name` with the study's
    settings; `classes` are the targets for the targeted attacks, the true labels otherwise."""
    if name in ("fgsm", "fgsm_targeted"):
        targeted = name == "fgsm_targeted"
        return lambda f, z, c, eps, loss, gen: la.fgsm(f, z, c, eps, loss, targeted=targeted)
    if name in ("bim", "bim_targeted"):
        targeted = name == "bim_targeted"
        return lambda f, z, c, eps, loss, gen: la.bim(f, z, c, eps, loss, targeted=targeted, steps=cfg["bim_steps"],
                                                      accumulate_gradients=cfg["accumulate_gradients"])
    if name == "pgd":
        clamp = (0.0, 1.0) if cfg["pgd_clamp"] else None
        alpha = parse_fraction(cfg["pgd_alpha"], "labels.attack.pgd_alpha")
        # PGD takes torchattacks' cross-entropy: the caller passes la.pgd_loss as `loss` for it.
        return lambda f, z, c, eps, loss, gen: la.pgd(f, z, c, eps, alpha=alpha, steps=cfg["pgd_steps"],
                                                      loss_fn=loss, generator=gen, clamp_range=clamp)
    raise KeyError(f"unknown label attack {name!r}; known: {list(ATTACKS)}")


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
    labels = getattr(model, "labels", None) if kind != "category" else None
    loss_fn = label_loss(kind, labels, reduction="per_sample")
    ce_loss = la.pgd_loss(labels)
    forward = la.normalized_forward(model)
    decode = model.decode if kind != "category" else (lambda out: out)
    bs = cfg["batch_size"]

    x, y = test.x.to(device), test.y.to(device)
    targets = la.random_targets(test.y, len(test.classes)).to(device)
    with torch.no_grad():
        z = model.normalize(x)
        clean = torch.cat([decode(forward(z[i:i + bs])).argmax(1) for i in range(0, len(y), bs)]) == y
    clean_acc = clean.sum().item() / len(y)
    log(f"label {label} ({kind}) level {level}: clean accuracy {clean_acc:.4f} on {len(y)} test images")
    rows, correct = [], {a: [] for a in cfg["attacks"]}
    grid = [(a, eps) for a in cfg["attacks"] for eps in cfg["eps"]]
    for name, eps in tqdm(grid, desc=f"attacks {label}", unit="run"):
        fn = attack_fn(name, cfg)
        classes = targets if name.endswith("_targeted") else y
        loss = ce_loss if name == "pgd" else loss_fn
        gen = torch.Generator(device=device).manual_seed(
            derive_seed(config["seed"], "labels", "pgd", label, float(eps)))
        still = [clean] if eps == 0 else []
        for i in range(0, len(y) if eps else 0, bs):
            z_adv = fn(forward, z[i:i + bs], classes[i:i + bs], float(eps), loss, gen)
            with torch.no_grad():
                still.append(decode(forward(z_adv)).argmax(1) == y[i:i + bs])
        still = torch.cat(still)
        correct[name].append(still.cpu().numpy())
        acc = la.robust_accuracy(clean, still)
        rows.append({"label": label, "level": float(level), "attack": name, "eps": float(eps), "accuracy": acc,
                     "clean_accuracy": clean_acc, "n_images": len(y)})
        log(f"{name} eps {eps:g}: accuracy {acc:.4f}")
    table = pd.DataFrame(rows, columns=COLUMNS)
    if out_h5 is not None:
        arrays = {"index": test.index, "label": test.y.numpy(), "target": targets.cpu().numpy(),
                  "clean_correct": clean.cpu().numpy()}
        arrays.update({f"correct_{a}": np.stack(masks, 1) for a, masks in correct.items()})
        attrs = provenance({"labels": {k: study[k] for k in ("backbone", "attack", "validation_fraction")},
                            "label": label, "level": float(level)}, config["seed"])
        write_dump(out_h5, arrays, {**attrs, "eps": np.asarray(cfg["eps"], dtype=np.float64)})
    write_csv(table, out_csv)  # last: the table marks the job complete
    return table
