"""Training: one loop, objectives plug in."""
from advpipe.train.loop import evaluate_accuracy, train_classifier

__all__ = ["evaluate_accuracy", "train_classifier"]
