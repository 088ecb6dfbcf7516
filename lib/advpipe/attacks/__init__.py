"""Attacks behind one interface (DESIGN): build from config with build_attack, run on (classifier, x, y)."""
from advpipe.attacks.base import ATTACKS, Attack, AttackResult, build_attack, parse_fraction, register
from advpipe.attacks.cw import CarliniWagnerL2
from advpipe.attacks.gradient import BIM, FGSM, quantize_to_grid, sign_gradient_steps
from advpipe.attacks.norms import perturbation_norms
from advpipe.attacks.search import PerturbationSearch, SearchResult, perturbation_search, rms, step_sizes

__all__ = ["ATTACKS", "Attack", "AttackResult", "BIM", "CarliniWagnerL2", "FGSM", "PerturbationSearch",
           "SearchResult", "build_attack", "parse_fraction", "perturbation_norms", "perturbation_search",
           "quantize_to_grid", "register", "rms", "sign_gradient_steps", "step_sizes"]
