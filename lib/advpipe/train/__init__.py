"""Training: one loop, objectives plug in."""
from advpipe.train.alignment import CosineAlignment
from advpipe.train.attack_training import AttackTraining
from advpipe.train.loop import Objective, cross_entropy, evaluate_accuracy, task_loss, train_classifier
from advpipe.train.objectives import AdversarialTraining, RobustAdditions, build_objective

__all__ = ["AdversarialTraining", "AttackTraining", "CosineAlignment", "Objective", "RobustAdditions",
           "build_objective", "cross_entropy", "evaluate_accuracy", "task_loss", "train_classifier"]
