"""Datasets, splits and batched augmentation."""
from .augment import crop_flip, crop_flip_params, random_crop_flip
from .datasets import (SOURCES, SPLITS, TINYIMAGENET_NORMALIZE, DatasetInfo, dataset_info, epoch_split,
                       has_validation_split, load_split, tinyimagenet_names)
from .splits import DataError, Split, stratified_split, subset, take, to_natural, to_pixels
from .synthetic import SYNTHETIC_SOURCES, declared_range

__all__ = ["SOURCES", "SPLITS", "SYNTHETIC_SOURCES", "TINYIMAGENET_NORMALIZE", "DataError", "DatasetInfo", "Split",
           "crop_flip", "crop_flip_params", "dataset_info", "declared_range", "epoch_split", "has_validation_split",
           "load_split", "random_crop_flip", "stratified_split", "subset", "take", "tinyimagenet_names",
           "to_natural", "to_pixels"]
