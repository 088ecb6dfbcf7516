"""Rule ara: Attack ARA and BTR ARA of one model, with the distances and the A(eps) figure."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import ara

log = start_job(snakemake)
out = snakemake.output
ara.run(**snakemake.params.section, model_dir=Path(snakemake.input.spec).parent, out_h5=out.h5, out_csv=out.csv,
        figure_stem=out.pdf.removesuffix(".pdf"), data_root=snakemake.config["data_root"],
        device=snakemake.config["device"], log=log)
