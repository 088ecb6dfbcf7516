"""What the stages that run a trained model start with: the seeded job, its device, data and model."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from advpipe.data import Split, load_split
from advpipe.models import load_trained
from advpipe.models.base import Classifier
from advpipe.models.checkpoint import check_fits_data
from advpipe.runtime import seed_everything, select_device


@dataclass
class ModelAndSplit:
    model: Classifier
    split: Split
    model_cfg: dict[str, Any]
    device: torch.device


def load_model_and_split(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
                         model_dir: str | os.PathLike, split_name: str, data_root: str = "data",
                         device: str = "auto") -> ModelAndSplit:
    """Seed the job, pick the device, load the split of the model's dataset (its resolved entries), check the
    checkpoint was trained on inputs of that shape and on those classes (naming the file otherwise), load it in
    eval mode."""
    seed_everything(seed)
    device = select_device(device)
    split = load_split(dataset, split_name, data_root, seed)
    check_fits_data(model_dir, tuple(split.x.shape[1:]), split.classes, model["dataset"])
    return ModelAndSplit(load_trained(model_dir, device), split, dict(model), device)
