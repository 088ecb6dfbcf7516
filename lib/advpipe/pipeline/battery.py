"""Stage battery (issue 14 items 7-8): SPEC 4's foolbox validation as a table, and gradient-masking flags.

Reads one model's attack dumps (the shared attack stage's outcome store: success_eps (N, K), the L2 of each
adversarial, attrs eps and space), never attacking again. The battery's images: the test images every dump of the
model holds and the model classifies correctly, at most `n_images` of them (a seeded draw). Per attack and image
the minimal L2 is that of the smallest successful adversarial the dump holds (over its eps grid; a minimal attack
has one), in [0,1] pixel units, inf where none succeeded.

results/battery/<model>.csv, one row per attack and a row `all`:
- n, successes, success_rate;
- median_l2, mean_l2 (over the successes) and median_l2_sq, mean_l2_sq: the same of the squared L2, which SPEC 4's
  score.py printed as sum(((x - x_adv) / 255) ** 2) over 0..255 images;
- median_l2_all: the median over all n images, inf for those no adversarial was found for. Row `all` takes the
  per-image minimum over the attacks: its median_l2_all is the challenge's score (median minimal L2 over attacks).

results/battery/<model>_flags.csv, one row per check (model, flag, value, threshold, fired, detail), AutoAttack's
checks (Croce & Hein 2020) with the battery as the model:
- black_box_more_successes, black_box_smaller_median_l2 (check (a), black-box beats white-box): at the largest L2
  both reach (a fixed-budget attack reaches the L2 of its largest eps ball, a minimal one every L2), a
  decision/score-based attack finds adversarials for more images, or a median minimal L2 below (1 -
  black_box_margin) times that of the gradient attacks together (per image the best of them). The margin (0.1)
  absorbs near-ties: on the digits CNN, Boundary (25000 steps) reaches 1.08x the gradient attacks' median;
- robust_accuracy_rises (check (b)): robust accuracy rising between two eps of a gradient attack's grid;
- zero_gradients (check (c)): the share of the battery's images whose loss gradient w.r.t. the input is exactly zero
  (cross-entropy of the model's class scores at its own prediction), above `zero_gradient_share`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import h5py
import numpy as np
import pandas as pd
import torch

from advpipe.io.h5 import DumpError, read_attrs, read_dump
from advpipe.io.tables import write_csv

COLUMNS = ("attack", "method", "kind", "n", "successes", "success_rate", "median_l2", "mean_l2", "median_l2_sq",
           "mean_l2_sq", "median_l2_all")
FLAG_COLUMNS = ("model", "flag", "value", "threshold", "fired", "detail")
ALL = "all"
ENGINE_NORMS = {"fgsm": "linf", "bim": "linf", "pgd": "linf", "cw": "l2", "search": "rms"}


@dataclass
class Outcomes:
    """One attack dump on the battery's images: success (n, K) and the L2 of each adversarial (n, K) in pixel
    units, the eps grid (K,), and what the attack is (its `attacks:` entry)."""

    name: str
    attack: Mapping[str, Any]
    eps: np.ndarray
    success: np.ndarray
    l2: np.ndarray
    minimal: bool

    @property
    def min_l2(self) -> np.ndarray:
        """(n,) the L2 of the smallest successful adversarial, inf where none."""
        return np.where(self.success, self.l2, np.inf).min(1)

    @property
    def method(self) -> str:
        return str(self.attack.get("attack") if self.attack.get("method") == "foolbox" else self.attack.get("method"))

    @property
    def gradient(self) -> bool:
        from advpipe.attacks.foolbox_attacks import uses_gradients
        return uses_gradients(self.attack)

    def reach(self, dim: int) -> float:
        """The largest L2 (pixel units) at which this attack could report an outcome: inf for an unbounded minimal
        attack; else the L2 radius of the largest eps ball in the attack's norm on `dim` input elements."""
        finite = self.eps[np.isfinite(self.eps)]
        if len(finite) < len(self.eps) or not len(finite):
            return math.inf
        eps = float(finite.max())
        method = self.attack.get("method")
        if self.minimal:
            return eps * math.sqrt(dim) if method == "search" else eps  # search: an RMS budget; cw, foolbox: L2
        if method == "foolbox":
            from advpipe.attacks.foolbox_attacks import foolbox_norm
            norm = foolbox_norm(self.attack["attack"])
        else:
            norm = self.attack.get("norm", ENGINE_NORMS.get(method))
        return {"linf": eps * math.sqrt(dim), "rms": eps * math.sqrt(dim), "l2": eps, "l1": eps,
                "l0": math.sqrt(eps)}.get(norm, math.inf)


def _names(path: str | os.PathLike) -> set[str]:
    read_attrs(path)  # a missing or unreadable file is a DumpError naming it
    with h5py.File(path, "r") as f:
        return set(f.keys())


def read_dump_rows(path: str | os.PathLike) -> dict[str, Any]:
    """index, clean_correct, success (N, K), l2 (N, K), eps (K,), minimal of an attack dump; DumpError naming the
    file when it lacks them or measures in another space than pixels."""
    names = _names(path)
    grid = "norm_eps_L2" in names
    l2_key = "norm_eps_L2" if grid else "norm_L2"
    if l2_key not in names:
        raise DumpError(f"{path}: missing dataset 'norm_L2' (or 'norm_eps_L2' for an eps grid); expected an attack "
                        "dump of the attack stage, which stores the L2 of each adversarial")
    arrays = read_dump(path, ["index", "clean_correct", "success_eps", l2_key])
    attrs = read_attrs(path)
    if "eps" not in attrs:
        raise DumpError(f"{path}: missing attr 'eps'; expected the attack's eps grid (or budget) as attrs")
    eps = np.atleast_1d(np.asarray(attrs["eps"], dtype=np.float64))
    success = arrays["success_eps"].astype(bool)
    l2 = arrays[l2_key].astype(np.float64)
    l2 = l2 if l2.ndim == 2 else l2[:, None].repeat(success.shape[1], 1)
    if success.ndim != 2 or success.shape[1] != len(eps) or l2.shape != success.shape:
        raise DumpError(f"{path}: datasets 'success_eps' {success.shape} and {l2_key!r} {arrays[l2_key].shape}; "
                        f"expected (N, K) with K = {len(eps)}, the length of attr 'eps'")
    space = str(attrs.get("space", "pixels"))
    if space != "pixels":
        raise DumpError(f"{path}: attack stated in space {space!r}; the battery measures L2 in [0,1] pixel units, "
                        "expected an attack in pixel space")
    return {"index": arrays["index"], "clean_correct": arrays["clean_correct"].astype(bool), "success": success,
            "l2": l2, "eps": eps, "minimal": "distance" in names}


def battery_images(dumps: Mapping[str, Mapping[str, Any]], n_images: int, seed: int) -> np.ndarray:
    """The test-set indices scored: those every dump holds and whose clean prediction is right, at most n_images
    (a draw seeded by `seed`), sorted."""
    common = None
    for rows in dumps.values():
        good = rows["index"][rows["clean_correct"]]
        common = good if common is None else np.intersect1d(common, good)
    common = np.unique(common) if common is not None else np.zeros(0, dtype=np.int64)
    if len(common) > n_images:
        common = np.sort(np.random.default_rng(seed).choice(common, n_images, replace=False))
    return common


def restrict(name: str, attack: Mapping[str, Any], rows: Mapping[str, Any], index: np.ndarray) -> Outcomes:
    """An attack's outcomes on the battery images `index` (each held once by the dump)."""
    where = {int(i): k for k, i in enumerate(rows["index"])}
    pos = np.asarray([where[int(i)] for i in index], dtype=np.int64)
    return Outcomes(name, attack, rows["eps"], rows["success"][pos], rows["l2"][pos], rows["minimal"])


def _stats(attack: str, method: str, kind: str, d: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(d)
    found = d[ok]
    n = len(d)

    def median(v):
        return float(np.median(v)) if len(v) else math.nan

    def mean(v):
        return float(np.mean(v)) if len(v) else math.nan
    return {"attack": attack, "method": method, "kind": kind, "n": n, "successes": int(ok.sum()),
            "success_rate": float(ok.mean()) if n else math.nan, "median_l2": median(found), "mean_l2": mean(found),
            "median_l2_sq": median(found ** 2), "mean_l2_sq": mean(found ** 2), "median_l2_all": median(d)}


def battery_table(outcomes: Mapping[str, Outcomes]) -> pd.DataFrame:
    """One row per attack (in the given order) and the row `all` (per image the minimum over the attacks)."""
    rows = [_stats(o.name, o.method, "gradient" if o.gradient else "black_box", o.min_l2) for o in outcomes.values()]
    if outcomes:
        best = np.min(np.stack([o.min_l2 for o in outcomes.values()]), axis=0)
        rows.append(_stats(ALL, "minimum over attacks", "all", best))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def zero_gradient_mask(net: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor, batch_size: int = 256
                       ) -> np.ndarray:
    """(n,) whether the input gradient of the cross-entropy of the model's class scores at `classes` is exactly
    zero; an output that does not depend on the input at all (no graph) counts as zero."""
    from advpipe.attacks.base import frozen_norm_stats
    from advpipe.attacks.losses import make_loss
    from advpipe.attacks.spaces import make_space

    loss_fn = make_loss("ce", net)
    out = []
    with frozen_norm_stats(net):
        space = make_space("pixels", net)
        for xb, cb in zip(x.split(batch_size), classes.split(batch_size)):
            z = xb.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(space.raw(z), cb).sum()
                grad = torch.autograd.grad(loss, z, allow_unused=True)[0] if loss.requires_grad else None
            out.append(torch.ones(len(xb), dtype=torch.bool) if grad is None
                       else (grad.flatten(1) == 0).all(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=bool)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def black_box_flags(outcomes: Mapping[str, Outcomes], dim: int, margin: float) -> list[dict[str, Any]]:
    """Check (a): each black-box attack against the gradient attacks together (per image the best of them), at the
    largest L2 both reach. Two rows: the largest excess share of images found, the smallest ratio of medians."""
    grads = [o for o in outcomes.values() if o.gradient]
    boxes = [o for o in outcomes.values() if not o.gradient]
    names = ", ".join(o.name for o in grads)
    if not grads or not boxes:
        missing = "gradient" if not grads else "black-box (decision- or score-based)"
        detail = f"not checked: the battery has no {missing} attack"
        return [{"flag": "black_box_more_successes", "value": math.nan, "threshold": 0.0, "fired": False,
                 "detail": detail},
                {"flag": "black_box_smaller_median_l2", "value": math.nan, "threshold": 1.0 - margin, "fired": False,
                 "detail": detail}]
    d_g = np.min(np.stack([o.min_l2 for o in grads]), axis=0)
    reach_g = max(o.reach(dim) for o in grads)
    n = len(d_g)
    excess, ratios = [], []
    for box in boxes:
        budget = min(reach_g, box.reach(dim))
        within_g = np.where(d_g <= budget, d_g, np.inf)
        within_b = np.where(box.min_l2 <= budget, box.min_l2, np.inf)
        s_g, s_b = int(np.isfinite(within_g).sum()), int(np.isfinite(within_b).sum())
        med_g = float(np.median(within_g)) if n else math.inf
        med_b = float(np.median(within_b)) if n else math.inf
        if math.isinf(med_b):
            ratio = math.inf if math.isfinite(med_g) else math.nan
        elif math.isinf(med_g):
            ratio = 0.0
        elif med_g == 0:
            ratio = 1.0 if med_b == 0 else math.inf
        else:
            ratio = med_b / med_g
        at = f"L2 <= {_fmt(budget)}" if math.isfinite(budget) else "any L2"
        excess.append(((s_b - s_g) / n if n else math.nan,
                       f"{box.name}: {s_b} of {n} images at {at}; gradient attacks ({names}): {s_g}"))
        ratios.append((ratio, f"{box.name}: median minimal L2 {_fmt(med_b)} at {at}; gradient attacks ({names}): "
                              f"{_fmt(med_g)}"))
    top = max(excess, key=lambda e: -math.inf if math.isnan(e[0]) else e[0])
    low = min(ratios, key=lambda r: math.inf if math.isnan(r[0]) else r[0])
    return [{"flag": "black_box_more_successes", "value": top[0], "threshold": 0.0,
             "fired": bool(top[0] > 0), "detail": top[1]},
            {"flag": "black_box_smaller_median_l2", "value": low[0], "threshold": 1.0 - margin,
             "fired": bool(low[0] < 1.0 - margin), "detail": low[1]}]


def rising_flag(outcomes: Mapping[str, Outcomes]) -> dict[str, Any]:
    """Check (b): the largest rise of robust accuracy between consecutive eps of a fixed-budget gradient attack's
    grid. Random-noise attacks are left out: they draw anew at each eps, so their curve is not monotone on any
    model (on the digits CNN, uniform noise fooled one image at eps 0.1 and none at 0.2)."""
    best = (math.nan, "not checked: the battery has no fixed-budget gradient attack on an eps grid")
    for o in outcomes.values():
        if o.minimal or not o.gradient or len(o.eps) < 2 or not len(o.success):
            continue
        order = np.argsort(o.eps, kind="stable")
        accuracy = 1.0 - o.success[:, order].mean(0)
        rise = np.diff(accuracy)
        k = int(np.argmax(rise))
        eps = o.eps[order]
        if math.isnan(best[0]) or rise[k] > best[0]:
            best = (float(rise[k]), f"{o.name}: largest change {rise[k]:+.4g}, robust accuracy {accuracy[k]:.4g} "
                                    f"at eps {_fmt(eps[k])} then {accuracy[k + 1]:.4g} at eps {_fmt(eps[k + 1])}")
    return {"flag": "robust_accuracy_rises", "value": best[0], "threshold": 0.0,
            "fired": bool(best[0] > 0), "detail": best[1]}


def flags_table(model_name: str, outcomes: Mapping[str, Outcomes], zero_gradient: np.ndarray, dim: int,
                zero_gradient_share: float = 0.1, black_box_margin: float = 0.1) -> pd.DataFrame:
    """The gradient-masking checks of one model (module docstring); zero_gradient: (n,) per battery image."""
    share = float(zero_gradient.mean()) if len(zero_gradient) else math.nan
    zero = {"flag": "zero_gradients", "value": share, "threshold": float(zero_gradient_share),
            "fired": bool(share > zero_gradient_share),
            "detail": f"{int(zero_gradient.sum())} of {len(zero_gradient)} images have an exactly zero input "
                      "gradient of the cross-entropy at the model's prediction"}
    rows = black_box_flags(outcomes, dim, black_box_margin) + [rising_flag(outcomes), zero]
    return pd.DataFrame([{"model": model_name, **r} for r in rows], columns=list(FLAG_COLUMNS))


def _attack_entry(name: str, attacks: Mapping[str, Any] | None, path: str | os.PathLike) -> Mapping[str, Any]:
    """The attack's config entry: given, else the one the dump was written with (its provenance attr)."""
    if attacks and name in attacks:
        return attacks[name]
    try:
        return json.loads(read_attrs(path).get("config", "{}")).get("attack") or {}
    except (ValueError, AttributeError):
        return {}


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
        battery: Mapping[str, Any], attack_h5: Mapping[str, str | os.PathLike], model_dir: str | os.PathLike,
        out_csv: str | os.PathLike, out_flags: str | os.PathLike, attacks: Mapping[str, Any] | None = None,
        data_root: str = "data", device: str = "auto", log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the battery table and the flags of one model from its attack dumps `attack_h5` ({attack: path}, in
    the battery's order); the model (model_dir) and its test split give the zero-gradient check."""
    from advpipe.data import load_split
    from advpipe.models import load_trained
    from advpipe.runtime import derive_seed, select_device

    dumps = {name: read_dump_rows(path) for name, path in attack_h5.items()}
    index = battery_images(dumps, int(battery.get("n_images", 40)), derive_seed(seed, "battery", model_name))
    outcomes = {name: restrict(name, _attack_entry(name, attacks, attack_h5[name]), rows, index)
                for name, rows in dumps.items()}
    table = battery_table(outcomes)
    device = select_device(device)
    split = load_split(dataset, "test", data_root, seed)
    where = {int(i): k for k, i in enumerate(split.index)}
    missing = [int(i) for i in index if int(i) not in where]
    if missing:
        raise DumpError(f"{next(iter(attack_h5.values()))}: test indices {missing[:5]} are not in the test split of "
                        f"{model.get('dataset')!r}; expected dumps of that split (stale dumps? delete them and rerun)")
    pos = np.asarray([where[int(i)] for i in index], dtype=np.int64)
    x = split.x[pos].to(device)
    net = load_trained(model_dir, device)
    # the battery's images are correctly classified: their label is the model's prediction
    zero = zero_gradient_mask(net, x, split.y[pos].to(device))
    dim = int(np.prod(split.x.shape[1:]))
    flags = flags_table(model_name, outcomes, zero, dim, float(battery.get("zero_gradient_share", 0.1)),
                        float(battery.get("black_box_margin", 0.1)))
    write_csv(table, out_csv)
    write_csv(flags, out_flags)
    score = table.loc[table["attack"] == ALL, "median_l2_all"]
    log(f"battery {model_name}: {len(index)} images, {len(outcomes)} attacks, median minimal L2 over attacks "
        f"{float(score.iloc[0]) if len(score) else math.nan:.4g}; flags fired: "
        f"{', '.join(flags.loc[flags['fired'], 'flag']) or 'none'}")
    return table, flags
