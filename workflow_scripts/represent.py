"""Rule represent: outputs and representations of one split of one model."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import represent

log = start_job(snakemake)
out = snakemake.output
represent.run(**snakemake.params.section, split_name=snakemake.wildcards.split,
              model_dir=Path(snakemake.input.spec).parent, out_h5=out.h5, out_eval=out.eval,
              out_confusion=out.confusion, images_dir=out.images, data_root=snakemake.config["data_root"],
              device=snakemake.config["device"], log=log)
