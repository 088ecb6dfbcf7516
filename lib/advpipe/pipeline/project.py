"""Stage project: one 2-D projection trial of clean and adversarial representations (SPEC 1 projection.py)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from advpipe.config import ConfigError
from advpipe.io.h5 import DumpError, provenance, read_dump, require_finite, write_dump
from advpipe.projections import project_many


def correct_clean(clean_h5: str, keys=("features",), num_classes: int | None = None, classes_from: str = "") -> dict:
    """The correctly classified rows of a representation dump (the images every attack starts from); labels are
    checked to be class indices (of `num_classes` when given, else of the dump's logits)."""
    clean = read_dump(clean_h5, ["index", "correct", "label", *keys], num_classes=num_classes,
                      classes_from=classes_from)
    keep = np.flatnonzero(clean["correct"])
    if len(keep) == 0:
        raise DumpError(f"{clean_h5}: the model classifies no test image correctly, so nothing was attacked; "
                        "expected at least one correct prediction (is the model trained?)")
    return {k: v[keep] for k, v in clean.items()}


def aligned_adversarial(attack_h5: str, clean: dict, clean_h5: str, keys=("features",), num_classes: int | None = None,
                        classes_from: str = "") -> dict:
    """The rows of an attack dump, checked to be aligned on `index` with `clean` (read from clean_h5)."""
    adv = read_dump(attack_h5, ["index", "pred", "label", *keys], num_classes=num_classes, classes_from=classes_from)
    if not np.array_equal(clean["index"], adv["index"]):
        foreign = np.setdiff1d(adv["index"], clean["index"])
        raise DumpError(f"{attack_h5}: dataset 'index' ({len(adv['index'])} rows, {len(foreign)} of them not among "
                        f"the correctly classified rows of {clean_h5}) does not match that dump; expected the "
                        f"{len(clean['index'])} correctly classified test images, in order (made from another model "
                        "or split? delete it and rerun)")
    return adv


def clean_and_adversarial(clean_h5: str, attack_h5: str, keys=("features",), num_classes: int | None = None,
                          classes_from: str = "") -> tuple[dict, dict]:
    """The correctly classified clean rows and the attack rows, checked to be aligned on `index`."""
    clean = correct_clean(clean_h5, keys, num_classes, classes_from)
    return clean, aligned_adversarial(attack_h5, clean, clean_h5, keys, num_classes, classes_from)


def read_projection(path: str, clean: dict, attack_h5: str, dims=None) -> dict:
    """A projection dump (index, clean, adv: (N, P) points), checked to hold the rows of `clean` (the correctly
    classified rows of the representation dump, those attack_h5 attacked) in order."""
    z = read_dump(path, ["index", "clean", "adv"], dims=dims)
    if not np.array_equal(z["index"], clean["index"]):
        raise DumpError(f"{path}: dataset 'index' does not match {attack_h5}; expected the rows of "
                        "that attack dump (stale projection? delete it and rerun)")
    return z


def run(*, model_name: str, model: Mapping[str, Any], attacks: Mapping[str, Mapping[str, Any]], projection: str,
        trial: int, trials: int, options: Mapping[str, Any], seed: int, clean_h5: str, attack_h5s: Sequence[str],
        out_h5s: Sequence[str], log=print) -> None:
    """One trial of `projection` (with its resolved `options`) for each of `attacks` (name -> entry, in the order
    of attack_h5s and out_h5s): a joint projection gets one attack per job, an out-of-sample one fits once on
    clean and serves every attack of the study. `trials` (config key vrapi.trials) bounds `trial`."""
    if not 0 <= trial < trials:
        raise ConfigError(f"{out_h5s[0]}: trial {trial} does not exist (config key 'vrapi.trials' is "
                          f"{trials}); expected a trial in 0..{trials - 1}")
    # SPEC 1: trial t uses seed + t. Every projection takes it explicitly (no global RNG state), so this
    # job needs no torch unless the projection is parametric.
    seed = seed + trial
    clean = correct_clean(clean_h5)  # read once, whatever the number of attacks
    require_finite(clean_h5, "features", clean["features"])
    advs = [require_finite(path, "features", aligned_adversarial(path, clean, clean_h5)["features"])
            for path in attack_h5s]
    z = project_many(projection, clean["features"], advs, seed, {projection: options})
    for (attack_name, attack_cfg), out_h5, (z_clean, z_adv) in zip(attacks.items(), out_h5s, z):
        section = {"projection": projection, "trial": trial, "options": dict(options),
                   "model": model, "attack": attack_cfg}
        write_dump(out_h5, {"index": clean["index"], "clean": z_clean, "adv": z_adv}, provenance(section, seed))
        log(f"{projection} trial {trial}, {attack_name}: {len(z_clean)} clean + {len(z_adv)} adversarial points")
