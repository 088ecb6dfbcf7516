"""Rule represent: evaluation outputs and representations of one split."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import represent

log = start_job(snakemake)
out = snakemake.output
represent.run(snakemake.config, snakemake.wildcards.model, snakemake.wildcards.split,
              model_dir=Path(snakemake.input.spec).parent, out_h5=out.h5, out_eval=out.eval,
              out_confusion=out.confusion, images_dir=out.images, log=log)
