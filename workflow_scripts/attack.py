"""Rule attack: attack the correctly classified test images of one model."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import attack

log = start_job(snakemake)
out = snakemake.output
attack.run(snakemake.config, snakemake.wildcards.model, snakemake.wildcards.attack,
           model_dir=Path(snakemake.input.spec).parent, clean_h5=snakemake.input.clean, out_h5=out.h5,
           out_norms_stats=out.norms_stats, out_eval=out.eval, out_confusion=out.confusion, images_dir=out.images, log=log)
