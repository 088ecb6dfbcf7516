"""Rule ara: Attack ARA and BTR ARA of one model, with the distances and the A(eps) figure."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import ara

log = start_job(snakemake)
out = snakemake.output
ara.run(snakemake.config, snakemake.wildcards.model, model_dir=Path(snakemake.input.spec).parent,
        out_h5=out.h5, out_csv=out.csv, figure_stem=out.pdf.removesuffix(".pdf"), log=log)
