"""Rule label_efficiency: validation accuracy of every (label, level) model, table and figure."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.labels import stages

log = start_job(snakemake)
stages.data_efficiency([Path(p).parent for p in snakemake.input], snakemake.output.csv,
                              Path(snakemake.output.pdf).with_suffix(""), dpi=snakemake.params.plot["dpi"], log=log)
