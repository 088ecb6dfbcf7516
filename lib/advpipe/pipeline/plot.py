"""Stage plot: vrapi's figures for one (model, attack, projection) at the configured trial (SPEC 1)."""
from __future__ import annotations

from typing import Any, Mapping

from advpipe.io.h5 import read_dump
from advpipe.models.checkpoint import read_spec
from advpipe.pipeline.project import clean_and_adversarial
from advpipe.plots.scatter import plot_projection_figures


def run(plot: Mapping[str, Any], model_dir: str, clean_h5: str, attack_h5: str, projection_h5: str,
        out_dir: str, log=print) -> None:
    """The figures, with the study's `plot` section (approximate, dpi)."""
    plot_cfg = plot
    classes = read_spec(model_dir)["classes"]
    clean, adv = clean_and_adversarial(clean_h5, attack_h5, keys=())
    z = read_dump(projection_h5, ["clean", "adv"])
    paths = plot_projection_figures(z["clean"], clean["label"], z["adv"], adv["label"], classes, out_dir,
                                    approximate=plot_cfg["approximate"], dpi=plot_cfg["dpi"])
    log(f"{len(paths)} figures in {out_dir}")
