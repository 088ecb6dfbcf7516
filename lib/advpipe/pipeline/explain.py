"""Stage explain: explanation images of the first test images (SPEC 2 explain, g_explain+).

For each image, the perturbation search descends the CE toward every class (standard L2 mode, budget
eps_overshoot * rho); the result x + delta shows what the model takes for evidence of that class.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from advpipe.attacks.search import perturbation_search
from advpipe.io.images import save_png
from advpipe.pipeline.inputs import load_model_and_split
from advpipe.plots.figures import safe_name
from advpipe.plots.grid import plot_image_grid


def explain_all_classes(model: torch.nn.Module, x: torch.Tensor, num_classes: int, *, eps: float, steps: int,
                        eps_overshoot: float, batch_size: int) -> torch.Tensor:
    """(N, C, ...) explanation images x_i + delta_ij toward every class j, searched for all pairs in batches.

    The searches toward the true and the most confident wrong class are two of these: the search draws no
    random numbers, so they need not be run again.
    """
    n = len(x)
    pairs_x = x.repeat_interleave(num_classes, 0)
    pairs_t = torch.arange(num_classes, device=x.device).repeat(n)
    out = []
    for xb, tb in tqdm(list(zip(pairs_x.split(batch_size), pairs_t.split(batch_size))), desc="explain",
                       unit="batch"):
        result = perturbation_search(model, xb, tb, eps=eps, steps=steps, eps_overshoot=eps_overshoot,
                                     mode="standard", encourage=True, ensure_proper_minimization=False)
        out.append(xb + result.delta)
    return torch.cat(out).view(n, num_classes, *x.shape[1:])


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, explain: Mapping[str, Any], model_dir: str | os.PathLike,
        out_dir: str | os.PathLike, figure_stem: str, data_root: str = "data", device: str = "auto",
        log=print) -> None:
    """Explanation images of one model (its resolved entries and the study's `explain` section)."""
    cfg = explain
    job = load_model_and_split(model_name=model_name, model=model, dataset=dataset, seed=seed, model_dir=model_dir,
                               split_name="test", data_root=data_root, device=device)
    model, test, device = job.model, job.split, job.device
    n, classes = min(cfg["n_images"], len(test.y)), list(test.classes)
    x, y = test.x[:n].to(device), test.y[:n].numpy()
    with torch.no_grad():
        proba = torch.softmax(model(x), 1).cpu().numpy()
    log(f"explaining {n} test images of {model_name} toward each of {len(classes)} classes (rho {cfg['eps']})")
    images = explain_all_classes(model, x, len(classes), eps=cfg["eps"], steps=cfg["steps"],
                                 eps_overshoot=cfg["eps_overshoot"], batch_size=cfg["batch_size"])
    images = images.clamp(0, 1).cpu().numpy()  # no clamp in the search (SPEC 2); pixels for display only
    x_np = x.cpu().numpy()
    wrong = np.where(np.arange(len(classes))[None] == y[:, None], -np.inf, proba).argmax(1)
    names = [safe_name(c) for c in classes]
    out_dir = Path(out_dir)
    for i in range(n):
        folder = out_dir / f"{i}-{names[y[i]]}"
        folder.mkdir(parents=True, exist_ok=True)
        save_png(folder / "_input.png", x_np[i])
        save_png(folder / f"_real_was_{proba[i, y[i]]:.3f}.png", images[i, y[i]])
        save_png(folder / f"_second_{names[wrong[i]]}_was_{proba[i, wrong[i]]:.3f}.png", images[i, wrong[i]])
        for j in range(len(classes)):
            save_png(folder / f"{j}_{names[j]}_was_{proba[i, j]:.3f}.png", images[i, j])
    grid = np.concatenate([x_np[:, None], images[np.arange(n), y][:, None], images[np.arange(n), wrong][:, None],
                           images], axis=1)
    cols = ["input", "true class", "2nd class"] + classes
    rows = [f"{i}: {classes[y[i]]}\np={proba[i, y[i]]:.2f}" for i in range(n)]
    plot_image_grid(grid, rows, cols, figure_stem)
