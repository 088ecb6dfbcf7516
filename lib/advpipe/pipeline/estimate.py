"""Stages of the estimators of dx (SPEC 5): train one (estimator_train), estimate dx for a split (estimate), and
compare an estimate with the ground truth where the dataset has one (estimator_similarity).

vrgan, the direct method: a generator G(x, 1 - y, y) -> dx trained against a one-logit critic of the model's
architecture (advpipe.estimate.direct). cgan, the indirect method: a class-conditional GAN, then each image's
two-phase z projection onto every class, dx(i, c) = G(z*, c) - x_i (advpipe.estimate.indirect), saved chunk by
chunk so that a killed job resumes. Dumps hold directions flattened per sample (attr sample_shape), in natural
units, joined to the split on `index`.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import pandas as pd
import torch

from advpipe.data import dataset_info, epoch_split, has_validation_split, load_split
from advpipe.data.splits import take, validation_level_split
from advpipe.io.atomic import atomic_path
from advpipe.io.h5 import provenance, read_dump, write_dump
from advpipe.io.tables import write_csv
from advpipe.runtime import derive_seed, seed_everything, select_device
from advpipe.sources import declared_range


def _save(generator: torch.nn.Module, spec: Mapping[str, Any], out_generator: str, out_spec: str) -> None:
    """generator.pt (state_dict, through a buffer: byte-identical reruns) and estimator.json, the json last."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in generator.state_dict().items()}, buffer)
    with atomic_path(out_generator) as tmp:
        tmp.write_bytes(buffer.getvalue())
    with atomic_path(out_spec) as tmp:
        tmp.write_text(json.dumps(dict(spec), indent=2, sort_keys=True) + "\n")


def build_generator(spec: Mapping[str, Any]) -> torch.nn.Module:
    """The generator an estimator.json describes (untrained)."""
    if spec["method"] == "cgan":
        from advpipe.estimate.indirect import ConditionalGenerator

        return ConditionalGenerator(**spec["generator"])
    from advpipe.estimate.direct import MLPGenerator, UNetGenerator

    g = spec["generator"]
    if g["kind"] == "mlp":
        return MLPGenerator(int(np.prod(spec["shape"])), hidden=g["hidden"])
    return UNetGenerator(spec["shape"][0], nf=g["nf"], downsamplings=g["downsamplings"])


def load_generator(generator_pt: str | os.PathLike, spec_json: str | os.PathLike,
                   device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    from advpipe.models.checkpoint import read_state  # the same safe reading as a model's checkpoint

    spec = json.loads(Path(spec_json).read_text())
    net = build_generator(spec)
    net.load_state_dict(read_state(Path(generator_pt), "a generator state_dict"))
    return net.to(device).eval(), spec


def _critic(estimator: Mapping[str, Any], dataset: Mapping[str, Any], data_root: str, seed: int):
    """The one-logit critic of the vrgan method: the configured architecture on the dataset's inputs."""
    from advpipe.models.checkpoint import build_from_spec
    from advpipe.pipeline.train import model_spec

    model_cfg = {"arch": estimator["critic"]["arch"], "arch_args": estimator["critic"]["arch_args"],
                 "normalize": "none", "train": {}, "one_logit": True}
    return build_from_spec(model_spec(model_cfg, dataset, data_root, seed))


def train(*, estimator_name: str, estimator: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
          out_generator: str, out_spec: str, out_log: str, data_root: str = "data", device: str = "auto",
          log=print) -> dict[str, Any]:
    """Train estimator `estimator_name` (its resolved entry) on its dataset's training split."""
    stream = derive_seed(seed, "estimator", estimator_name)
    seed_everything(stream)  # the initial weights
    device = select_device(device)
    info = dataset_info(dataset, data_root, seed)
    value_range = declared_range(dataset)
    spec: dict[str, Any] = {"method": estimator["method"], "shape": list(info.shape), "range": list(value_range),
                            "num_classes": info.num_classes, "classes": list(info.classes)}
    full = load_split(dataset, "train", data_root, seed)
    if estimator["method"] == "vrgan":
        from advpipe.estimate.direct import train_vrgan

        if info.num_classes != 2:
            raise ValueError(f"estimator {estimator_name!r}: vrgan directs each image to the other class of a binary "
                             f"dataset; {estimator['dataset']!r} has {info.num_classes} classes (use cgan)")
        g = estimator["generator"]
        spec["generator"] = {"kind": g["kind"], "hidden": list(g["hidden"]), "nf": g["nf"],
                             "downsamplings": g["downsamplings"]}
        critic = _critic(estimator, dataset, data_root, seed).to(device)
        generator = build_generator(spec).to(device)
        if epoch_split(dataset, 1, data_root, seed) is not None:  # drawn fresh every epoch (spheres)
            def train_data(epoch: int):
                sample = epoch_split(dataset, epoch, data_root, seed)
                return sample.x, sample.y
            n = len(full)
        else:
            train_data = (full.x, full.y)
            n = len(full)
        if has_validation_split(dataset):
            val = load_split(dataset, "validation", data_root, seed)
        else:
            train_pos, val_pos = validation_level_split(len(full), estimator["validation_fraction"], 100, seed)
            train_split, val = take(full, train_pos), take(full, val_pos)
            train_data, n = (train_split.x, train_split.y), len(train_split)
        iterations = estimator["iterations"] or math.ceil(n / estimator["train_batch_size"])
        log(f"{estimator_name}: vrgan on {estimator['dataset']} ({iterations} batches of "
            f"{estimator['train_batch_size']} per epoch, {estimator['epochs']} epochs)")
        _, _, rows = train_vrgan(critic, generator, train_data, (val.x, val.y), epochs=estimator["epochs"],
                                 iterations=iterations, batch_size=estimator["train_batch_size"],
                                 lr=estimator["lr"], lr_d=estimator["lr_d"], betas=tuple(estimator["betas"]),
                                 weights=tuple(estimator["weights"]), range=value_range, seed=stream, log=log)
    else:
        from advpipe.estimate.indirect import train_cgan

        log(f"{estimator_name}: class-conditional GAN on {len(full)} images of {estimator['dataset']}")
        generator, rows = train_cgan(full.x, full.y, info.num_classes, range=value_range, z_dim=estimator["z_dim"],
                                     epochs=estimator["epochs"], batch_size=estimator["train_batch_size"],
                                     lr=estimator["lr"], lr_d=estimator["lr_d"], betas=tuple(estimator["betas"]),
                                     seed=stream,
                                     device=device, log=log)
        spec["generator"] = dict(generator.spec)
    write_csv(pd.DataFrame(rows), out_log)
    _save(generator, spec, out_generator, out_spec)
    return spec


def _projection_state(path: str | os.PathLike, key: str, n: int, shape: tuple[int, ...], classes: int):
    """The resumable projection file: datasets x_hat (n, C, F) and mse (n, C), attr done (images finished) and key
    (the job's fingerprint; another job's file is started over)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = None
    if path.exists():
        try:
            f = h5py.File(path, "a")
            if f.attrs.get("key") != key:
                f.close()
                f = None
        except OSError:  # a file torn by the kill: start over
            f = None
    if f is None:
        f = h5py.File(path, "w")
        f.attrs["key"], f.attrs["done"] = key, 0
        f.create_dataset("x_hat", (n, classes, int(np.prod(shape))), dtype="float32")
        f.create_dataset("mse", (n, classes), dtype="float32")
    return f


def estimate(*, estimator_name: str, estimator: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
             split: str, generator_pt: str, spec_json: str, out_h5: str, state_path: str | None = None,
             data_root: str = "data", device: str = "auto", log=print) -> None:
    """Write the estimator's directions for every image of `split` to out_h5 (index, dx or dx_all)."""
    seed_everything(derive_seed(seed, "estimate", estimator_name, split))
    device = select_device(device)
    generator, spec = load_generator(generator_pt, spec_json, device)
    data = load_split(dataset, split, data_root, seed)
    lo, hi = spec["range"]
    attrs = provenance({"estimator": estimator, "estimator_name": estimator_name, "split": split}, seed)
    attrs["sample_shape"] = np.asarray(data.x.shape[1:], dtype=np.int64)
    if spec["method"] == "vrgan":
        from advpipe.estimate.direct import estimate_dx

        dx = estimate_dx(generator, data.x.to(device), data.y, (lo, hi), estimator["batch_size"]).cpu()
        attrs["per_class"] = False
        write_dump(out_h5, {"index": data.index, "dx": dx.flatten(1).numpy()}, attrs)
        log(f"{estimator_name}: dx for {len(data)} {split} images, mean |dx| {dx.flatten(1).norm(dim=1).mean():.4f}")
        return
    from advpipe.estimate.indirect import directions, project_all_classes

    p = estimator["projection"]
    classes = spec["num_classes"]
    x_nat = lo + (hi - lo) * data.x
    key = json.dumps({"estimator": estimator, "split": split, "n": len(data), "seed": seed}, sort_keys=True)
    state = state_path or f"{out_h5}.partial"
    f = _projection_state(state, key, len(data), tuple(data.x.shape[1:]), classes)
    try:
        done = int(f.attrs["done"])
        if done:
            log(f"{estimator_name}: resuming the projection after {done} of {len(data)} images")
        chunks = project_all_classes(generator, x_nat, classes, batch_size=max(1, estimator["batch_size"] // classes),
                                     start=done, steps1=p["steps1"], lr1=p["lr1"], steps2=p["steps2"], lr2=p["lr2"],
                                     lambda_z=p["lambda_z"])
        for first, x_hat, _, mse in chunks:
            b = len(x_hat)
            f["x_hat"][first:first + b] = x_hat.flatten(2).numpy()
            f["mse"][first:first + b] = mse.numpy()
            f.attrs["done"] = first + b
            f.flush()  # a kill loses at most the chunk in flight
        x_hat = torch.from_numpy(f["x_hat"][...])
        mse = f["mse"][...]
    finally:
        f.close()
    dx = directions(x_hat, x_nat.flatten(1))
    attrs["per_class"] = True
    write_dump(out_h5, {"index": data.index, "dx_all": dx.numpy(), "x_hat": x_hat.numpy(), "mse": mse}, attrs)
    Path(state).unlink(missing_ok=True)
    log(f"{estimator_name}: {len(data)} {split} images projected onto {classes} classes, mean MSE {mse.mean():.4g}")


SIMILARITY_COLUMNS = ("estimator", "split", "n", "similarity", "similarity_sd", "norm_dx", "norm_dx_hat_0",
                      "norm_dx_hat_1")


def similarity(*, estimator_name: str, estimator: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
               estimate_h5: str, out_csv: str, split: str = "test", data_root: str = "data", log=print) -> pd.DataFrame:
    """sim(dx, dx_hat) (SPEC 5): the mean cosine of the estimate and the ground truth over the split, with the mean
    norms of the estimate per class (SPEC 5 reports 0.31 / 0.34 against the exact 0.30 on Spheres)."""
    from advpipe.metrics.alignment import similarity as cosine_similarity
    from advpipe.pipeline.alignment import read_dx

    data = load_split(dataset, split, data_root, seed)
    if "dx" not in data.extras:
        raise ValueError(f"estimator {estimator_name!r}: dataset {estimator['dataset']!r} has no ground-truth dx to "
                         "compare with")
    dx = data.extras["dx"]
    dx_hat = read_dx(estimate_h5, data.index)
    if dx_hat.dim() == dx.dim() + 1:  # per class: the other class of the binary ground truth
        dx_hat = dx_hat[torch.arange(len(dx_hat)), 1 - data.y]
    sim = cosine_similarity(dx, dx_hat).double()
    norms = dx_hat.flatten(1).norm(dim=1).double()
    y = data.y.numpy()
    row = {"estimator": estimator_name, "split": split, "n": len(sim), "similarity": float(sim.mean()),
           "similarity_sd": float(sim.std(correction=0)), "norm_dx": float(dx.flatten(1).norm(dim=1).mean()),
           **{f"norm_dx_hat_{c}": float(norms[y == c].mean()) if (y == c).any() else float("nan") for c in (0, 1)}}
    table = pd.DataFrame([row], columns=list(SIMILARITY_COLUMNS))
    write_csv(table, out_csv)
    log(f"{estimator_name}: sim(dx, dx_hat) {row['similarity']:.4f} (sd {row['similarity_sd']:.4f}) on {len(sim)} "
        f"{split} samples; |dx| {row['norm_dx']:.3f}, |dx_hat| {row['norm_dx_hat_0']:.3f} / {row['norm_dx_hat_1']:.3f}")
    return table
