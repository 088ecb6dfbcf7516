"""Budgets the input box can hold: an attack whose eps exceeds what the inputs allow measures nothing.

An Linf eps at or above the width of the input box reaches every image, so "robust accuracy" at that eps is
the accuracy of the worst image, not a robustness; an L2 or RMS eps beyond the box's diameter is the same;
a BIM/PGD step larger than every budget is projected back at each step. These are refused by `advpipe
check-config` where the config says enough (the attack's space, the model's normalisation, the dataset's
shape), and by the attack stage on the real data otherwise (npz datasets, `normalize: dataset`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from advpipe.attacks.base import parse_eps, parse_fraction

# Minimal attacks (cw, the search in l2min/btr mode) have no budget: their eps is a step scale, not a ball.
_BUDGETED = {"fgsm", "bim", "pgd"}


def space_widths(space: Any, normalize: Any, channels: int | None) -> list[float] | None:
    """The width of the input box per channel in the attack's space, or None when only the data can tell
    (normalized space of a model normalised by its dataset's statistics)."""
    channels = channels or 1
    if isinstance(space, (list, tuple)):
        return [float(space[1]) - float(space[0])] * channels
    if space == "normalized" and normalize != "none":
        if not isinstance(normalize, Mapping):
            return None
        std = [float(s) for s in normalize["std"]]
        return [1.0 / s for s in (std * channels if len(std) == 1 else std)]
    return [1.0] * channels  # pixels in [0, 1], or a model without normalisation


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def budget_problems(attack: Mapping[str, Any], widths: Sequence[float] | None,
                    pixels_per_channel: int | None = None) -> list[tuple[str, str]]:
    """(key, problem) pairs for an attack entry whose budget the input box cannot hold.

    widths: the box's width per channel in the attack's space (space_widths, one per channel); pixels_per_channel:
    H * W, needed for L2 only (None: not known yet, the L2 check waits for the data).
    """
    method = attack["method"]
    if method == "search":
        if attack.get("mode", "standard") != "standard":
            return []
    elif method not in _BUDGETED:
        return []
    eps = max(parse_eps(attack["eps"])[0])
    problems = []
    if widths:
        norm = attack.get("norm", "linf")
        space = attack.get("space", "pixels")
        where = f"the input box in {space if isinstance(space, str) else list(space)} space"
        if norm == "linf" and eps >= max(widths):
            problems.append(("eps", f"got {_fmt(eps)} (Linf); expected less than {_fmt(max(widths))}, the width of "
                                    f"{where}: a budget that large reaches every image"))
        elif norm == "rms":
            diameter = math.sqrt(sum(w * w for w in widths) / len(widths))
            if eps > diameter:
                problems.append(("eps", f"got {_fmt(eps)} (RMS); expected at most {_fmt(diameter)}, the RMS "
                                        f"diameter of {where}: no two images are further apart"))
        elif norm == "l2" and pixels_per_channel:
            diameter = math.sqrt(pixels_per_channel * sum(w * w for w in widths))
            if eps > diameter:
                problems.append(("eps", f"got {_fmt(eps)} (L2); expected at most {_fmt(diameter)}, the L2 diameter "
                                        f"of {where}: no two images are further apart"))
    step = attack.get("step_size")
    if method in ("bim", "pgd") and step is not None and eps > 0 and parse_fraction(step) > eps:
        problems.append(("step_size", f"got {step} = {_fmt(parse_fraction(step))}, larger than every budget (eps at most "
                                      f"{_fmt(eps)}); expected a step <= eps (or null: eps / steps), since a larger "
                                      "step is projected back onto the ball at every step"))
    return problems
