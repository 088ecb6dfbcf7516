"""Rule explain: explanation images of one model (SPEC 2)."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import explain

log = start_job(snakemake)
out = snakemake.output
explain.run(**snakemake.params.section, model_dir=Path(snakemake.input.spec).parent, out_dir=out.images,
            figure_stem=out.pdf.removesuffix(".pdf"), data_root=snakemake.config["data_root"],
            device=snakemake.config["device"], log=log)
