"""Stages of the LESCI study (SPEC 4): activation export, the LESCI model (PCA + embedding), the grid search.

export: the activations at one layer of a trained model, of the correctly classified training images (E is built
from those, SPEC 4), plus a validation share held out of the training split first (all its images: the grid
search scores LESCI on them), written to HDF5 batch by batch.
build: a defended model's folder (model.pt: the LESCI wrapper's state_dict with the base weights, model.json) and
its embedding HDF5 (W, mu, E, labels). Every shared rule then loads it with load_trained, like any model.
grid: SPEC 4's search over (layer, r, k, t): the validation accuracy must exceed a threshold; the objective is the
fraction projected. A tidy table, the chosen setting, a heat-map figure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from advpipe.config import ConfigError
from advpipe.data import load_split
from advpipe.data.splits import validation_level_split
from advpipe.defenses.lesci import LESCI, fit_pca, topk_cosine, vote
from advpipe.io.atomic import atomic_path
from advpipe.io.h5 import provenance, read_attrs, read_dump
from advpipe.io.tables import write_csv
from advpipe.metrics.lesci import lesci_metrics
from advpipe.models import load_trained, save_trained
from advpipe.models.checkpoint import check_fits_data, read_spec
from advpipe.models.layers import activations, find_layer
from advpipe.plots.figures import new_figure, save_figure
from advpipe.runtime import derive_seed, seed_everything, select_device

_PARTS = ("train", "val")


def _split_positions(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    train, val = validation_level_split(n, validation_fraction, 100, derive_seed(seed, "lesci_validation"))
    return np.sort(train), np.sort(val)


@torch.no_grad()
def export(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, layer: str,
           validation_fraction: float, batch_size: int, model_dir: str, out_h5: str, data_root: str = "data",
           device: str = "auto", log=print) -> None:
    """Activations of `layer` (flattened): train_* of the correctly classified images of the training split minus
    the validation share, val_* of every validation image (with the base model's prediction)."""
    seed_everything(seed)
    device = select_device(device)
    split = load_split(dataset, "train", data_root, seed)
    check_fits_data(model_dir, tuple(split.x.shape[1:]), split.classes, model["dataset"])
    net = load_trained(model_dir, device)
    try:
        find_layer(net, layer)
    except KeyError as err:
        raise ConfigError(f"LESCI layer {layer!r} (defense.lesci.layer or lesci.grid.layers) of model {model_name!r}: "
                          f"not a layer of {model.get('arch', 'its architecture')}; {err.args[0].split('; ', 1)[1]}") \
            from None
    parts = dict(zip(_PARTS, _split_positions(len(split), validation_fraction, seed)))
    counts = {}
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        for part, positions in parts.items():
            made = False
            for start in tqdm(range(0, len(positions), batch_size), desc=f"{layer} ({part})", unit="batch"):
                pos = positions[start:start + batch_size]
                logits, act = activations(net, layer, split.x[pos].to(device))
                pred = logits.argmax(1).cpu().numpy()
                keep = pred == split.y[pos].numpy() if part == "train" else np.ones(len(pos), bool)
                rows = {"activation": act.float().cpu().numpy()[keep], "label": split.y[pos].numpy()[keep],
                        "index": split.index[pos][keep], "pred": pred[keep]}
                for key, value in rows.items():
                    name = f"{part}_{key}"
                    if not made:  # chunked, resizable: a large layer never sits whole in memory
                        f.create_dataset(name, data=value, maxshape=(None, *value.shape[1:]),
                                         chunks=(max(1, min(len(value), 256)), *value.shape[1:]))
                    else:
                        f[name].resize(f[name].shape[0] + len(value), axis=0)
                        f[name][-len(value):] = value
                made = True
            counts[part] = f[f"{part}_label"].shape[0]
        for key, value in provenance({"model": model, "layer": layer, "validation_fraction": validation_fraction},
                                     seed).items():
            f.attrs[key] = value
        f.attrs["layer"], f.attrs["classes"] = layer, json.dumps(split.classes)
    log(f"{model_name} {layer}: {counts['train']} correctly classified training activations of size "
        f"{act.shape[1]}, {counts['val']} validation images")


def read_part(path: str, part: str) -> dict[str, np.ndarray]:
    """train_* or val_* arrays of an activation export, with their shared-name checks (io.h5 LAYOUTS)."""
    arrays = read_dump(path, [f"{part}_{k}" for k in ("activation", "label", "index", "pred")])
    return {k.split("_", 1)[1]: v for k, v in arrays.items()}


def build(*, model_name: str, lesci: Mapping[str, Any], seed: int, activations_h5: str, base_dir: str,
          out_dir: str, out_embedding: str, device: str = "auto", log=print) -> None:
    """The defended model's folder and its embedding (W, mu, E, labels) from the base's activation export."""
    seed_everything(seed)
    device = select_device(device)
    train = read_part(activations_h5, "train")
    a = torch.from_numpy(train["activation"]).to(device)
    w, mu = fit_pca(a, lesci["r"], center=lesci["center"], seed=seed)
    e = (a - mu) @ w
    labels = torch.from_numpy(train["label"])
    base = load_trained(base_dir, device)
    spec = read_spec(base_dir)
    net = LESCI(base, lesci["layer"], w, mu, e, labels.to(device), spec["num_classes"], k=lesci["k"], t=lesci["t"],
                output=lesci["output"])
    with atomic_path(out_embedding) as tmp, h5py.File(tmp, "w") as f:
        # W and mu are datasets, not attrs: HDF5 attrs stop at 64 KiB
        for key, value in {"embedding": e, "label": labels, "w": w, "mu": mu}.items():
            f[key] = value.cpu().numpy()
        f["index"] = train["index"]
        for key, value in provenance({"lesci": lesci}, seed).items():
            f.attrs[key] = value
    shapes = {"m": int(a.shape[1]), "r": int(w.shape[1]), "n": int(len(e))}
    save_trained(out_dir, net, {**spec, "defense": {"lesci": {**lesci, **shapes}}})
    log(f"{model_name}: LESCI at {lesci['layer']} (m {shapes['m']}, r {shapes['r']}, n {shapes['n']}, k {lesci['k']}, "
        f"t {lesci['t']}, {lesci['output']}) over {Path(base_dir).name}")


def grid_rows(train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray], rs, ks, ts, center: bool,
              num_classes: int, seed: int = 0) -> list[dict]:
    """Metrics of every (r, k, t) of one layer on the validation activations. PCA once at the largest r (the
    leading components of an SVD are those of every smaller r), the top max(k) neighbours once per r."""
    a, v = torch.from_numpy(train["activation"]), torch.from_numpy(val["activation"])
    labels = torch.from_numpy(train["label"]).long()
    usable = [r for r in rs if r <= min(a.shape)]
    rows = [{"r": r, "k": k, "t": t, "skipped": f"r > {min(a.shape)} (activations x size)"}
            for r in rs if r not in usable for k in ks for t in ts]
    if not usable:
        return rows
    w, mu = fit_pca(a, max(usable), center=center, seed=seed)
    for r in usable:
        _, nearest = topk_cosine((v - mu) @ w[:, :r], (a - mu) @ w[:, :r], min(max(ks), len(a)))
        for k in ks:
            knn, fraction = vote(labels[nearest[:, :k]], num_classes)
            for t in ts:
                projected = (fraction >= t).numpy()
                pred = np.where(projected, knn.numpy(), val["pred"])
                rows.append({"r": r, "k": k, "t": t, **lesci_metrics(val["label"], pred, knn.numpy(), projected)})
    return rows


def grid(*, model_name: str, grid: Mapping[str, Any], min_accuracy: float, center: bool, seed: int,
         activations_h5s: Mapping[str, str], out_csv: str, out_chosen: str, figure_stem: str, dpi: int = 100,
         log=print) -> pd.DataFrame:
    """SPEC 4's search (lesci_param_search.py): every (layer, r, k, t) on the validation images; feasible when
    its accuracy exceeds `min_accuracy`; chosen: the feasible one projecting the most (ties: the more accurate,
    then the first in grid order)."""
    seed_everything(seed)
    tables = []
    for layer in tqdm(grid["layers"], desc="grid search", unit="layer"):
        path = activations_h5s[layer]
        num_classes = len(json.loads(read_attrs(path)["classes"]))  # closes the file (a bare h5py.File leaked it)
        rows = grid_rows(read_part(path, "train"), read_part(path, "val"), grid["r"], grid["k"], grid["t"], center,
                         num_classes, seed)
        tables.append(pd.DataFrame(rows).assign(layer=layer))
    table = pd.concat(tables, ignore_index=True)
    table["fraction_projected"] = 1 - table["percentage_identity_mapped"]
    table["feasible"] = table["accuracy"] > min_accuracy
    table = table[["layer", "r", "k", "t", "accuracy", "accuracy_identity", "accuracy_projection",
                   "percentage_identity_mapped", "fraction_projected", "feasible", "n", "n_projected"]
                  + (["skipped"] if "skipped" in table else [])]
    write_csv(table, out_csv)
    feasible = table[table["feasible"]]
    if len(feasible):
        best = feasible.sort_values(["fraction_projected", "accuracy"], ascending=False, kind="stable").iloc[0]
        chosen = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items() if k != "skipped"}
    else:
        chosen = {"reason": f"no setting reaches validation accuracy > {min_accuracy} "
                            f"(best {table['accuracy'].max():.4f})"}
    with atomic_path(out_chosen) as tmp:
        tmp.write_text(json.dumps({"model": model_name, "min_accuracy": min_accuracy, "chosen": chosen}, indent=2)
                       + "\n")
    _heatmaps(table, min_accuracy, Path(figure_stem), dpi)
    log(f"{model_name}: {int(table['feasible'].sum())} of {len(table)} settings feasible; chosen {chosen}")
    return table


def _heatmaps(table: pd.DataFrame, min_accuracy: float, stem: Path, dpi: int) -> None:
    """One heat map per (layer, k): the fraction projected over (r, t), infeasible cells left blank."""
    import seaborn as sns  # the heat map with annotations; imported only by the grid rule

    table = table.dropna(subset=["accuracy"])
    panels = list(table.groupby(["layer", "k"], sort=False))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = new_figure((3.2 * cols, 2.6 * rows))
    for i, ((layer, k), sub) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = sub.pivot(index="r", columns="t", values="fraction_projected")
        feasible = sub.pivot(index="r", columns="t", values="feasible").astype(bool)
        sns.heatmap(values, mask=~feasible, vmin=0, vmax=1, cmap="viridis", annot=values.shape[1] <= 10,
                    fmt=".2f", annot_kws={"fontsize": 5}, cbar=i == len(panels) - 1, ax=ax)
        ax.set_xticklabels([f"{float(t.get_text()):.1f}" for t in ax.get_xticklabels()], fontsize=6)
        ax.set_title(f"{layer}, k = {k}", fontsize=8)
    fig.suptitle(f"fraction projected (blank: validation accuracy <= {min_accuracy})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, stem, dpi=dpi, transparent=False)


@torch.no_grad()
def evaluate(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, base_name: str,
             model_dir: str, base_dir: str, out_csv: str, batch_size: int = 1000, data_root: str = "data",
             device: str = "auto", log=print) -> pd.DataFrame:
    """LESCI's metrics on the test split (SPEC 4 projection_metrics), beside its base model's accuracy."""
    seed_everything(seed)
    device = select_device(device)
    split = load_split(dataset, "test", data_root, seed)
    net, base = load_trained(model_dir, device), load_trained(base_dir, device)
    pred, knn, projected, base_pred = [], [], [], []
    for start in tqdm(range(0, len(split), batch_size), desc=f"{model_name} test", unit="batch"):
        x = split.x[start:start + batch_size].to(device)
        logits, decision = net.forward_with_decision(x)
        pred.append(logits.argmax(1).cpu()), knn.append(decision.label.cpu())
        projected.append(decision.projected.cpu()), base_pred.append(base(x).argmax(1).cpu())
    label = split.y.numpy()
    metrics = lesci_metrics(label, torch.cat(pred).numpy(), torch.cat(knn).numpy(), torch.cat(projected).numpy())
    base_accuracy = float((torch.cat(base_pred).numpy() == label).mean())
    table = pd.DataFrame([{"model": model_name, "base": base_name, **metrics, "base_accuracy": base_accuracy,
                           **{k: model["defense"]["lesci"][k] for k in ("layer", "r", "k", "t", "output")}}])
    write_csv(table, out_csv)
    log(f"{model_name}: accuracy {metrics['accuracy']:.4f} (base {base_accuracy:.4f}), projected "
        f"{1 - metrics['percentage_identity_mapped']:.4f} of {metrics['n']} test images")
    return table
