"""Rule explain: explanation images of the first test images toward every class, and their grid figure."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import explain

log = start_job(snakemake)
out = snakemake.output
explain.run(snakemake.config, snakemake.wildcards.model, model_dir=Path(snakemake.input.spec).parent,
            out_dir=out.images, figure_stem=out.pdf.removesuffix(".pdf"), log=log)
