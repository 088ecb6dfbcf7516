"""Stage plot: vrapi's figures for one (model, attack, projection) at the configured trial (SPEC 1)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from advpipe.io.model_spec import read_spec
from advpipe.pipeline.project import clean_and_adversarial, read_projection
from advpipe.plots.scatter import plot_projection_figures


def run(plot: Mapping[str, Any], model_dir: str, clean_h5: str, attack_h5: str, projection_h5: str,
        out_dir: str, log=print) -> None:
    """The figures, with the study's `plot` section (approximate, dpi)."""
    plot_cfg = plot
    classes = read_spec(model_dir)["classes"]
    # Labels index the model's classes (model.json); the figures are 2-D scatters of the projection's points.
    clean, adv = clean_and_adversarial(clean_h5, attack_h5, keys=(), num_classes=len(classes),
                                       classes_from=f"{Path(model_dir) / 'model.json'}")
    z = read_projection(projection_h5, clean, attack_h5, dims={"P": (2, "the 2-D scatter figures")})
    paths = plot_projection_figures(z["clean"], clean["label"], z["adv"], adv["label"], classes, out_dir,
                                    approximate=plot_cfg["approximate"], dpi=plot_cfg["dpi"])
    log(f"{len(paths)} figures in {out_dir}")
