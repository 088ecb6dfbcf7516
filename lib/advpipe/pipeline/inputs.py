"""What the stages that run a trained model start with: the seeded job, its device, data and model."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from advpipe.config import entry
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


def load_model_and_split(config: Mapping[str, Any], model_name: str, model_dir: str | os.PathLike,
                         split_name: str, seed: int) -> ModelAndSplit:
    """Seed the job, pick the device, load the split of the model's dataset, check the checkpoint was trained
    on inputs of that shape and on those classes (naming the file otherwise), load it in eval mode."""
    seed_everything(seed)
    device = select_device(config["device"])
    model_cfg = entry(config, "models", model_name)
    split = load_split(entry(config, "datasets", model_cfg["dataset"]), split_name, config["data_root"],
                       config["seed"])
    check_fits_data(model_dir, tuple(split.x.shape[1:]), split.classes, model_cfg["dataset"])
    return ModelAndSplit(load_trained(model_dir, device), split, model_cfg, device)
