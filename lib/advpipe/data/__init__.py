"""Datasets, splits and batched augmentation."""
from .augment import crop_flip, crop_flip_params, random_crop_flip
from .datasets import (SOURCES, SPLITS, TINYIMAGENET_NORMALIZE, DataError, DatasetInfo, dataset_info, load_split,
                       tinyimagenet_names)
from .splits import Split, stratified_split, subset, take

__all__ = ["SOURCES", "SPLITS", "TINYIMAGENET_NORMALIZE", "DataError", "DatasetInfo", "Split", "crop_flip",
           "crop_flip_params", "dataset_info", "load_split", "random_crop_flip", "stratified_split", "subset", "take",
           "tinyimagenet_names"]
