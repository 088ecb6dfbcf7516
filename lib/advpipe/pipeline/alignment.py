"""Stage alignment: SPEC 5's alpha_dx and alpha_x of one model on one split, per example and on average.

alpha_dx = cos(grad_x loss, dx) with dx the direction to the closest other class: the dataset's ground truth
(extras["dx"] of SPEC 5's synthetic data) or an estimator's dump (the direct method's one direction per image, or
the indirect method's one per (image, class), picked at the closest class of Eq. 5). alpha_x = |cos(x, grad)|
needs no dx, so every model of every study gets it. Batched over the split; nothing is attacked.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from advpipe.io.h5 import DumpError, read_attrs, read_dump
from advpipe.io.tables import write_csv
from advpipe.metrics.alignment import alignment_table, alpha_dx, alpha_x, direction_gradient
from advpipe.pipeline.battery import zero_gradient_mask
from advpipe.pipeline.inputs import load_model_and_split
from advpipe.sources import declared_range

SUMMARY_COLUMNS = ("model", "dataset", "split", "n", "accuracy", "alpha_dx", "alpha_x", "alpha_dx_correct",
                   "alpha_x_correct", "zero_gradient_share", "dx_source")


def read_dx(path: str | os.PathLike, index: np.ndarray) -> torch.Tensor:
    """An estimator's directions for the samples `index` (joined on the dump's `index`), shaped (N, *sample) for the
    direct method or (N, C, *sample) for the indirect one; DumpError naming the file when a sample is missing."""
    attrs = read_attrs(path)
    key = "dx_all" if attrs.get("per_class") else "dx"
    arrays = read_dump(path, ["index", key])
    pos = pd.Index(arrays["index"]).get_indexer(index)
    if (pos < 0).any():
        missing = index[pos < 0]
        raise DumpError(f"{path}: no direction for {len(missing)} of the {len(index)} samples (e.g. index "
                        f"{int(missing[0])}); expected the estimator's dump of this split (stale? delete it and rerun)")
    sample = tuple(int(v) for v in np.atleast_1d(attrs["sample_shape"]))
    dx = torch.from_numpy(np.ascontiguousarray(arrays[key][pos]))
    return dx.view(len(index), *dx.shape[1:-1], *sample)


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, split: str,
        batch_size: int, dx_estimator: str | None, model_dir: str, out_table: str, out_summary: str,
        dx_h5: str | None = None, data_root: str = "data", device: str = "auto", log=print) -> pd.DataFrame:
    """Write the per-example table (out_table) and the one-row summary (out_summary) of model `model_name`."""
    job = load_model_and_split(model_name=model_name, model=model, dataset=dataset, seed=seed, model_dir=model_dir,
                               split_name=split, data_root=data_root, device=device)
    net, data = job.model, job.split
    lo, hi = declared_range(dataset)
    if "dx" in data.extras:
        dx, source = data.extras["dx"], "ground truth"
    elif dx_h5:
        dx, source = read_dx(dx_h5, data.index), f"estimator {dx_estimator}"
    else:
        dx, source = None, "none"
    grads, closest, preds = [], [], []
    for start in tqdm(range(0, len(data), batch_size), desc=f"alignment {model_name}", unit="batch"):
        xb = data.x[start:start + batch_size].to(job.device)
        yb = data.y[start:start + batch_size].to(job.device)
        g, c = direction_gradient(net, xb, yb)
        with torch.no_grad():
            preds.append(net(xb).argmax(1).cpu())
        grads.append(g.detach().cpu())
        closest.append(c.cpu())
    grad, near, pred = torch.cat(grads), torch.cat(closest), torch.cat(preds)
    # the gradient-masking check of the battery (AutoAttack's): the CE's input gradient exactly zero
    zero = zero_gradient_mask(net, data.x.to(job.device), data.y.to(job.device), batch_size)
    a_x = alpha_x(grad, lo + (hi - lo) * data.x)  # against the natural input: alpha_x is not shift invariant
    a_dx = None
    if dx is not None:
        if dx.dim() == data.x.dim() + 1:  # one direction per class: the closest class's (Eq. 5)
            dx = dx[torch.arange(len(dx)), near]
        a_dx = alpha_dx(grad, dx)
    table = alignment_table(index=data.index, label=data.y.numpy(), pred=pred.numpy(), closest=near.numpy(),
                            alpha_dx=None if a_dx is None else a_dx.numpy(), alpha_x=a_x.numpy())
    correct = table["correct"].to_numpy(bool)

    def mean(col: str, rows: np.ndarray) -> float:
        return float(table[col][rows].mean()) if col in table and rows.any() else float("nan")

    everything = np.ones(len(table), dtype=bool)
    summary = pd.DataFrame([{"model": model_name, "dataset": model["dataset"], "split": split, "n": len(table),
                             "accuracy": float(correct.mean()), "alpha_dx": mean("alpha_dx", everything),
                             "alpha_x": mean("alpha_x", everything), "alpha_dx_correct": mean("alpha_dx", correct),
                             "alpha_x_correct": mean("alpha_x", correct),
                             "zero_gradient_share": float(zero.mean()), "dx_source": source}],
                           columns=list(SUMMARY_COLUMNS))
    write_csv(table, out_table)
    write_csv(summary, out_summary)
    row = summary.iloc[0]
    log(f"{model_name} on {split}: accuracy {row.accuracy:.4f}, alpha_dx {row.alpha_dx:.4f} (dx: {source}), "
        f"alpha_x {row.alpha_x:.4f}, n {row.n}")
    return summary
