"""Criteria of the attack engine (foolbox 3 "criteria as small objects"): which class an attack moves away from or
toward, and when an adversarial counts as a success.

- misclassification: success = argmax != the reference class, which is the label (`on: label`) or the model's own
  clean prediction (`on: prediction`, vrapi);
- targeted: success = argmax == target, targets given by the caller, drawn at random (seeded, SPEC 3's exact
  sequence) or the least-likely class of the clean input (ALP);
- btr: below the random-guess threshold, p_true <= 1/C (SPEC 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

CRITERIA = ("misclassification", "targeted", "btr")
TARGETS = ("given", "random", "least_likely")
ON = ("label", "prediction")


@dataclass(frozen=True)
class Criterion:
    """kind: misclassification | targeted | btr; on: label | prediction (the class untargeted attacks leave);
    targets: given | random | least_likely; seed and skip: the random targets' generator (seeded, `skip` draws
    discarded first)."""

    kind: str = "misclassification"
    on: str = "label"
    targets: str = "random"
    seed: int = 444
    skip: int = 1

    @property
    def targeted(self) -> bool:
        return self.kind == "targeted"

    def success(self, scores: Tensor, reference: Tensor) -> Tensor:
        """(B,) bool from class scores (B, C) and the per-sample reference (the class left, or the target)."""
        if self.kind == "targeted":
            return scores.argmax(1) == reference
        if self.kind == "btr":
            return scores.softmax(1).gather(1, reference[:, None])[:, 0] <= 1 / scores.shape[1]
        return scores.argmax(1) != reference


def build_criterion(cfg: str | Mapping[str, Any] | None) -> Criterion:
    """A Criterion from "misclassification" / "btr" / "targeted" or {kind, on, targets, seed, skip}; ValueError naming
    the key otherwise."""
    if cfg is None:
        return Criterion()
    params = {"kind": cfg} if isinstance(cfg, str) else dict(cfg)
    unknown = sorted(set(params) - {"kind", "on", "targets", "seed", "skip"})
    if unknown:
        raise ValueError(f"criterion: unknown key(s) {unknown}; known: kind, on, targets, seed, skip")
    crit = Criterion(**params)
    for key, allowed in (("kind", CRITERIA), ("on", ON), ("targets", TARGETS)):
        if getattr(crit, key) not in allowed:
            raise ValueError(f"criterion: {key} must be one of {list(allowed)}, got {getattr(crit, key)!r}")
    for key in ("seed", "skip"):
        value = getattr(crit, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"criterion: {key} must be an integer >= 0, got {value!r}")
    return crit


def random_targets(y: Tensor, num_classes: int, seed: int = 444, skip: int = 1) -> Tensor:
    """One random target != y per sample, drawn exactly as SPEC 3's original: a CPU generator seeded `seed`, `skip`
    draws discarded (the one its test-loader iterator took for its workers' base seed), then for each sample in
    order randint(0, C, (1,)), redrawn while it equals y.

    Reproduces the original's sequence, not only its distribution; the loop is over integer draws (microseconds).
    """
    if num_classes < 2:
        raise ValueError(f"targeted attacks need >= 2 classes, got {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(skip):
        torch.empty((), dtype=torch.int64).random_(generator=gen)
    out = []
    for label in y.tolist():
        t = int(torch.randint(0, num_classes, (1,), generator=gen))
        while t == label:
            t = int(torch.randint(0, num_classes, (1,), generator=gen))
        out.append(t)
    return torch.tensor(out, dtype=torch.int64, device=y.device)


def least_likely(scores: Tensor) -> Tensor:
    """argmin of the clean class scores (B, C): the least-likely target of ALP / Kurakin et al."""
    return scores.argmin(1)
