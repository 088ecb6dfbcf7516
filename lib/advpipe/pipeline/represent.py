"""Stage represent: evaluation outputs and representations of one split (SPEC 1 eval_net.py)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from advpipe.io.h5 import provenance, write_dump
from advpipe.io.images import save_class_samples
from advpipe.io.tables import write_csv
from advpipe.models.base import Classifier
from advpipe.pipeline.inputs import load_model_and_split


@torch.no_grad()
def forward_all(model: Classifier, x: torch.Tensor, batch_size: int, desc: str = "forward") -> dict[str, np.ndarray]:
    """logits, softmax, prediction and representation of every input, batched, in one pass each."""
    device = next(model.parameters()).device
    logits, feats = [], []
    # max(.., 1): an empty input still runs one empty batch, so the outputs keep their shapes.
    for start in tqdm(range(0, max(len(x), 1), batch_size), desc=desc, unit="batch"):
        out, rep = model.forward_features(x[start:start + batch_size].to(device))
        logits.append(out.float().cpu())
        feats.append(rep.float().cpu())
    logits_t = torch.cat(logits)
    return {"logits": logits_t.numpy(), "proba": torch.softmax(logits_t, 1).numpy(),
            "pred": logits_t.argmax(1).numpy().astype(np.int64), "features": torch.cat(feats).numpy()}


def eval_tables(label: np.ndarray, pred: np.ndarray, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """eval.csv (correct, total, accuracy) and confusion.csv (rows: true class, columns: predicted)."""
    k = len(classes)
    confusion = np.bincount(label * k + pred, minlength=k * k).reshape(k, k)
    correct = int((label == pred).sum())
    evaluation = pd.DataFrame([{"correct": correct, "total": len(label),
                                "accuracy": correct / max(len(label), 1)}])
    return evaluation, pd.DataFrame(confusion, index=pd.Index(classes, name="true"), columns=classes)


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int, represent: Mapping[str, Any], split_name: str, model_dir: str,
        out_h5: str, out_eval: str, out_confusion: str, images_dir: str, data_root: str = "data",
        device: str = "auto", log=print) -> None:
    """Outputs and representations of one split (the model's resolved entries: advpipe.pipeline.specs)."""
    job = load_model_and_split(model_name=model_name, model=model, dataset=dataset, seed=seed, model_dir=model_dir,
                               split_name=split_name, data_root=data_root, device=device)
    net, split, model_cfg = job.model, job.split, job.model_cfg
    out = forward_all(net, split.x, represent["batch_size"], desc=f"represent {split_name}")
    label = split.y.numpy().astype(np.int64)
    arrays = {"index": split.index.astype(np.int64), "label": label, **out,
              "correct": (out["pred"] == label)}
    section = {"model": model_cfg, "split": split_name, "represent": represent}
    write_dump(out_h5, arrays, provenance(section, seed))
    evaluation, confusion = eval_tables(label, out["pred"], split.classes)
    write_csv(evaluation, out_eval)
    write_csv(confusion, out_confusion, index=True)
    n = save_class_samples(split.x.numpy(), label, split.index, split.classes, images_dir,
                           represent["num_saved_images"])
    log(f"{model_name}/{split_name}: accuracy {evaluation.accuracy[0]:.4f}, {n} sample images")
