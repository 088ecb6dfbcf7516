"""Accuracy-robustness area (ARA) of SPEC 2 (wwoods/adversarial-explanations-cifar main.py `calculate_ara`).

ARA = integral over eps of max(0, A(eps) - 1/C), A(eps) = fraction of images whose minimal RMS perturbation d_i
exceeds eps. torch is imported lazily: `advpipe.metrics` stays numpy-only for the scoring jobs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

ARA_MODES = ("l2min", "btr")  # Attack ARA, BTR ARA


def _check_int(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def _distances(distances) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"distances: expected a non-empty 1-D array, got shape {d.shape}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("distances: must be finite and >= 0")
    return d


def _survival(d: np.ndarray, bins: int) -> tuple[float, np.ndarray | None]:
    """(gap, A_b for b = 0..bins-1) with A_b = 1 - cumsum(hist)_b / n on `bins` bins over [0, max d]; (0, None)
    when max d = 0 (the original's histc range would be empty and its gap 0)."""
    top = float(d.max())
    if top == 0:
        return 0.0, None
    # torch.histc's bin (the original's call): floor(d * bins / max), the maximum itself in the last bin
    idx = np.minimum((d * bins / top).astype(np.int64), bins - 1)
    hist = np.bincount(idx, minlength=bins)
    return top / bins, 1.0 - np.cumsum(hist) / len(d)


def ara(distances, num_classes: int, bins: int = 1000) -> float:
    """SPEC 2 ARA step 5: gap * sum_b max(0, A_b - 1/C), gap = max d / bins (a right Riemann sum); 0.0 when every
    distance is 0 (all images misclassified). Float64 throughout (the original computed in float32)."""
    d = _distances(distances)
    _check_int("num_classes", num_classes, 1)
    gap, surv = _survival(d, _check_int("bins", bins, 1))
    if surv is None:
        return 0.0
    return float(gap * np.maximum(surv - 1.0 / num_classes, 0.0).sum())


def accuracy_curve(distances, bins: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(eps_k, A_k), k = 0..bins: eps_k = k * gap; A_0 = fraction with d > 0 (the clean accuracy when d = 0 marks a
    misclassified image), A_k = A_{b=k-1} of `ara` for k >= 1, so ara = gap * sum_{k>=1} max(0, A_k - 1/C): a
    step plot with where="pre" shades exactly the ARA. All distances 0: the single point (0, 0)."""
    d = _distances(distances)
    gap, surv = _survival(d, _check_int("bins", bins, 1))
    if surv is None:
        return np.zeros(1), np.zeros(1)
    return np.arange(bins + 1) * gap, np.concatenate([[np.mean(d > 0)], surv])


def ara_distances(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: str, eps: float = 20.0,
                  steps: int = 450, momentum: float = 0.9, batch_size: int = 128, progress: bool = True,
                  ensure_proper_minimization: bool = True) -> np.ndarray:
    """d_i = RMS of the minimal perturbation found by the search (SPEC 2 ARA steps 2-3), float64 (N,).

    mode "l2min" (Attack ARA) or "btr" (BTR ARA); eps_overshoot 1 and ensure_proper_minimization on, as
    calculate_ara (it leaves AdversarialOptions' default True): ValueError naming the images (indices into x) of
    the first batch where one is not fooled within steps // 2 (off with ensure_proper_minimization=False: on
    small, very confident models an image whose CE underflows to 0 moves too slowly). Images already misclassified (btr: p_y <= 1/C) get
    d = 0: the search meets the criterion at delta = 0. Defaults are the original's CLI defaults, batches its 128.
    The model must be in eval mode (calculate_ara calls m.eval()); batches run on x's device.
    """
    import torch
    from tqdm.auto import tqdm

    from advpipe.attacks.base import check_inputs
    from advpipe.attacks.search import check_minimization, perturbation_search, rms

    if mode not in ARA_MODES:
        raise ValueError(f"mode: expected one of {list(ARA_MODES)}, got {mode!r}")
    _check_int("batch_size", batch_size, 1)
    check_inputs(x, y)
    if any(m.training for m in model.modules()):
        raise ValueError("model is in training mode; call model.eval() before ARA")
    out = []
    with tqdm(total=len(x), desc=f"ARA {mode}", unit="img", disable=not progress) as bar:
        for lo in range(0, len(x), batch_size):
            xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
            # checked here, not inside, so that the error names indices into x
            result = perturbation_search(model, xb, yb, eps=eps, steps=steps, eps_overshoot=1.0, momentum=momentum,
                                         mode=mode, ensure_proper_minimization=False)
            if ensure_proper_minimization:
                check_minimization(result.first_met, steps, offset=lo)
            # RMS of delta itself; the original's (x + delta) - x differs by float rounding only
            out.append(rms(result.delta).double().cpu())
            bar.update(len(xb))
    return torch.cat(out).numpy() if out else np.zeros(0)


def ara_subset(n_test: int, n: int, seed: int = 1776) -> torch.Tensor:
    """The first n of torch.randperm(n_test) under seed 1776 (calculate_ara's subset), int64; drawn from a private
    generator, so torch's global RNG is untouched (the original saved and restored it)."""
    import torch

    _check_int("n_test", n_test, 0)
    if _check_int("n", n, 0) > n_test:
        raise ValueError(f"n: {n} images asked for, the test set has {n_test}")
    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))
    return torch.randperm(n_test, generator=gen)[:n]
