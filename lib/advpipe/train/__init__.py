"""Training: one loop, objectives plug in."""
from advpipe.train.loop import Objective, cross_entropy, evaluate_accuracy, train_classifier
from advpipe.train.objectives import AdversarialTraining, RobustAdditions, build_objective

__all__ = ["AdversarialTraining", "Objective", "RobustAdditions", "build_objective", "cross_entropy",
           "evaluate_accuracy", "train_classifier"]
