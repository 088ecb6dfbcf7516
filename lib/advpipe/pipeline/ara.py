"""Stage ara: Attack ARA and BTR ARA of one model (SPEC 2 calculate-ara), its distances and A(eps) figure."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from advpipe.io.h5 import provenance, write_dump
from advpipe.io.tables import write_csv
from advpipe.metrics.ara import ara as ara_area
from advpipe.metrics.ara import ara_distances, ara_subset
from advpipe.pipeline.inputs import load_model_and_split
from advpipe.plots.curves import plot_accuracy_robustness

# Attack ARA: smallest perturbation that misclassifies; BTR ARA: that brings p_y down to chance.
MODES = {"attack": "l2min", "btr": "btr"}


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, ara: Mapping[str, Any], model_dir: str | os.PathLike,
        out_h5: str, out_csv: str, figure_stem: str, data_root: str = "data", device: str = "auto",
        log=print) -> pd.DataFrame:
    """Attack ARA and BTR ARA of one model (its resolved entries and the `ara` section)."""
    cfg = ara
    job = load_model_and_split(model_name=model_name, model=model, dataset=dataset, seed=seed, model_dir=model_dir,
                               split_name="test", data_root=data_root, device=device)
    model, test, model_cfg, device = job.model, job.split, job.model_cfg, job.device
    n = min(cfg["n_images"], len(test.y))
    pick = ara_subset(len(test.y), n, seed=cfg["subset_seed"])
    x, y = test.x[pick].to(device), test.y[pick].to(device)
    num_classes = len(test.classes)
    log(f"ARA of {model_name} on {n} test images: eps {cfg['eps']}, {cfg['steps']} steps, momentum {cfg['momentum']}")
    try:
        distances = {kind: ara_distances(model, x, y, mode=mode, eps=cfg["eps"], steps=cfg["steps"],
                                         momentum=cfg["momentum"], batch_size=cfg["batch_size"],
                                         ensure_proper_minimization=cfg["ensure_proper_minimization"])
                     for kind, mode in MODES.items()}
    except ValueError as err:  # the samples named are positions in the ARA subset
        raise ValueError(f"ARA of model {model_name!r}: {err}; or set config key "
                         f"'ara.ensure_proper_minimization' to false") from err
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).cpu().numpy()
    row = {"model": model_name, "n_images": n, "accuracy": float(correct.mean()),
           **{f"{kind}_ara": ara_area(d, num_classes, bins=cfg["bins"]) for kind, d in distances.items()},
           **{f"{kind}_median_distance": float(np.median(d)) for kind, d in distances.items()},
           "eps": cfg["eps"], "steps": cfg["steps"], "momentum": cfg["momentum"]}
    log(f"Attack ARA {row['attack_ara']:.5f}, BTR ARA {row['btr_ara']:.5f}")
    arrays = {"index": test.index[pick.numpy()].astype(np.int64), "label": y.cpu().numpy(), "correct": correct,
              **{f"d_{kind}": d for kind, d in distances.items()}}
    write_dump(out_h5, arrays, provenance({"model": model_cfg, "ara": cfg}, seed))
    table = pd.DataFrame([row])
    write_csv(table, out_csv)
    plot_accuracy_robustness({"Attack": distances["attack"], "BTR": distances["btr"]}, num_classes,
                             title=model_name, stem=figure_stem, bins=cfg["bins"])
    return table


def collect(tables: list[str | os.PathLike], out_csv: str | os.PathLike, log=print) -> pd.DataFrame:
    """One row per model, in the order given."""
    table = pd.concat([pd.read_csv(path) for path in tables], ignore_index=True)
    log(table.to_string(index=False))
    write_csv(table, out_csv)
    return table
