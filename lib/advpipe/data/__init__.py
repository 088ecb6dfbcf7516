"""Datasets, splits and batched augmentation."""
from .augment import crop_flip, crop_flip_params, random_crop_flip
from .datasets import SOURCES, SPLITS, DataError, DatasetInfo, dataset_info, load_split
from .splits import Split, stratified_split, subset, take

__all__ = ["SOURCES", "SPLITS", "DataError", "DatasetInfo", "Split", "crop_flip", "crop_flip_params", "dataset_info",
           "load_split", "random_crop_flip", "stratified_split", "subset", "take"]
