"""Stage drift (issue 16 item 3b): the engine's FGSM, PGD and C&W against foolbox's and torchattacks' on the same
correctly classified test images of one model, as an agreement rate per attack and peer, flagged below a
threshold (advpipe.metrics.drift says what is compared and how).

The resolvers (drift_eps, drift_reason, drift_job) are torch-free: rules/drift.smk imports them."""
from __future__ import annotations

import os
import statistics
from typing import Any, Mapping

from advpipe.config import entry
from advpipe.pipeline.specs import canonical, model_job
from advpipe.sources import resolve_space

# The drift section's keys a job depends on (not `enabled` or `models`: adding a model reruns no other).
SETTINGS = ("n_images", "threshold", "pgd_steps", "cw_steps")


def linf_attack_name(config: Mapping[str, Any], model_name: str) -> str | None:
    """The key of `attacks` named as the linf grid of the model's dataset (matrix.grids), or None."""
    dataset = entry(config, "models", model_name)["dataset"]
    return config.get("matrix", {}).get("grids", {}).get(dataset, {}).get("linf")


def drift_eps(attack: Mapping[str, Any]) -> float | None:
    """The middle eps of an attack entry's grid (the lower middle of an even grid; a single eps itself), None for
    a minimal attack without a budget."""
    from fractions import Fraction

    eps = attack.get("eps")
    if eps is None:
        return None
    grid = eps if isinstance(eps, list) else [eps]
    values = sorted(float(Fraction(v.strip())) if isinstance(v, str) else float(v) for v in grid)
    return statistics.median_low(values)


def drift_reason(config: Mapping[str, Any], model_name: str) -> str | None:
    """Why model `model_name` gets no drift job (the matrix's reason), None when it gets one."""
    dataset = entry(config, "models", model_name)["dataset"]
    name = linf_attack_name(config, model_name)
    if name is None:
        return f"no linf grid for dataset {dataset!r} (matrix.grids.{dataset}.linf)"
    if drift_eps(entry(config, "attacks", name)) is None:
        return f"the linf grid attack {name!r} of dataset {dataset!r} has no eps"
    return None


def drift_job(config: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """What the drift job of `model_name` depends on: model_job, the linf grid attack (name and entry, `space:
    data` resolved as attack_job resolves it), the eps taken from it, the drift settings."""
    reason = drift_reason(config, model_name)
    if reason:
        raise ValueError(f"drift of model {model_name!r}: {reason}")
    job = model_job(config, model_name)
    name = linf_attack_name(config, model_name)
    attack = resolve_space(entry(config, "attacks", name), job["dataset"])
    return canonical({**job, "attack_name": name, "attack": attack, "eps": drift_eps(attack),
                      "drift": {k: config["drift"][k] for k in SETTINGS}})


def pick_images(model, x, y, n: int, seed: int, model_name: str, batch_size: int = 256):
    """Positions of a seeded draw (derive_seed(seed, "drift", model)) of n correctly classified images, sorted."""
    import torch

    from advpipe.runtime import derive_seed

    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1).cpu() for xb in x.split(batch_size)])
    correct = torch.nonzero(pred == y.cpu()).flatten()
    g = torch.Generator().manual_seed(derive_seed(seed, "drift", model_name))
    return correct[torch.randperm(len(correct), generator=g)[:n]].sort().values


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, attack_name: str,
        attack: Mapping[str, Any], eps: float, drift: Mapping[str, Any], model_dir: str | os.PathLike, out_csv: str,
        data_root: str = "data", device: str = "auto", batch_size: int = 128, progress: bool = True, log=print):
    """The drift table of one model (its drift_job entries) -> out_csv (advpipe.metrics.drift.COLUMNS)."""
    import pandas as pd

    from advpipe.io.tables import write_csv
    from advpipe.metrics.drift import COLUMNS, drift_rows
    from advpipe.pipeline.inputs import load_model_and_split

    job = load_model_and_split(model_name=model_name, model=model, dataset=dataset, seed=seed, model_dir=model_dir,
                               split_name="test", data_root=data_root, device=device)
    net, test = job.model, job.split
    pick = pick_images(net, test.x.to(job.device), test.y, drift["n_images"], seed, model_name)
    x, y = test.x[pick].to(job.device), test.y[pick].to(job.device)
    space = attack.get("space", "pixels")
    log(f"drift of {model_name}: {len(y)} correctly classified test images, eps {eps:g} in {space} (middle of "
        f"{attack_name}'s grid), threshold {drift['threshold']:g}")
    if len(y) < drift["n_images"]:
        log(f"only {len(y)} correctly classified test images (n_images {drift['n_images']})")
    table = pd.DataFrame(drift_rows(net, x, y, model_name=model_name, space=space, eps=eps,
                                    pgd_steps=drift["pgd_steps"], cw_steps=drift["cw_steps"],
                                    threshold=drift["threshold"], batch_size=batch_size, progress=progress, log=log),
                         columns=COLUMNS)
    write_csv(table, out_csv)
    return table
