"""Models: the Classifier interface, architectures, the registry, and trained-model loading."""
from advpipe.models.base import Classifier
from advpipe.models.registry import ARCHS, build_model
from advpipe.models.checkpoint import load_trained, save_trained
from advpipe.models.mlp import MLP
from advpipe.models.tv_resnet import TVResNet18

__all__ = ["ARCHS", "Classifier", "MLP", "TVResNet18", "build_model", "load_trained", "save_trained"]
