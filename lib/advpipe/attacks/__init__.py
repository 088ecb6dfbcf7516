"""The attack engine (DESIGN "Attack"): attacks configured once (eps or an eps grid, norm, steps, loss hook,
criterion, input space), built from config with build_attack, run on (classifier, x, y) in batches."""
from advpipe.attacks.base import (ATTACKS, Attack, AttackContext, AttackResult, build_attack, frozen_norm_stats,
                                  parse_eps, parse_fraction, register)
from advpipe.attacks.criteria import Criterion, build_criterion, random_targets
from advpipe.attacks.cw import CarliniWagnerL2
from advpipe.attacks.foolbox_attacks import FOOLBOX1_TO_3, GRADIENT_FREE, FoolboxAttack, uses_gradients
from advpipe.attacks.gradient import BIM, FGSM, PGD, GradientAttack, quantize_to_grid
from advpipe.attacks.losses import make_loss
from advpipe.attacks.norms import perturbation_norms
from advpipe.attacks.search import PerturbationSearch, SearchResult, perturbation_search, rms, step_sizes
from advpipe.attacks.square import Square

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "BIM", "CarliniWagnerL2", "Criterion", "FGSM",
           "FOOLBOX1_TO_3", "FoolboxAttack", "GRADIENT_FREE", "PGD", "GradientAttack", "PerturbationSearch",
           "SearchResult", "Square", "build_attack", "build_criterion", "frozen_norm_stats", "make_loss", "parse_eps",
           "parse_fraction", "perturbation_norms", "perturbation_search", "quantize_to_grid", "random_targets",
           "register", "rms", "step_sizes", "uses_gradients"]
