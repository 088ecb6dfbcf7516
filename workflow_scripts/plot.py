"""Rule plot: vrapi's figures for one (model, attack, projection)."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import plot

log = start_job(snakemake)
i = snakemake.input
plot.run(snakemake.params.section["plot"], model_dir=Path(i.spec).parent, clean_h5=i.clean, attack_h5=i.attack,
         projection_h5=i.projection, out_dir=snakemake.output.figures, log=log)
